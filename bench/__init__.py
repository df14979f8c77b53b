"""Benchmarks of alexnet_triton against PyTorch eager and torch.compile.

Run them with ``pytest bench/ --benchmark-only --benchmark-json=RESULTS.json`` and print the
tables with ``python -m bench.report RESULTS.json``. Kept out of the package and out of the
test suite (``testpaths = tests``); the files are ``bench_*.py``, collected by bench/conftest.py.
"""

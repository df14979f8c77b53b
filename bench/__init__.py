"""Benchmarks of alexnet_triton against PyTorch eager and torch.compile, and a static report.

Run them with ``pytest bench/ --benchmark-only --benchmark-json=RESULTS.json`` and print the
tables with ``python -m bench.report RESULTS.json``. Kept out of the package and out of the
test suite (``testpaths = tests``); the files are ``bench_*.py``, collected by bench/conftest.py.

Without a GPU, ``python -m bench.sass`` compiles every kernel for sm_90a and predicts its time
from the SASS (bench/results/static-sm90.md): a prediction from compiled code, not a measurement.
"""

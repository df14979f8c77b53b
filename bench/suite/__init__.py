"""The pytest-benchmark suite: bench_*.py (collected by conftest.py), the timing harness
(timing.py) and ``python -m bench.suite.report`` (the results as Markdown tables)."""

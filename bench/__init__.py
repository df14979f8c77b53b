"""Three products that measure alexnet_triton, one folder each, and the table of GPUs they
share (``bench/devices.py``: NVIDIA's figures per device, chosen by the device's name).

- ``bench/suite/``: pytest-benchmark timings of alexnet_triton against PyTorch eager and
  torch.compile. Run them with ``pytest bench/ --benchmark-only --benchmark-json=RESULTS.json``
  and print the tables with ``python -m bench.suite.report RESULTS.json``. Kept out of the
  package and out of the test suite (``testpaths = tests``); the files are ``bench_*.py``,
  collected by bench/suite/conftest.py.
- ``bench/static/``: without a GPU, ``python -m bench.static`` compiles every kernel for
  sm_90a and predicts its time from the SASS (bench/results/static-sm90.md): a prediction
  from compiled code, not a measurement.
- ``bench/gpu_check/``: ``python3 -m bench.gpu_check OUTDIR``, the one call that proves and
  measures alexnet_triton in a lent GPU window (it precompiles with the static report's
  driver and runs the suite in pieces).
"""

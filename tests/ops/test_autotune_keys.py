"""An autotuner's choice must never be reused where it no longer fits.

The GEMM autotuners cache their choice per key. A float32 GEMM compiles to different code
with torch's tf32 flags on (wgmma on tf32, deeply pipelined shared-memory tiles) and off
(ieee FMA): a tile chosen for one may not fit the other's shared memory. With the
precision left out of the key, fc8 tuned in ieee and then run in tf32 (the GPU check's
float32 then tf32 checks; a user toggling allow_tf32) launched the ieee choice and failed
with OutOfResources (262144 bytes of shared memory needed). Compiled here for sm_90 by the
stand-in driver of bench/static/sm90_driver.py, nothing runs.
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench.static.sm90_driver import missing_toolchain

pytestmark = pytest.mark.skipif(missing_toolchain() is not None,
                                reason=str(missing_toolchain()))

SCRIPT = textwrap.dedent("""
    import json, sys, torch, triton
    from bench.static import alexnet_launches, sm90_driver
    recorder = sm90_driver.Recorder()
    sm90_driver.install(recorder)
    # Two candidates each, the largest tile first (the one that does not fit in tf32) and the
    # last of float32's, set on the autotuners themselves: their choices are cached per key,
    # as on a GPU. (The last configs of a list may be float64's alone, which the kernels'
    # pruners keep from float32.)
    FLOAT64_ONLY = {(32, 32, 64), (64, 64, 32)}
    for module in sm90_driver.kernel_modules():
        for tuner in vars(module).values():
            if isinstance(tuner, triton.runtime.Autotuner):
                ours = [c for c in tuner.configs if tuple(c.kwargs.get(k) for k in
                        ("BLOCK_M", "BLOCK_N", "BLOCK_K")) not in FLOAT64_ONLY]
                tuner.configs = [ours[0], ours[-1]] if ours else tuner.configs
    calls = alexnet_launches.launches(torch.float32, batch=2)
    errors = {}
    for launch in sys.argv[1:]:
        for tf32 in (False, True, False):
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
            try:
                calls[launch]()
            except Exception as error:
                errors[f"{launch} tf32={tf32}"] = f"{type(error).__name__}: {error}"
    print(json.dumps(errors))
""")


def test_gemm_autotuners_key_on_the_precision():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, "fc8.forward", "conv3.forward"],
        cwd=Path(__file__).parents[2], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    errors = json.loads(result.stdout.strip().splitlines()[-1])
    assert errors == {}

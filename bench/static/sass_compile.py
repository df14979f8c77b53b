"""One compiling process of python -m bench.static: some launches of one variant, compiled and read.

``python -m bench.static.sass_compile VARIANT PRUNE OUT.json LAUNCH...`` calls the launchers at
batch 128 under the stand-in H100 driver (bench/static/sm90_driver.py), then reads each compiled
cubin (bench/static/cubin_tools.py, bench/static/sass_parse.py). It writes {"launches": {launch:
{"attempts", "error", "seconds"}}, "cubins": {hash: {"resources", "sass"}}}. One variant
per process: the tf32 switches are process-wide and Triton picks interpreter or compiler
when it is first imported.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback

BATCH = 128
# name: (torch dtype, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
# fp32: PyTorch's defaults, convolutions in tf32 and matmuls (the FC layers) in ieee fp32;
# tf32: float32 tensors with tf32 matmuls too (torch.set_float32_matmul_precision("high")).
VARIANTS = {"bf16": ("bfloat16", False, True), "fp32": ("float32", False, True),
            "tf32": ("float32", True, True)}


def compile_launches(variant: str, prune: str, names: list[str], sass_dir: str | None) -> dict:
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise RuntimeError("bench.static compiles for the GPU: unset TRITON_INTERPRET")
    import torch

    from bench.static import cubin_tools, sass_parse
    from bench.static.alexnet_launches import launches
    from bench.static.sm90_driver import Recorder, install

    dtype, matmul_tf32, cudnn_tf32 = VARIANTS[variant]
    torch.backends.cuda.matmul.allow_tf32 = matmul_tf32
    torch.backends.cudnn.allow_tf32 = cudnn_tf32
    recorder = Recorder(prune)
    install(recorder)
    layers = {name.split(".")[0] for name in names}
    calls = launches(getattr(torch, dtype), layers, batch=BATCH)
    report = {}
    for name in names:
        recorder.attempts = []
        error = None
        start = time.perf_counter()
        try:
            calls[name]()
        except Exception as exc:  # the launch failed: its last (or only) config did
            recorder.fail(exc)
            error = "".join(traceback.format_exception_only(exc)).strip()
        report[name] = {"attempts": recorder.attempts, "error": error,
                        "seconds": round(time.perf_counter() - start, 1)}
    cubins = {}
    for entry in report.values():
        for attempt in entry["attempts"]:
            path = attempt.get("cubin")
            if attempt["outcome"] != "ok" or path is None or attempt["hash"] in cubins:
                continue
            sass = cubin_tools.disassemble(path)
            if sass_dir:
                name = f"{attempt['kernel']}-{attempt['hash'][:12]}.sass"
                with open(os.path.join(sass_dir, name), "w") as f:
                    f.write(sass)
            cubins[attempt["hash"]] = {"resources": cubin_tools.resource_usage(path),
                                       "sass": sass_parse.analyse(sass)}
    return {"launches": report, "cubins": cubins}


if __name__ == "__main__":
    variant, prune, out, *names = sys.argv[1:]
    sass_dir = os.environ.get("BENCH_SASS_DIR") or None
    with open(out, "w") as f:
        json.dump(compile_launches(variant, prune, names, sass_dir), f, indent=1)

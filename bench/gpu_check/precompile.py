"""Phase 2: fill Triton's on-disk cache with every kernel the later phases launch, in parallel.

Compiling is CPU work: about 1-2 CPU-seconds per kernel (triton 3.6), and the check needs
several hundred (three precisions x ~40 launches x their autotune candidates, the
two-column model's shapes, the sanitizer's small batch). One process would spend most of
the window compiling; here one worker per CPU core compiles a share of them through the
compile-only stand-in driver of bench/static/sm90_driver.py (nothing runs, tensors are
torch.empty), which specializes exactly as a GPU launch does. The GPU phases then load
the compiled kernels from the cache (phases record their cache hits; see compiles.py).

Tasks are the launchers called directly (bench/static/alexnet_launches.py) at batch 128 in three
precisions and at the sanitizer's batch 2, and model steps for what no direct launch
covers: the two-column AlexNet's per-column shapes, and the trainer's built-in data (63-px
crops, its validation batches). A model task runs the real model on CPU tensors with the
ops routed to the Triton launchers.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.gpu_check import autotune, bootstrap
from bench.gpu_check.cli import phase_main
from bench.gpu_check.record import ERROR, FAIL, PASS, PhaseRecord

BATCH = 128
SANITIZER_BATCH = 2
# conv1's input gradient is never needed (its input is the images): not launched anywhere.
UNUSED = {"conv1.backward_input"}
LAUNCH_VARIANTS = {  # name: (dtype, conv tf32, matmul tf32), as the correctness phase runs them
    "bfloat16": ("bfloat16", False, False),
    "float32-ieee": ("float32", False, False),
    "float32-tf32": ("float32", True, True),
}
MODEL_PRECISIONS = {  # name: (autocast bf16, conv tf32, matmul tf32)
    "bf16": (True, False, False),
    "fp32-ieee": (False, False, False),
    "fp32-default": (False, True, False),  # torch's defaults: what the benchmarks run
}
# A model step compiles every candidate of ~40 kernels: split over this many workers,
# each taking every SLICES-th candidate of each autotuner (and the others as fallbacks:
# _slice).
SLICES = 4
DRY_RUN_LAUNCHES = ["pool1.backward", "dropout"]
# and one launch through slice 0 of its autotuner's candidates, as a model task's: ieee
# float32 conv4's weight gradient, whose one candidate there (128 x 128 x 128, 3 stages)
# does not fit the H100's 232,448 bytes of shared memory in 32 bits: the dry run proves
# that a slice falls back to a candidate that fits (_slice)
DRY_RUN_SLICED = {"kind": "launch", "variant": "float32-ieee", "batch": SANITIZER_BATCH,
                  "name": "conv4.backward_weight", "slice": 0}
# and a model task, so the dry run proves the model's ops reach the launchers
DRY_RUN_MODEL = {"placement": "one-device", "precision": "bf16", "batch": 2, "image": 67,
                 "mode": "eval"}


def launch_names() -> list:
    from bench.static import alexnet_launches

    return [name for name in alexnet_launches.launch_names() if name not in UNUSED]


def trainer_shapes() -> dict:
    """What `python -m alexnet_triton.train` runs on the built-in data (the training phase):
    crops of the 72-px images, full training batches, validation in batches with a short
    last one."""
    from alexnet_triton.data import builtin
    from alexnet_triton.training.setup import auto_crop_size

    validation = len(builtin.CLASSES) * builtin.VAL_PER_CLASS
    return {"image_size": builtin.IMAGE_SIZE, "crop": auto_crop_size(builtin.IMAGE_SIZE),
            "eval_batches": sorted({BATCH, validation % BATCH} - {0})}


def _models(placement: str, precision: str, batch: int, image: int, mode: str) -> list:
    return [{"kind": "model", "placement": placement, "precision": precision, "batch": batch,
             "image": image, "mode": mode, "slice": index} for index in range(SLICES)]


def tasks(dry_run: bool) -> list:
    """Everything the GPU phases launch, as worker tasks (see the module docstring)."""
    names = launch_names()
    if dry_run:
        return [*({"kind": "launch", "variant": "bfloat16", "batch": BATCH, "name": name}
                  for name in DRY_RUN_LAUNCHES),
                DRY_RUN_SLICED, {"kind": "model", **DRY_RUN_MODEL, "slice": 0}]
    found = [{"kind": "launch", "variant": variant, "batch": BATCH, "name": name}
             for variant in LAUNCH_VARIANTS for name in names]
    found += [{"kind": "launch", "variant": "bfloat16", "batch": SANITIZER_BATCH, "name": name}
              for name in names]
    for precision in MODEL_PRECISIONS:  # the model and speed phases' two-column model
        found += _models("two-columns", precision, BATCH, 224, "train")
    trainer = trainer_shapes()  # the training phase: bf16 autocast, one device
    found += _models("one-device", "bf16", BATCH, trainer["crop"], "train")
    for batch in trainer["eval_batches"]:
        found += _models("one-device", "bf16", batch, trainer["crop"], "eval")
    found.append({"kind": "augment", "batch": BATCH, "side": trainer["image_size"],
                  "crop": trainer["crop"]})
    return found


# CPU-seconds per task, measured on a 2-core EPYC under triton 3.6 with a cold cache (README:
# GPU check): a model step's compiles split over its slices, launches by precision. Only
# their ratios matter: they deal the tasks out so that no worker is left with the long ones.
MODEL_SECONDS = {"bf16": 80, "fp32-ieee": 310, "fp32-default": 200}
LAUNCH_SECONDS = {"bfloat16": 4, "float32-ieee": 4, "float32-tf32": 5}


def _cost(task) -> float:
    if task["kind"] == "model":
        train = MODEL_SECONDS[task["precision"]] / SLICES
        return train if task["mode"] == "train" else train / 3
    if task["kind"] == "augment":
        return 1
    gemm = task["name"].startswith(("conv", "fc"))
    return LAUNCH_SECONDS[task["variant"]] if gemm else 0.5


def deal(all_tasks: list, workers: int) -> list:
    shares = [[] for _ in range(workers)]
    loads = [0] * workers
    for task in sorted(all_tasks, key=_cost, reverse=True):
        lightest = loads.index(min(loads))
        shares[lightest].append(task)
        loads[lightest] += _cost(task)
    return [share for share in shares if share]


# --------------------------------------------------------------------------------------
# the worker: one process, one share of the tasks, the compile-only driver installed
# --------------------------------------------------------------------------------------


def _set_flags(conv_tf32: bool, matmul_tf32: bool) -> None:
    import torch

    torch.backends.cudnn.allow_tf32 = conv_tf32
    torch.backends.cuda.matmul.allow_tf32 = matmul_tf32


def _model_step(task: dict) -> None:
    """One training step (or eval forward) of AlexNet on CPU tensors with every op sent to
    the Triton launchers (which the stand-in driver compiles and does not run)."""
    import torch
    from torch import nn

    from alexnet_triton import dispatch
    from alexnet_triton.models import AlexNet

    bf16, conv_tf32, matmul_tf32 = MODEL_PRECISIONS[task["precision"]]
    _set_flags(conv_tf32, matmul_tf32)
    dispatch.uses_triton = lambda x: True  # CPU tensors to the launchers, not the references
    devices = None if task["placement"] == "one-device" else ("cpu", "cpu")
    model = AlexNet(num_classes=1000, devices=devices)
    images = torch.empty(task["batch"], 3, task["image"], task["image"])
    labels = torch.zeros(task["batch"], dtype=torch.int64)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        if task["mode"] == "eval":
            with torch.no_grad():
                model.eval()(images)
            return
        loss = nn.functional.cross_entropy(model.train()(images).float(), labels)
    loss.backward()


def _augment(task: dict) -> None:
    import torch

    from alexnet_triton.kernels import augment

    n, side = task["batch"], task["side"]
    offsets = torch.zeros(n, dtype=torch.int32)
    augment.augment(torch.empty(n, 3, side, side, dtype=torch.uint8),
                    torch.empty(3, side, side),
                    augment.pack_params(offsets, offsets, offsets, torch.zeros(n, 3)), task["crop"])


def _shared_estimate(config) -> int:
    """A config's operand tiles times its pipeline stages: what orders candidates by the
    shared memory they need (the same dtype for all of one kernel's)."""
    tiles = config.kwargs.get("BLOCK_M", 1) * config.kwargs.get("BLOCK_K", 1) + (
        config.kwargs.get("BLOCK_K", 1) * config.kwargs.get("BLOCK_N", 1))
    return tiles * config.num_stages


def config_values(config) -> dict:
    """A config's constexprs and launch options, as a kernel launch receives them."""
    return {**config.kwargs, "num_warps": config.num_warps, "num_stages": config.num_stages}


def slice_configs(candidates: list, index: int) -> tuple[list, list]:
    """(configs, fallbacks): slice ``index`` of an autotuner's candidates, its share (every
    SLICES-th, from ``index``), then every other candidate, least shared memory first: the
    fallbacks.

    A fallback is compiled only where nothing before it in the same tuning compiled and
    fit (the compile-only driver's Recorder.fallbacks: it is skipped, timed inf, otherwise),
    so a slice compiles its share alone unless its share holds only candidates too large
    for the kernel at hand (ieee float32 conv2-5 weight gradients at slice 0: 128 x 128 x
    128 in 3 stages, over the 232,448 bytes of shared memory an H100 has), or that the
    kernel's pruner drops for the launch at hand, or none (an autotuner of 3 candidates
    at slice 3): then it goes on to the smallest
    that fits, as the GPU's autotuner prunes what is out of resources, and the rest of the
    step still compiles. Before, such a slice kept its one candidate and the launch raised
    OutOfResources, leaving the rest of the step uncompiled. Never a single config: the
    autotuner would launch it without a trial, and a launch out of resources raises."""
    if len(candidates) < 2:
        return list(candidates), []
    share = candidates[index::SLICES]
    fallbacks = sorted((c for c in candidates if all(c is not s for s in share)),
                       key=_shared_estimate)
    return share + fallbacks, fallbacks


def _slice(tuners: dict, index: int, recorder) -> None:
    """Give each autotuner slice ``index`` of its candidates (slice_configs). The recorder
    knows a fallback by its kernel and values: linear_kernel's two autotuners share both
    lists, which is safe while no share of theirs holds more than one config (SLICES = 4
    of 3-4 candidates each). A kernel of one autotuner may have more (the conv forward's 5:
    slice 0 compiles two, neither ever a fallback of its own tuning)."""
    for tuner in tuners.values():
        tuner.configs, fallbacks = slice_configs(tuner.restricted, index)
        recorder.fallbacks.setdefault(tuner.base_fn.__name__, []).extend(
            map(config_values, fallbacks))


def worker(share: list, out_path: Path) -> None:
    import torch

    from bench.static import alexnet_launches, sm90_driver

    recorder = sm90_driver.Recorder()  # every candidate is "timed", that is compiled
    sm90_driver.install(recorder)
    tuners = autotune.autotuners()
    autotune.restrict(tuners)
    for tuner in tuners.values():
        tuner.restricted = list(tuner.configs)
    report = []
    for task in share:
        recorder.attempts = []
        recorder.fallbacks = {}
        start = time.perf_counter()
        error = None
        for tuner in tuners.values():
            tuner.configs = list(tuner.restricted)
            tuner.cache.clear()  # every task "tunes" (compiles) its candidates afresh
        try:
            if "slice" in task:
                _slice(tuners, task["slice"], recorder)
            if task["kind"] == "model":
                _model_step(task)
            elif task["kind"] == "augment":
                _augment(task)
            else:
                dtype, conv_tf32, matmul_tf32 = LAUNCH_VARIANTS[task["variant"]]
                _set_flags(conv_tf32, matmul_tf32)
                alexnet_launches.launches(getattr(torch, dtype), batch=task["batch"])[
                    task["name"]]()
        except Exception as exc:  # noqa: BLE001 - reported per task
            recorder.fail(exc)
            error = f"{type(exc).__name__}: {exc}"[:2000]
        outcomes = [a["outcome"] for a in recorder.attempts]
        if task["kind"] == "model" and not outcomes and error is None:
            error = "the model step launched no Triton kernel (the ops took the references)"
        report.append({"task": task, "seconds": round(time.perf_counter() - start, 2),
                       "compiled": outcomes.count("ok"),
                       "out_of_resources": outcomes.count("out of resources"),
                       "errors": [a.get("error") for a in recorder.attempts
                                  if a["outcome"] == "error"][:3],
                       "error": error})
        out_path.write_text(json.dumps(report))


# --------------------------------------------------------------------------------------
# the phase: start the workers, gather their reports
# --------------------------------------------------------------------------------------


def run(record: PhaseRecord, args) -> None:
    all_tasks = tasks(args.dry_run)
    workers = max(1, min(os.cpu_count() or 1, len(all_tasks)))
    shares = deal(all_tasks, workers)
    folder = Path(args.result).with_suffix(".workers")
    folder.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    record.info(tasks=len(all_tasks), workers=len(shares),
                triton_cache=os.environ.get("TRITON_CACHE_DIR", "~/.triton/cache"))
    start = time.perf_counter()
    processes = []
    for index, share in enumerate(shares):
        share_path, report_path = folder / f"share{index}.json", folder / f"report{index}.json"
        share_path.write_text(json.dumps(share))
        processes.append((subprocess.Popen(
            [sys.executable, "-m", "bench.gpu_check.precompile", "--worker", str(share_path),
             str(report_path)], cwd=bootstrap.ROOT, env=env), report_path))
    reports = []
    for process, report_path in processes:
        process.wait()
        if report_path.exists():
            reports += json.loads(report_path.read_text())
        if process.returncode != 0:
            record.check(f"worker {report_path.stem}", ERROR, returncode=process.returncode)
    wall = time.perf_counter() - start
    cpu_seconds = sum(r["seconds"] for r in reports)
    compiled = sum(r["compiled"] for r in reports)
    record.info(wall_seconds=round(wall, 1), task_seconds=round(cpu_seconds, 1),
                compiled=compiled, seconds_per_compile=round(cpu_seconds / max(compiled, 1), 2),
                # candidates compiled that the GPU's autotuner would prune (not failures)
                out_of_resources=sum(r["out_of_resources"] for r in reports),
                slowest=sorted(reports, key=lambda r: -r["seconds"])[:5])
    failed = [r for r in reports if r["error"] or r["errors"]]
    missing = len(all_tasks) - len(reports)
    record.check("precompile", FAIL if failed or missing else PASS, compiled=compiled,
                 tasks_done=len(reports), tasks_missing=missing,
                 failures=[{"task": r["task"], "error": r["error"], "errors": r["errors"]}
                           for r in failed][:10])


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        bootstrap.ensure_importable()
        worker(json.loads(Path(sys.argv[2]).read_text()), Path(sys.argv[3]))
    else:
        phase_main("precompile", run)

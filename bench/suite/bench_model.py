"""The whole network: a training step and inference, ours against the torch.nn reference.

On the GPU, batch 128 of 224x224 images (ALEXNET_BENCH_BATCH overrides the batch), bf16
autocast and fp32, four providers with the same weights and the same images:
``triton`` (AlexNet(devices=None): both columns on one GPU, grouped launches),
``triton-2col`` (AlexNet(devices=("cuda:0", "cuda:0")): the paper's two columns launched
separately, on one GPU), ``eager`` (ReferenceAlexNet, in channels_last when that is faster;
the choice is measured and recorded) and ``compile`` (torch.compile of that reference).

A training step is forward, cross-entropy loss, backward and the paper's SGD step (momentum
0.9, weight decay 5e-4); inference is the forward in eval mode under torch.no_grad. Images per
second come from the timing, peak memory (torch.cuda.max_memory_allocated over one step, the
weights, optimizer state and input batches included) goes in extra_info.

On the CPU, a small fp32 training step of the reference (batch 8 of 64x64 images) runs the
same harness in a few seconds.
"""
from __future__ import annotations

import os
import time
from typing import Callable, Dict, Tuple

import pytest
import torch
import torch.nn.functional as TF
from torch import nn

from alexnet_triton.model import AlexNet
from alexnet_triton.reference import ReferenceAlexNet
from alexnet_triton.testing import max_relative_error
from bench.suite.timing import (cuda_timing, cycling, fresh_dynamo, measure, peak_memory,
                          synchronize)

BATCH = int(os.environ.get("ALEXNET_BENCH_BATCH", "128"))
IMAGE_SIZE = 224
NUM_CLASSES = 1000
COMPILE_MODE = os.environ.get("ALEXNET_BENCH_COMPILE_MODE") or None
# Forward plus backward of one 224x224 image (three times the forward's 1.45 GFLOP).
TRAIN_FLOPS_PER_IMAGE = 4.35e9
INFER_FLOPS_PER_IMAGE = TRAIN_FLOPS_PER_IMAGE / 3
TASKS = ["train", "infer"]
PRECISIONS = ["bf16", "fp32"]
PROVIDERS = ["triton", "triton-2col", "eager", "compile"]
SANITY = {"bf16": 5e-2, "fp32": 1e-2}
CPU_BATCH, CPU_IMAGE_SIZE = 8, 64

_memory_format_choice: Dict[Tuple[str, str], Tuple[torch.memory_format, dict]] = {}


def paper_weights() -> dict:
    """One set of weights for every provider: AlexNet's initialization from seed 0."""
    torch.manual_seed(0)
    return AlexNet(num_classes=NUM_CLASSES).state_dict()


def make_model(provider: str, device: torch.device, state: dict,
               memory_format: torch.memory_format = torch.contiguous_format) -> nn.Module:
    if provider == "triton-2col":
        model = AlexNet(num_classes=NUM_CLASSES, devices=(device, device))
    elif provider == "triton":
        model = AlexNet(num_classes=NUM_CLASSES)
    else:
        model = ReferenceAlexNet(num_classes=NUM_CLASSES)
    model.load_state_dict(state)
    return model.to(device=device, memory_format=memory_format)


def make_batches(device: torch.device, batch: int, size: int,
                 memory_format: torch.memory_format = torch.contiguous_format, count: int = 2):
    """Mean-subtracted-looking random images and random labels; a batch is far larger than
    L2, so two are enough to never reuse the last one."""
    generator = torch.Generator(device).manual_seed(1)
    return [(torch.randn(batch, 3, size, size, device=device, generator=generator)
             .mul_(50.0).contiguous(memory_format=memory_format),
             torch.randint(0, NUM_CLASSES, (batch,), device=device, generator=generator))
            for _ in range(count)]


def make_step(task: str, model: nn.Module, parameters, bf16: bool,
              next_batch: Callable) -> Callable[[], None]:
    device_type = next(iter(parameters)).device.type
    autocast = torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16)
    if task == "infer":
        model.eval()

        def step():
            images, _ = next_batch()
            with torch.no_grad(), autocast:
                model(images)
        return step

    model.train()
    optimizer = torch.optim.SGD(parameters, lr=0.01, momentum=0.9, weight_decay=5e-4)

    def step():
        images, labels = next_batch()
        with autocast:
            loss = TF.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def _time_calls(step: Callable, device: torch.device, warmup: int = 2, calls: int = 5) -> float:
    for _ in range(warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        step()
    synchronize(device)
    return (time.perf_counter() - start) / calls


def faster_memory_format(task: str, precision: str, device: torch.device,
                         state: dict) -> Tuple[torch.memory_format, dict]:
    """channels_last or contiguous, whichever runs the eager reference faster here."""
    key = (task, precision)
    if key not in _memory_format_choice:
        seconds = {}
        for name, memory_format in (("contiguous", torch.contiguous_format),
                                    ("channels_last", torch.channels_last)):
            model = make_model("eager", device, state, memory_format)
            batches = make_batches(device, BATCH, IMAGE_SIZE, memory_format)
            step = make_step(task, model, list(model.parameters()), precision == "bf16",
                             cycling(batches))
            seconds[name] = _time_calls(step, device)
            del model, batches, step
            torch.cuda.empty_cache()
        best = min(seconds, key=seconds.get)
        choice = torch.channels_last if best == "channels_last" else torch.contiguous_format
        _memory_format_choice[key] = (choice, {"memory_format": best,
                                               "memory_format_probe_s": seconds})
    return _memory_format_choice[key]


def check_inference(model: nn.Module, state: dict, batch, bf16: bool, device) -> float:
    """Ours against the reference on one batch: no timing of a model that computes garbage."""
    reference = make_model("eager", device, state).eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        ours = model.eval()(batch[0])
        expected = reference(batch[0])
    del reference
    torch.cuda.empty_cache()
    return max_relative_error(ours.float(), expected.float())


@cuda_timing
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("task", TASKS)
def test_model(benchmark, cuda, task, precision, provider):
    bf16 = precision == "bf16"
    benchmark.group = f"{task} step {precision}"
    state = paper_weights()
    memory_format, choice = torch.contiguous_format, {}
    if provider in ("eager", "compile"):
        memory_format, choice = faster_memory_format(task, precision, cuda, state)
    model = make_model(provider, cuda, state, memory_format)
    batches = make_batches(cuda, BATCH, IMAGE_SIZE, memory_format)
    if task == "infer" and provider.startswith("triton"):
        error = check_inference(model, state, batches[0], bf16, cuda)
        benchmark.extra_info["relative_error_vs_reference"] = error
        assert error <= SANITY[precision], (
            f"{provider} {precision}: logits differ from the reference by {error:.3g}")
    parameters = list(model.parameters())
    if provider == "compile":
        fresh_dynamo()
        model = torch.compile(model, mode=COMPILE_MODE)
    step = make_step(task, model, parameters, bf16, cycling(batches))
    benchmark.extra_info.update(
        kind="model", task=task, precision=precision, provider=provider, device="cuda",
        batch=BATCH, image_size=IMAGE_SIZE,
        flops_per_image=TRAIN_FLOPS_PER_IMAGE if task == "train" else INFER_FLOPS_PER_IMAGE,
        compile_mode=(COMPILE_MODE or "default") if provider == "compile" else None,
        **choice)
    measure(benchmark, step, cuda, warmup_calls=3, budget_s=3.0, min_rounds=5)
    benchmark.extra_info.update(peak_memory(step, cuda))


def test_train_step_cpu(benchmark):
    """A small fp32 training step of the torch.nn reference on the CPU: the harness (weights,
    batches, step, timing, extra_info) exercised where there is no GPU."""
    benchmark.group = "train step fp32 cpu"
    device = torch.device("cpu")
    model = make_model("eager", device, paper_weights())
    batches = make_batches(device, CPU_BATCH, CPU_IMAGE_SIZE)
    step = make_step("train", model, list(model.parameters()), False, cycling(batches))
    benchmark.extra_info.update(kind="model", task="train", precision="fp32", provider="eager",
                                device="cpu", batch=CPU_BATCH, image_size=CPU_IMAGE_SIZE,
                                flops_per_image=None)
    measure(benchmark, step, device, warmup_calls=1, fixed_rounds=3)

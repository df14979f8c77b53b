"""Phase 3: every kernel, forward and backward, against its reference at AlexNet's shapes.

Each launcher of kernels/*.py runs on fresh random inputs at batch 128 (224x224 images),
its outputs poisoned (NaN, -1) before it runs, and is compared with the PyTorch reference
launcher of kernels/reference/ computed in float64 from the same (rounded) inputs, in three
precisions:

- float32: torch's tf32 flags off, judged elementwise by the float32 tolerance;
- tf32: the flags on (the GEMMs' products from 10-bit mantissas), judged norm-wise by the
  tolerance derived from that mantissa and the reduction length (testing.tf32_tolerance);
  only the GEMM kernels (conv, linear) have a tf32 case;
- bfloat16: judged elementwise by the bf16 tolerance against the unrounded float64 result.

The same judges as the test suite (alexnet_triton.testing). Every error is recorded, not
only pass or fail. The ReLU masks of the backward passes come from the reference forward,
so both sides mask the same elements. With --dry-run (no GPU) a few layers run at batch 1
on the CPU through Triton's interpreter, which exercises the same code.
"""
from __future__ import annotations

import math
import os
from contextlib import contextmanager
from typing import Callable, Dict, List, Optional, Tuple

from bench.gpu_check.cli import autotune_cache, phase_main
from bench.gpu_check.record import FAIL, PASS, PhaseRecord

BATCH = 128
PRECISIONS = ("float32", "tf32", "bfloat16")
DRY_RUN = {"batch": 1, "layers": ("conv3", "lrn2", "pool5", "fc8", "dropout6"),
           "precisions": ("float32",)}
# Checked once more with tensor_descriptors=False, in bf16 (the dry run: its precision).
PLAIN_LOADS = ("conv3", "fc8")


@contextmanager
def precision_flags(precision: str):
    """torch's two tf32 switches, which the launchers read, for the duration."""
    import torch

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def dtype_of(precision: str):
    import torch

    return torch.bfloat16 if precision == "bfloat16" else torch.float32


def judge(record: PhaseRecord, name: str, actual, expected, precision: str,
          reduction: int = 0, exact: bool = False) -> None:
    """One output against its float64 reference, recorded with all three error measures."""
    from alexnet_triton import testing

    errors = {"scaled": testing.scaled_error(actual, expected),
              "max_relative": testing.max_relative_error(actual, expected),
              "normwise": testing.normwise_relative_error(actual, expected)}
    if exact:
        record.measure(name, errors["max_relative"], 0.0, precision=precision, **errors)
    elif precision == "tf32" and reduction:
        record.measure(name, errors["normwise"], testing.tf32_tolerance(reduction),
                       precision=precision, measure="normwise", reduction=reduction, **errors)
    else:
        record.measure(name, errors["scaled"], testing.TOLERANCE[dtype_of(precision)],
                       precision=precision, measure="scaled", **errors)


class Layer:
    """One AlexNet op (bench.suite.bench_ops.Op) and the launches that test it."""

    def __init__(self, op, device, precision: str, seed: int,
                 tensor_descriptors: Optional[bool] = None) -> None:
        import torch

        self.op, self.device, self.precision = op, device, precision
        # None: the launchers' own choice (TMA descriptors on Hopper); False: plain loads
        self.loads = {} if tensor_descriptors is None else {"tensor_descriptors": tensor_descriptors}
        self.dtype = dtype_of(precision)
        self.generator = torch.Generator(device).manual_seed(seed)

    def randn(self, *shape, scale: float = 1.0):
        """float64 values rounded to the layer's dtype: (low-precision copy, float64 copy)."""
        import torch

        values = torch.randn(*shape, device=self.device, dtype=torch.float64,
                             generator=self.generator) * scale
        low = values.to(self.dtype)
        return low, low.double()


def conv_checks(layer: Layer, record: PhaseRecord, prefix: str) -> None:
    import torch

    from alexnet_triton import testing
    from alexnet_triton.kernels import conv2d_relu as ours
    from alexnet_triton.kernels.reference import conv2d_relu as reference

    op = layer.op
    k, c_group, r, s = op.weight
    conv = ([op.stride] * 2, [op.padding] * 2, op.groups)
    x, x64 = layer.randn(*op.input)
    w, w64 = layer.randn(*op.weight, scale=(c_group * r * s) ** -0.5)
    b, b64 = layer.randn(k, scale=0.1)
    with testing.poisoned_allocations():
        y = ours.conv2d_relu_forward(x, w, b, *conv, **layer.loads)
    y64 = reference.conv2d_relu_forward(x64, w64, b64, *conv)
    judge(record, f"{prefix}.forward", y, y64, layer.precision, c_group * r * s)
    mask = y64.to(layer.dtype)  # the same ReLU mask on both sides
    dy, dy64 = layer.randn(*y64.shape)
    n, _, p, q = y64.shape
    # As the model's backward: where the input gradient is wanted, the weight gradient also
    # writes the masked grad_output, which the input gradient reads without the output.
    with testing.poisoned_allocations():
        found = ours.conv2d_relu_backward_weight(dy, mask, x, list(op.weight), *conv,
                                                 masked_grad_output=op.input_grad)
    dw, db = found[:2]
    dw64, db64 = reference.conv2d_relu_backward_weight(dy64, mask.double(), x64,
                                                       list(op.weight), *conv)
    judge(record, f"{prefix}.backward_weight", dw, dw64, layer.precision, n * p * q)
    if op.input_grad:
        # a select of grad_output as given: exact
        judge(record, f"{prefix}.masked_grad_output", found[2],
              torch.where(mask > 0, dy, torch.zeros_like(dy)).double(), layer.precision,
              exact=True)
        with testing.poisoned_allocations():
            dx = ours.conv2d_relu_backward_input(found[2], None, w, list(op.input), *conv,
                                                 **layer.loads)
        dx64 = reference.conv2d_relu_backward_input(dy64, mask.double(), w64, list(op.input),
                                                    *conv)
        taps = math.ceil(r / op.stride) * math.ceil(s / op.stride)
        judge(record, f"{prefix}.backward_input", dx, dx64, layer.precision,
              k // op.groups * taps)
    # The bias gradient is a plain sum of grad_output as loaded: never tf32.
    judge(record, f"{prefix}.backward_bias", db, db64,
          "float32" if layer.precision == "tf32" else layer.precision)


def linear_checks(layer: Layer, record: PhaseRecord, prefix: str) -> None:
    import torch

    from alexnet_triton import testing
    from alexnet_triton.kernels import linear as ours
    from alexnet_triton.kernels.reference import linear as reference

    op = layer.op
    m, k = op.input
    n = op.weight[0]
    x, x64 = layer.randn(m, k)
    w, w64 = layer.randn(n, k, scale=k ** -0.5)
    b, b64 = layer.randn(n, scale=0.1)
    seed = torch.tensor([12345], dtype=torch.int64, device=layer.device)
    with testing.poisoned_allocations():
        y = ours.linear_forward(x, w, b, op.relu, op.p, seed if op.p else None, **layer.loads)
    y64 = reference.linear_forward(x64, w64, b64, op.relu, op.p, seed if op.p else None)
    judge(record, f"{prefix}.forward", y, y64, layer.precision, k)
    mask = y64.to(layer.dtype) if op.relu else None
    dy, dy64 = layer.randn(m, n)
    with testing.poisoned_allocations():
        dx = ours.linear_backward_input(dy, mask, w, op.p, **layer.loads)
    dx64 = reference.linear_backward_input(dy64, None if mask is None else mask.double(), w64,
                                           op.p)
    judge(record, f"{prefix}.backward_input", dx, dx64, layer.precision, n)
    with testing.poisoned_allocations():
        dw, db = ours.linear_backward_weight(dy, mask, x, op.p, **layer.loads)
    dw64, db64 = reference.linear_backward_weight(dy64, None if mask is None else mask.double(),
                                                  x64, op.p)
    judge(record, f"{prefix}.backward_weight", dw, dw64, layer.precision, m)
    judge(record, f"{prefix}.backward_bias", db, db64,
          "float32" if layer.precision == "tf32" else layer.precision)


def lrn_checks(layer: Layer, record: PhaseRecord, prefix: str) -> None:
    from alexnet_triton import testing
    from alexnet_triton.kernels import lrn as ours
    from alexnet_triton.kernels.reference import lrn as reference
    from alexnet_triton.paper import LRN_ALPHA, LRN_BETA, LRN_K, LRN_SIZE

    op = layer.op
    lrn = (LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K, op.groups)
    # Post-ReLU activations of the paper's scale: the normalization must matter.
    a, a64 = layer.randn(*op.input, scale=20.0)
    a, a64 = a.abs(), a64.abs()
    with testing.poisoned_allocations():
        out = ours.lrn_forward(a, *lrn)
    judge(record, f"{prefix}.forward", out, reference.lrn_forward(a64, *lrn), layer.precision)
    g, g64 = layer.randn(*op.input)
    with testing.poisoned_allocations():
        grad = ours.lrn_backward(g, a, *lrn)
    judge(record, f"{prefix}.backward", grad, reference.lrn_backward(g64, a64, *lrn),
          layer.precision)


def pool_checks(layer: Layer, record: PhaseRecord, prefix: str) -> None:
    from alexnet_triton import testing
    from alexnet_triton.kernels import max_pool2d as ours
    from alexnet_triton.kernels.reference import max_pool2d as reference

    window = ([3, 3], [2, 2])
    x, x64 = layer.randn(*layer.op.input)
    with testing.poisoned_allocations():
        y, argmax = ours.max_pool2d_forward(x, *window)
    y64, argmax64 = reference.max_pool2d_forward(x64, *window)
    judge(record, f"{prefix}.forward", y, y64, layer.precision, exact=True)
    record.measure(f"{prefix}.argmax", float((argmax != argmax64).sum()), 0.0,
                   precision=layer.precision, measure="mismatches")
    g, g64 = layer.randn(*y64.shape)
    with testing.poisoned_allocations():
        grad = ours.max_pool2d_backward(g, argmax64, list(layer.op.input), *window)
    judge(record, f"{prefix}.backward", grad,
          reference.max_pool2d_backward(g64, argmax64, list(layer.op.input), *window),
          layer.precision)


def dropout_checks(layer: Layer, record: PhaseRecord, prefix: str) -> None:
    from alexnet_triton import testing
    from alexnet_triton.kernels import dropout as ours
    from alexnet_triton.kernels.reference import dropout as reference

    x, x64 = layer.randn(*layer.op.input)
    seed = ours.seed_tensor(987654321, layer.device)  # the 16-byte record the model draws
    with testing.poisoned_allocations():
        y = ours.dropout(x, layer.op.p, seed)
    judge(record, f"{prefix}.forward", y, reference.dropout(x64, layer.op.p, seed),
          layer.precision)
    # The mask itself is Philox's, computed the same way on both sides: no element may differ.
    expected_mask = reference.keep_mask(seed, layer.op.p, x.numel(), layer.device)
    record.measure(f"{prefix}.mask", float(((y != 0).flatten() != expected_mask).sum()), 0.0,
                   precision=layer.precision, measure="mismatches")


def augment_checks(device, record: PhaseRecord, batch: int) -> None:
    import torch

    from alexnet_triton import testing
    from alexnet_triton.kernels import augment as ours
    from alexnet_triton.kernels.reference import augment as reference
    from alexnet_triton.shapes import CROP_SIZE, IMAGE_SIZE

    side, crop = IMAGE_SIZE, CROP_SIZE
    generator = torch.Generator(device).manual_seed(7)
    images = torch.randint(0, 256, (batch, 3, side, side), dtype=torch.uint8, device=device,
                           generator=generator)
    mean = torch.rand(3, side, side, device=device, generator=generator) * 255
    top, left = (torch.randint(0, side - crop + 1, (batch,), dtype=torch.int32, device=device,
                               generator=generator) for _ in range(2))
    flip = torch.randint(0, 2, (batch,), dtype=torch.int32, device=device, generator=generator)
    shift = torch.randn(batch, 3, device=device, generator=generator)
    params = ours.pack_params(top, left, flip, shift)
    with testing.poisoned_allocations():
        out = ours.augment(images, mean, params, crop)
    judge(record, "augment", out, reference.augment(images, mean, params, crop), "float32")


# nvJPEG's IDCT and upsampling are not libjpeg-turbo's: its pixels may differ from the CPU
# decoders' (Pillow's, bit for bit) by a level or two. A root-mean-square difference over
# 4.5 levels (PSNR under 35 dB, more than the store's own q90 4:2:0 encoding costs on
# noisy colour fields) would be a wrong decode, not a different rounding.
GPU_DECODE_RMS_LEVELS = 4.5


def gpu_decode_checks(device, record: PhaseRecord) -> None:
    """The --decode gpu path end to end: a small 256-px store prepared with prepare's
    defaults, read through the loader (pinned record buffers, nvJPEG on a side stream),
    against the CPU path's batches: the same images and labels in the same order."""
    import tempfile

    import numpy as np
    import torch
    from PIL import Image

    from alexnet_triton.data import open_dataset, train_loader
    from alexnet_triton.data.convert import prepare
    from alexnet_triton.data.gpu_decode import gpu_decode_unavailable
    from alexnet_triton.data.reading import Reading
    from alexnet_triton.shapes import IMAGE_SIZE

    reason = gpu_decode_unavailable(device)
    if reason is not None:
        record.check("gpu_decode", FAIL, reason=reason)
        return
    with tempfile.TemporaryDirectory() as root:
        rng = np.random.default_rng(0)
        for name in ("a", "b"):
            for split, count in (("train", 20), ("val", 2)):
                folder = f"{root}/src/{split}/{name}"
                os.makedirs(folder)
                for i in range(count):
                    field = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
                    pixels = np.asarray(field.resize((300, 280), Image.BICUBIC), np.float32)
                    pixels = pixels + rng.normal(0, 4, pixels.shape)
                    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(f"{folder}/{i}.png")
        prepare(f"{root}/src", f"{root}/store", size=IMAGE_SIZE, workers=2, progress=False)
        info = open_dataset(f"{root}/store")
        read = dict(epoch=0, seed=0, workers=2, pin_memory=True, device=device)
        cpu = list(train_loader(info, 16, reading=Reading(), **read))
        gpu = list(train_loader(info, 16, reading=Reading(gpu_decode=True), **read))
    worst = 0.0
    for (cpu_images, cpu_labels), (gpu_images, gpu_labels) in zip(cpu, gpu):
        if gpu_images.device.type != device.type or not torch.equal(cpu_labels, gpu_labels.cpu()):
            record.check("gpu_decode.order", FAIL, reason=f"other labels, or a batch on "
                                                          f"{gpu_images.device}, not {device}")
            return
        difference = gpu_images.cpu().double() - cpu_images.contiguous().double()
        worst = max(worst, float(difference.pow(2).mean(dim=(1, 2, 3)).sqrt().max()))
    record.measure("gpu_decode.rms_levels", worst, GPU_DECODE_RMS_LEVELS,
                   batches=len(gpu), images=sum(len(labels) for _, labels in gpu))


CHECKS: Dict[str, Callable] = {"conv": conv_checks, "linear": linear_checks, "lrn": lrn_checks,
                               "pool": pool_checks, "dropout": dropout_checks}


def layer_plan(batch: int, layers=None, precisions=PRECISIONS) -> List[Tuple[object, str]]:
    """(op, precision) pairs in network order; tf32 only where a GEMM makes it matter."""
    from bench.suite.bench_ops import alexnet_ops

    ops = [op for op in alexnet_ops(batch) if op.name != "dropout-large"
           and (layers is None or op.name in layers)]
    return [(op, precision) for precision in precisions for op in ops
            if precision != "tf32" or op.kind in ("conv", "linear")]


def run_layers(record: PhaseRecord, device, batch: int, layers=None,
               precisions=PRECISIONS, augment: bool = True) -> None:
    import torch

    for index, (op, precision) in enumerate(layer_plan(batch, layers, precisions)):
        prefix = f"{op.name}.{precision}"
        layer = Layer(op, device, precision, seed=index)
        with precision_flags(precision):
            record.guarded(prefix, lambda: CHECKS[op.kind](layer, record, prefix))
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
    if augment:
        record.guarded("augment", lambda: augment_checks(device, record, batch))
    if device.type == "cuda":
        record.guarded("gpu_decode", lambda: gpu_decode_checks(device, record))
    # Last, so that a time box cut short takes these first: the plain-load fallback that
    # GPUs without TMA (before Hopper) and misaligned weights take, on one conv and one FC.
    plain = [name for name in (layers or PLAIN_LOADS) if name in PLAIN_LOADS]
    first = "bfloat16" if "bfloat16" in precisions else precisions[0]
    for op, precision in layer_plan(batch, plain, [first]) if plain else []:
        prefix = f"{op.name}.{precision}.plain-loads"
        layer = Layer(op, device, precision, seed=0, tensor_descriptors=False)
        with precision_flags(precision):
            record.guarded(prefix, lambda: CHECKS[op.kind](layer, record, prefix))


def run(record: PhaseRecord, args) -> None:
    import torch

    from bench.gpu_check import autotune
    from bench.gpu_check.compiles import CompileCounter

    counter = CompileCounter().install()
    if args.dry_run or not torch.cuda.is_available():
        if not args.dry_run:
            record.check("cuda", FAIL, reason="no CUDA device: run with --dry-run on a CPU")
            return
        run_layers(record, torch.device("cpu"), DRY_RUN["batch"], DRY_RUN["layers"],
                   DRY_RUN["precisions"], augment=False)
    else:
        autotune.install(autotune_cache(args.out))
        run_layers(record, torch.device("cuda"), BATCH)
    record.info(compiles=counter.summary(), batch=DRY_RUN["batch"] if args.dry_run else BATCH)
    failed = [c["name"] for c in record.data["checks"] if c["status"] != PASS]
    record.check("kernels", FAIL if failed else PASS, failed=failed)


if __name__ == "__main__":
    phase_main("correctness", run)

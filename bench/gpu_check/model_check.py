"""Phase 4: the whole model against ReferenceAlexNet, eager and under torch.compile.

For both placements (devices=None: both columns in grouped launches; two columns on one
GPU: every column launched on its own) at batch 128 of 224x224 images, with the reference
(plain torch.nn, cuDNN) in float64 holding the same weights:

- float32 (torch's tf32 flags off): logits in eval mode, and the 16 parameter gradients of
  a cross-entropy step (dropout 0, so both sides compute the same function), judged
  elementwise by the float32 tolerance;
- bf16 autocast: the same, norm-wise. Logits and loss are held to the bf16 tolerance. A
  gradient's bf16 error is dominated by two things no kernel controls: sums with heavy
  cancellation (conv1.weight's gradient misses float64 by about 23% in the dry run), and
  ReLUs whose pre-activation is within the forward's bf16 error of zero, so that they pass
  gradient on one side and not the other (in the dry run 4 to 7 of fc7's 8192 units, each
  a whole element of the gradient: fc7's error is 0.0025 without them, 0.02 to 0.035 with
  them). So each gradient is held to max(bf16 tolerance, 2 x the error of the same network
  computed in float64 with bf16 rounding at every op: the GEMM operands as autocast casts
  them, every output once; testing.bfloat16_rounding). That baseline is the error of bf16
  itself with one rounding per op, the same on every machine. (torch.nn's own bf16
  autocast on the CPU, the baseline before, depends on oneDNN's path: on a Xeon with AMX
  fc7's error was 0.0065, capped to AVX2 0.0199, so the check passed or failed with the
  CPU: issue 25.) The factor 2 is for which near-zero units flip, which the order of the
  float32 sums decides: the dry run's bf16 convs summed in another order (float32 oneDNN
  convs rounded once) move fc7's error from 0.023 to 0.032 against a baseline of 0.0215.

Then torch.compile(fullgraph=True) of the one-device model: on CUDA this traces the Triton
kernels themselves (through wrap_triton), which the CPU suite never does. A float32 step
must give the eager model's logits and gradients (float32 tolerance); a bf16-autocast step
(the trainer's --compile --amp bf16) its logits and loss. Compile times are recorded.
With --dry-run the placement checks run on the CPU on the PyTorch reference ops at batch 2
and 67x67 images (fc6's folded path; no compile).
"""
from __future__ import annotations

import time

from bench.gpu_check.cli import autotune_cache, phase_main
from bench.gpu_check.record import FAIL, PASS, SKIP, PhaseRecord

BATCH, IMAGE_SIZE, NUM_CLASSES = 128, 224, 1000
DRY_RUN_BATCH, DRY_RUN_IMAGE_SIZE = 2, 67
BASELINE_FACTOR = 2.0  # bf16 gradients: at most this times bf16 rounding's own error
LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")


def gathered_grads(model) -> dict:
    """Each parameter's gradient under its state-dict name, columns concatenated."""
    import torch

    grads = {}
    for layer in LAYERS:
        module = getattr(model, layer)
        for kind in ("weight", "bias"):
            if getattr(module, "split", False):
                parts = [getattr(module, f"{kind}_column{c}").grad for c in range(2)]
                grads[f"{layer}.{kind}"] = torch.cat([p.to(parts[0].device) for p in parts])
            else:
                grads[f"{layer}.{kind}"] = getattr(module, kind).grad
    return grads


def network(placement: str, device, dropout: float):
    """AlexNet in ``placement`` with the weights of seed 0."""
    import torch

    from alexnet_triton.models import AlexNet

    torch.manual_seed(0)
    devices = None if placement == "one-device" else (device, device)
    return AlexNet(num_classes=NUM_CLASSES, dropout=dropout, devices=devices).to(device)


def models(placement: str, device, dropout: float):
    """``network(...)`` and ReferenceAlexNet holding the same weights."""
    from alexnet_triton.models import ReferenceAlexNet

    model = network(placement, device, dropout)
    reference = ReferenceAlexNet(num_classes=NUM_CLASSES, dropout=dropout)
    reference.load_state_dict(model.state_dict())
    return model, reference.to(device)


def batch(device, size: int, image_size: int):
    import torch

    generator = torch.Generator(device).manual_seed(1)
    images = torch.randn(size, 3, image_size, image_size, device=device, generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (size,), device=device, generator=generator)
    return images * 50.0, labels  # mean-subtracted pixels are of that scale


def step(model, images, labels, bf16: bool):
    """Logits (eval mode, no grad) and gradients (train mode) of one cross-entropy step."""
    import torch
    from torch import nn

    device_type = images.device.type
    model.zero_grad(set_to_none=True)
    with torch.no_grad(), torch.autocast(device_type, torch.bfloat16, enabled=bf16):
        logits = model.eval()(images).float()
    with torch.autocast(device_type, torch.bfloat16, enabled=bf16):
        loss = nn.functional.cross_entropy(model.train()(images).float(), labels)
    loss.backward()
    return logits, loss.detach()


def compare(record: PhaseRecord, name: str, ours: dict, expected: dict, bf16: bool,
            baseline: dict | None = None) -> None:
    """Every output of ``ours`` against ``expected``: scaled error for fp32, norm-wise for
    bf16, where a gradient may be off by BASELINE_FACTOR x ``baseline``'s error (the float64
    network with bf16 rounding at every op) when that is above the dtype's tolerance."""
    import torch

    from alexnet_triton import testing

    for key, value in ours.items():
        if not bf16:
            record.measure(f"{name}.{key}", testing.scaled_error(value, expected[key]),
                           testing.TOLERANCE[torch.float32], measure="scaled")
            continue
        limit, extra = testing.TOLERANCE[torch.bfloat16], {}
        if baseline is not None and key in baseline:
            rounding_error = testing.normwise_relative_error(baseline[key], expected[key])
            limit = max(limit, BASELINE_FACTOR * rounding_error)
            extra["bf16_rounding_normwise"] = rounding_error
        record.measure(f"{name}.{key}", testing.normwise_relative_error(value, expected[key]),
                       limit, measure="normwise", **extra)


def rounded_grads(reference, images, labels) -> dict:
    """The gradients of ``step`` for the float64 ``reference``, with bf16 rounding at every
    op of the network (testing.bfloat16_rounding), as bf16 autocast rounds: the loss is
    computed from the logits unrounded (autocast keeps it in float32) and its gradient is
    rounded as it enters the network's bf16 backward."""
    import torch
    from torch import nn

    from alexnet_triton import testing

    reference.zero_grad(set_to_none=True)
    with testing.bfloat16_rounding():
        logits = reference.train()(images)
    loss = nn.functional.cross_entropy(logits, labels)
    (grad,) = torch.autograd.grad(loss, logits, retain_graph=True)
    with testing.bfloat16_rounding():
        logits.backward(testing.round_to_bfloat16(grad))
    return {f"grad.{k}": v for k, v in gathered_grads(reference).items()}


def outputs(model, images, labels, bf16: bool) -> dict:
    logits, loss = step(model, images, labels, bf16)
    return {"logits": logits, "loss": loss.reshape(1),
            **{f"grad.{k}": v for k, v in gathered_grads(model).items()}}


def reference_results(device, size: int, image_size: int) -> tuple:
    """(the float64 reference's outputs, the bf16-rounding baseline's gradients) of the
    batch: the same weights and images for both placements, so computed once for both."""
    import torch

    from bench.gpu_check.correctness import precision_flags

    images, labels = batch(device, size, image_size)
    _, reference = models("one-device", device, dropout=0.0)
    with precision_flags("float32"):
        expected = outputs(reference.double(), images.double(), labels, bf16=False)
        rounding = rounded_grads(reference, images.double(), labels)
    del reference
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return expected, rounding


def placement_checks(record: PhaseRecord, device, placement: str, size: int,
                     image_size: int, references: tuple) -> None:
    import torch

    from bench.gpu_check.correctness import precision_flags

    expected, rounding = references
    images, labels = batch(device, size, image_size)
    model = network(placement, device, dropout=0.0)
    with precision_flags("float32"):
        compare(record, f"{placement}.float32", outputs(model, images, labels, False), expected,
                bf16=False)
        compare(record, f"{placement}.bf16", outputs(model, images, labels, True), expected,
                bf16=True, baseline=rounding)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()


def compile_check(record: PhaseRecord, device, size: int, bf16: bool) -> None:
    import torch

    from bench.gpu_check.correctness import precision_flags

    images, labels = batch(device, size, IMAGE_SIZE)
    model = network("one-device", device, dropout=0.0)
    with precision_flags("float32"):
        eager = outputs(model, images, labels, bf16)
        torch._dynamo.reset()
        compiled = torch.compile(model, fullgraph=True)
        start = time.perf_counter()
        ours = outputs(compiled, images, labels, bf16)
        torch.cuda.synchronize()
    name = "compile.bf16" if bf16 else "compile.float32"
    record.info(**{f"{name}_seconds": round(time.perf_counter() - start, 1)})
    if bf16:  # the gradients' bf16 error is judged in the placement checks
        ours = {key: ours[key] for key in ("logits", "loss")}
    compare(record, name, ours, eager, bf16)


def run(record: PhaseRecord, args) -> None:
    import torch

    from bench.gpu_check import autotune
    from bench.gpu_check.compiles import CompileCounter

    counter = CompileCounter().install() if not args.dry_run else None
    if args.dry_run:
        device, size, image_size = torch.device("cpu"), DRY_RUN_BATCH, DRY_RUN_IMAGE_SIZE
    elif not torch.cuda.is_available():
        record.check("cuda", FAIL, reason="no CUDA device: run with --dry-run on a CPU")
        return
    else:
        device, size, image_size = torch.device("cuda"), BATCH, IMAGE_SIZE
        autotune.install(autotune_cache(args.out))
    references = record.guarded("reference", lambda: reference_results(device, size,
                                                                        image_size))
    for placement in ("one-device", "two-columns") if references is not None else ():
        record.guarded(placement, lambda: placement_checks(record, device, placement, size,
                                                           image_size, references))
    if device.type == "cuda":
        for bf16 in (False, True):
            record.guarded("compile", lambda: compile_check(record, device, size, bf16))
    else:
        record.check("compile", SKIP, reason="torch.compile of the Triton path needs CUDA")
    if counter is not None:
        record.info(compiles=counter.summary())
    failed = [c["name"] for c in record.data["checks"] if c["status"] not in (PASS, SKIP)]
    record.check("model", FAIL if failed else PASS, failed=failed)


if __name__ == "__main__":
    phase_main("model", run)

"""The GPU's two ceilings, measured in the same run as everything else.

A large bf16 matmul gives the dense bf16 rate the report divides by for the model-FLOPs
utilisation; a large device-to-device copy gives the memory bandwidth (bytes read plus bytes
written) that the memory-bound ops are compared with.
"""
import torch

from bench.suite.timing import cuda_timing, measure

pytestmark = cuda_timing

MATMUL_SIZE = 8192
COPY_BYTES = 2**30


def test_matmul_bf16(benchmark, cuda):
    """[8192, 8192] @ [8192, 8192] in bf16 through cuBLAS: the dense bf16 peak."""
    benchmark.group = "peak"
    generator = torch.Generator(cuda).manual_seed(0)
    n = MATMUL_SIZE
    a = torch.randn(n, n, device=cuda, dtype=torch.bfloat16, generator=generator)
    b = torch.randn(n, n, device=cuda, dtype=torch.bfloat16, generator=generator)
    out = torch.empty(n, n, device=cuda, dtype=torch.bfloat16)
    benchmark.extra_info.update(kind="peak", peak="matmul_bf16", flops=2 * n**3,
                                shape=f"{n}x{n}x{n}")
    measure(benchmark, lambda: torch.mm(a, b, out=out), cuda, budget_s=2.0)


def test_copy(benchmark, cuda):
    """A 1 GiB device-to-device copy: the memory bandwidth, counting read and write."""
    benchmark.group = "peak"
    generator = torch.Generator(cuda).manual_seed(0)
    source = torch.randn(COPY_BYTES // 4, device=cuda, generator=generator)
    target = torch.empty_like(source)
    benchmark.extra_info.update(kind="peak", peak="copy", bytes=2 * COPY_BYTES,
                                shape=f"{COPY_BYTES // 2**20} MiB")
    measure(benchmark, lambda: target.copy_(source), cuda, budget_s=2.0)

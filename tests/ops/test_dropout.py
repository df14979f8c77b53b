"""kernels/dropout.py against its bit-exact reference, and the statistics of the mask."""
import math

import pytest
import torch

from alexnet_triton.kernels import dropout as kernels
from alexnet_triton.kernels.reference import dropout as reference
from helpers import assert_close, skip_bf16_on_cpu, tolerance

DTYPES = [torch.float32, torch.float64, torch.bfloat16]


def _seed(value: int, device) -> torch.Tensor:
    return torch.tensor([value], dtype=torch.int64, device=device)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 4096), (3, 9216 // 4 + 1), (1, 96, 13, 13), (7,)])
@pytest.mark.parametrize("p", [0.5, 0.1, 0.9])
def test_kernel_matches_reference(shape, p, dtype, device, poisoned):
    skip_bf16_on_cpu(dtype, device)
    gen = torch.Generator().manual_seed(hash((shape, p)) % 2**31)
    x = torch.randn(shape, generator=gen, dtype=torch.float64).to(device, dtype)
    seed = _seed(int(torch.randint(0, 2**31 - 1, (), generator=gen)), device)
    y = kernels.dropout(x, p, seed)
    assert poisoned.allocations >= 1
    expected = reference.dropout(x.double().cpu(), p, seed.cpu()).to(dtype)
    # Same mask bit for bit; survivors scaled by 1/(1-p) in the input's precision.
    assert torch.equal(y.cpu() == 0, expected == 0)
    assert_close(y.cpu(), expected, tolerance(dtype), "dropout")


def _philox_in_python_ints(seed: int, offset: int) -> float:
    """Triton's tl.rand(seed, offset) written with exact Python integers, as an oracle."""
    mask = 0xFFFFFFFF
    c0, c1, c2, c3 = offset & mask, 0, 0, 0
    k0, k1 = seed & mask, (seed >> 32) & mask
    for _ in range(10):
        b, a = 0xCD9E8D57 * c2, 0xD2511F53 * c0
        c0, c1, c2, c3 = (b >> 32) ^ c1 ^ k0, b & mask, (a >> 32) ^ c3 ^ k1, a & mask
        k0, k1 = (k0 + 0x9E3779B9) & mask, (k1 + 0xBB67AE85) & mask
    signed = c0 - 2**32 if c0 >= 2**31 else c0
    magnitude = -signed - 1 if signed < 0 else signed
    return float(torch.tensor(magnitude, dtype=torch.float32) * torch.tensor(4.6566127342e-10))


@pytest.mark.parametrize("seed", [0, 1, 2**31 - 2, 2**40 + 12345])
def test_reference_philox_is_exact_over_the_whole_offset_range(seed):
    # Offsets up to 2**31 - 1 and seeds with high bits exercise every bit of the products.
    gen = torch.Generator().manual_seed(seed % 2**31)
    offsets = torch.cat([torch.arange(64), torch.randint(0, 2**31 - 1, (256,), generator=gen),
                         torch.tensor([2**31 - 1])])
    expected = torch.tensor([_philox_in_python_ints(seed, int(o)) for o in offsets])
    assert torch.equal(reference.philox_uniform(torch.tensor(seed), offsets), expected)


@pytest.mark.parametrize("p", [0.5, 0.2])
def test_kept_fraction_and_mean_are_preserved(p, device):
    n = 200_000
    x = torch.ones(n, device=device)
    y = kernels.dropout(x, p, _seed(1234, device)).cpu()
    kept = (y != 0).double().mean().item()
    # Six binomial standard deviations: a correct mask fails this about once in 10**8 runs.
    bound = 6 * math.sqrt(p * (1 - p) / n)
    assert abs(kept - (1 - p)) < bound
    assert torch.all((y == 0) | torch.isclose(y, torch.tensor(1 / (1 - p))))
    assert abs(y.double().mean().item() - 1.0) < bound / (1 - p)


def test_same_seed_same_mask_other_seed_other_mask(device):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(10_000, generator=gen).to(device)
    first = kernels.dropout(x, 0.5, _seed(42, device))
    again = kernels.dropout(x, 0.5, _seed(42, device))
    other = kernels.dropout(x, 0.5, _seed(43, device))
    assert torch.equal(first, again)
    assert not torch.equal(first == 0, other == 0)


def test_mask_does_not_depend_on_shape_or_strides(device):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 33, generator=gen).to(device)
    seed = _seed(99, device)
    flat = kernels.dropout(x.reshape(-1), 0.5, seed).reshape(64, 33)
    transposed = kernels.dropout(x.t().contiguous().t(), 0.5, seed)  # strided input
    assert torch.equal(flat, transposed)


def test_p_zero_is_identity(device):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(5000, generator=gen).to(device)
    assert torch.equal(kernels.dropout(x, 0.0, _seed(5, device)), x)


def test_bad_seed_is_rejected(device):
    with pytest.raises(ValueError, match="seed"):
        kernels.dropout(torch.ones(4, device=device), 0.5, torch.tensor([1.0], device=device))

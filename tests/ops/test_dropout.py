"""kernels/dropout.py against its bit-exact reference, and the statistics of the mask."""
import math

import pytest
import torch
import triton
import triton.language as tl

from alexnet_triton.kernels import dropout as kernels
from alexnet_triton.kernels.reference import dropout as reference
from helpers import assert_close, skip_bf16_on_cpu, tolerance

DTYPES = [torch.float32, torch.float64, torch.bfloat16]


def _seed(value: int, device) -> torch.Tensor:
    return kernels.seed_tensor(value, device)


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


def _philox_in_python_ints(seed: int, counter: int) -> list[int]:
    """Triton's tl.randint4x(seed, counter) written with exact Python integers, as an oracle."""
    mask = 0xFFFFFFFF
    c0, c1, c2, c3 = counter & mask, 0, 0, 0
    k0, k1 = seed & mask, (seed >> 32) & mask
    for _ in range(10):
        b, a = 0xCD9E8D57 * c2, 0xD2511F53 * c0
        c0, c1, c2, c3 = (b >> 32) ^ c1 ^ k0, b & mask, (a >> 32) ^ c3 ^ k1, a & mask
        k0, k1 = (k0 + 0x9E3779B9) & mask, (k1 + 0xBB67AE85) & mask
    return [c0, c1, c2, c3]


def _uniform_in_python_ints(word: int) -> float:
    signed = word - 2**32 if word >= 2**31 else word
    magnitude = -signed - 1 if signed < 0 else signed
    return float(torch.tensor(magnitude, dtype=torch.float32) * torch.tensor(4.6566127342e-10))


def _counters(seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed % 2**31)
    return torch.cat([torch.arange(64), torch.randint(0, 2**31 - 1, (256,), generator=gen),
                      torch.tensor([2**31 - 1])])


@pytest.mark.parametrize("seed", [0, 1, 2**31 - 2, 2**40 + 12345])
def test_reference_philox_is_exact_over_the_whole_counter_range(seed):
    # Counters up to 2**31 - 1 and seeds with high bits exercise every bit of the products.
    counters = _counters(seed)
    oracle = [_philox_in_python_ints(seed, int(c)) for c in counters]
    words = reference.philox_words(torch.tensor(seed), counters)
    for i, word in enumerate(words):
        assert torch.equal(word, torch.tensor([o[i] for o in oracle])), f"word {i}"
    expected = torch.tensor([_uniform_in_python_ints(o[0]) for o in oracle])
    assert torch.equal(reference.philox_uniform(torch.tensor(seed), counters), expected)


@pytest.mark.parametrize("p", [0.5, 0.3])
def test_reference_mask_is_word_i_mod_4_of_counter_i_div_4(p):
    seed, numel = 2**33 + 77, 4 * 50 + 3  # not a multiple of 4: the last counter is cut
    keep = reference.keep_mask(torch.tensor([seed]), p, numel, torch.device("cpu"))
    expected = [_uniform_in_python_ints(_philox_in_python_ints(seed, i // 4)[i % 4])
                >= float(torch.tensor(p, dtype=torch.float32)) for i in range(numel)]
    assert keep.tolist() == expected


@triton.jit
def _keep_tile_kernel(offsets_ptr, keep_ptr, seed_ptr, p, ROWS: tl.constexpr,
                      COLS: tl.constexpr):
    at = tl.arange(0, ROWS)[:, None] * COLS + tl.arange(0, COLS)[None, :]  # [ROWS, COLS]
    keep = kernels.dropout_keep(tl.load(seed_ptr), tl.load(offsets_ptr + at), p)
    tl.store(keep_ptr + at, keep.to(tl.int8))


def test_dropout_keep_is_the_mask_of_each_flat_offset_on_any_tile(device):
    # kernels/linear.py evaluates dropout_keep on 2-D tiles of flat offsets: scattered
    # offsets on a [32, 16] tile must each get the reference's mask of that element.
    gen = torch.Generator().manual_seed(4)
    numel, p = 5000, 0.5
    offsets = torch.randperm(numel, generator=gen)[:512].to(torch.int32).reshape(32, 16)
    seed = _seed(2**35 + 9, device)
    keep = torch.full((32, 16), -1, dtype=torch.int8, device=device)
    _keep_tile_kernel[(1,)](offsets.to(device), keep, seed, p, ROWS=32, COLS=16)
    expected = reference.keep_mask(seed.cpu(), p, numel, torch.device("cpu"))
    assert torch.equal(keep.cpu().bool(), expected[offsets.long()])


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


def test_channels_last_keeps_its_format_and_the_mask_of_its_logical_indices(device, poisoned):
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(2, 16, 5, 3, generator=gen).to(device)
    seed = _seed(2**32 + 5, device)
    y = kernels.dropout(x.contiguous(memory_format=torch.channels_last), 0.5, seed)
    assert poisoned.allocations >= 1
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    assert torch.equal(y, kernels.dropout(x, 0.5, seed))
    expected = reference.dropout(x.cpu().contiguous(memory_format=torch.channels_last), 0.5,
                                 seed.cpu())
    assert expected.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y.cpu(), expected)


def test_p_zero_is_identity(device):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(5000, generator=gen).to(device)
    assert torch.equal(kernels.dropout(x, 0.0, _seed(5, device)), x)


def test_bad_seed_is_rejected(device):
    with pytest.raises(ValueError, match="seed"):
        kernels.dropout(torch.ones(4, device=device), 0.5, torch.tensor([1.0], device=device))


def test_seeds_are_one_element_views_of_a_16_byte_record(device):
    for seed in (kernels.seed_tensor(2**40 + 3, device), kernels.random_seed(device)):
        assert seed.dtype == torch.int64 and seed.shape == (1,) and seed.device.type == device.type
        assert seed.untyped_storage().nbytes() == 16 and seed.storage_offset() == 0
    assert kernels.seed_tensor(2**40 + 3, device).item() == 2**40 + 3
    assert 0 <= kernels.random_seed(device).item() < 2**31 - 1


@pytest.mark.parametrize("shape", [(3, 1000), (5,)])
def test_a_bare_seed_and_a_record_draw_the_same_stream(shape, device, poisoned):
    # The record is read in one 16-byte load, a bare one-element seed in one 8-byte load
    # (and a record's second word never): all three give the reference's output bit for bit.
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(shape, generator=gen).to(device)
    value = 2**33 + 1234567
    bare = torch.tensor([value], dtype=torch.int64, device=device)
    junk_pad = torch.tensor([value, -1], dtype=torch.int64, device=device)[:1]
    outputs = [kernels.dropout(x, 0.4, s) for s in (_seed(value, device), bare, junk_pad)]
    assert poisoned.allocations >= 3
    expected = reference.dropout(x.cpu(), 0.4, bare.cpu())
    for y in outputs:
        assert torch.equal(y.cpu(), expected)


def test_the_fused_linear_mask_takes_a_record_seed(device):
    # kernels/linear.py reads the seed's first word: a record seed draws dropout's mask there.
    from alexnet_triton.kernels import linear
    gen = torch.Generator().manual_seed(9)
    M, N, K, p = 5, 37, 16, 0.5
    x, w = (torch.randn(s, generator=gen).to(device) for s in ((M, K), (N, K)))
    seed = kernels.random_seed(device)
    fused = linear.linear_forward(x, w, None, False, p, seed)
    keep = reference.keep_mask(seed.cpu(), p, M * N, torch.device("cpu")).reshape(M, N)
    assert torch.equal(fused.cpu() != 0, keep)  # x @ w.T of random normals has no zeros

"""Fully connected layer (AlexNet's fc6, fc7, fc8) as fused GEMM kernels, forward and backward.

The forward computes ``dropout(relu(input @ weight.T + bias))`` with bias, ReLU and the
Philox dropout mask of kernels/dropout.py in the GEMM's epilogue. The two backward GEMMs
use the same kernel on transposed strides (no copies of the big operands):
``grad_input = g' @ weight`` and ``grad_weight = g'.T @ input``, where
``g' = grad_output / (1 - p) * (output > 0)``: the mask is applied once, by a small kernel
that also sums ``grad_bias = g'.sum(0)``, so that the GEMMs' main loops only load and
multiply; the scalar 1/(1-p) is applied to the sums in the epilogue.

At AlexNet's batch (M = 128) one row tile covers the batch, so every element of the weight
is read by one program only, and fc6-fc8 have 8-32 column tiles for 132 SMs: the reduction
is split (split-K). Each split writes its float32 partial sums to a workspace of its own and
linear_epilogue_kernel adds them in split order (deterministic: no atomics) before the bias,
ReLU and dropout, which need the full sum.

On Hopper the GEMMs read both operands through TMA tensor descriptors built in the kernel
(kernels.tensor_descriptors_available): main loops of 82-87 instructions per 8 HGMMA in
bf16 against 112-194 with plain loads, 91-189 in tf32 against 182-406 (bench.static). Plain
loads stay for ieee float32 (FFMA, where descriptors spill), other GPUs and operands TMA
cannot address.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from alexnet_triton.kernels import (accumulation_dtype, accumulator, descriptor_scratch,
                                    autotune_pruner, interpreting, launchable,
                                    tensor_descriptors_available, through_registers,
                                    tma_compatible)
from alexnet_triton.kernels.dropout import dropout_keep, dropout_scale


@triton.jit
def _epilogue(acc, rm, rn, N, bias_ptr, seed_ptr, p,
              HAS_BIAS: tl.constexpr, RELU: tl.constexpr, DROPOUT: tl.constexpr,
              SCALE: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """scale * relu(acc + bias), dropped where dropout drops: the same code after the GEMM
    (one split) and after the split-K sum, so both paths give the same bits."""
    if HAS_BIAS:
        bias = tl.load(bias_ptr + rn, mask=rn < N, other=0.0)
        acc += bias.to(ACC_DTYPE)[None, :]
    if RELU:
        acc = tl.maximum(acc, 0.0)
    # The scale is 1/(1-p) of dropout: forward for the survivors, backward for g'. It is a
    # scalar, so it is applied once to the sums rather than to every loaded element.
    if SCALE:
        acc = acc * dropout_scale(p, ACC_DTYPE)
    if DROPOUT:
        # The rule of kernels/dropout.py on the flat index of the [M, N] output (int32,
        # checked by the launcher), so the fused mask equals the standalone dropout's mask.
        keep = dropout_keep(tl.load(seed_ptr), rm[:, None] * N + rn[None, :], p)
        acc = tl.where(keep, acc, 0.0)
    return acc


@triton.jit
def linear_kernel(
    a_ptr, b_ptr, c_ptr, bias_ptr, seed_ptr,
    M, N, K, M_A, K_A, K_CHUNK,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cs, stride_cm, stride_cn,
    p,
    PARTIAL: tl.constexpr, EVEN_K: tl.constexpr,
    HAS_BIAS: tl.constexpr, RELU: tl.constexpr, DROPOUT: tl.constexpr, SCALE: tl.constexpr,
    ACC_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    STAGE_A: tl.constexpr, STAGE_B: tl.constexpr,
    A_DESCRIPTOR: tl.constexpr, A_TRANSPOSED: tl.constexpr,
    B_DESCRIPTOR: tl.constexpr, B_TRANSPOSED: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """C[M, N] = epilogue(A[M, K] @ B[K, N]), or with PARTIAL one split's share of the sum.

    A may be zero-padded to [M_A, K_A] (>= [M, K]) and is read up to there: with M_A and
    K_A multiples of 16 its loads are masked in whole 16-byte vectors (fc8's 1000 outputs
    would otherwise cut every masked load of g' down to one element).

    Program (i, j, s) reduces over k in [s * K_CHUNK, (s + 1) * K_CHUNK) (K_CHUNK is a
    multiple of BLOCK_K, so only the last split meets K). With PARTIAL it stores the
    float32 (float64) sum to C[s] of a [SPLIT, M, N] workspace and the epilogue waits for
    linear_epilogue_kernel; else it applies _epilogue and stores C in C's dtype. EVEN_K:
    K and K_A are multiples of BLOCK_K, so no k-step needs a mask along k (the masks left
    do not change from one step to the next, and the compiler hoists them out of the loop).

    A_DESCRIPTOR, B_DESCRIPTOR: the operand's tiles come through a TMA tensor descriptor
    built here (Hopper's bulk copies: no addresses, masks or pointer arithmetic in the
    loop), else through plain masked loads. A descriptor is over the operand's orientation
    with unit innermost stride: A [M, K] or (A_TRANSPOSED, grad_weight's g'.T) A.T [K, M];
    B [K, N] or (B_TRANSPOSED, the forward's weight) B.T [N, K]; a transposed tile is
    transposed back in shared memory. TMA fills rows and columns past [M, K] and [K, N]
    with zeros, as the masks do. The launcher checks TMA's alignment rules.
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    split = tl.program_id(2)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    k_start = split * K_CHUNK
    k_end = tl.minimum(k_start + K_CHUNK, K)
    # int64 offsets: fc6's weight alone has 37.7M elements and strides can be anything.
    rm64 = rm.to(tl.int64)
    rn64 = rn.to(tl.int64)
    rk64 = rk.to(tl.int64) + k_start.to(tl.int64)
    step = tl.full([], BLOCK_K, tl.int64)
    if A_DESCRIPTOR:
        if A_TRANSPOSED:
            a_desc = tl.make_tensor_descriptor(a_ptr, shape=[K, M], strides=[stride_ak, 1],
                                               block_shape=[BLOCK_K, BLOCK_M])  # A.T [K, M]
        else:
            a_desc = tl.make_tensor_descriptor(a_ptr, shape=[M, K], strides=[stride_am, 1],
                                               block_shape=[BLOCK_M, BLOCK_K])  # A [M, K]
    else:
        a_ptrs = a_ptr + rm64[:, None] * stride_am + rk64[None, :] * stride_ak  # [BLOCK_M, BLOCK_K]
    if B_DESCRIPTOR:
        if B_TRANSPOSED:
            b_desc = tl.make_tensor_descriptor(b_ptr, shape=[N, K], strides=[stride_bn, 1],
                                               block_shape=[BLOCK_N, BLOCK_K])  # B.T [N, K]
        else:
            b_desc = tl.make_tensor_descriptor(b_ptr, shape=[K, N], strides=[stride_bk, 1],
                                               block_shape=[BLOCK_K, BLOCK_N])  # B [K, N]
    else:
        b_ptrs = b_ptr + rk64[:, None] * stride_bk + rn64[None, :] * stride_bn  # [BLOCK_K, BLOCK_N]

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for k in range(k_start, k_end, BLOCK_K):
        # A split's chunk is whole k-steps: a descriptor's tile never reaches into the next
        # split's share, and past K it reads TMA's zeros.
        if A_DESCRIPTOR:
            if A_TRANSPOSED:
                a = a_desc.load([k, pid_m * BLOCK_M]).T  # [BLOCK_M, BLOCK_K]
            else:
                a = a_desc.load([pid_m * BLOCK_M, k])
        elif EVEN_K:
            a = tl.load(a_ptrs, mask=rm[:, None] < M_A, other=0.0)
        else:
            a = tl.load(a_ptrs, mask=(rm[:, None] < M_A) & (rk[None, :] < K_A - k), other=0.0)
        if B_DESCRIPTOR:
            if B_TRANSPOSED:
                b = b_desc.load([pid_n * BLOCK_N, k]).T  # [BLOCK_K, BLOCK_N]
            else:
                b = b_desc.load([k, pid_n * BLOCK_N])
        elif EVEN_K:
            b = tl.load(b_ptrs, mask=rn[None, :] < N, other=0.0)
        else:
            b = tl.load(b_ptrs, mask=(rk[:, None] < K - k) & (rn[None, :] < N), other=0.0)
        a = through_registers(a, STAGE_A)
        b = through_registers(b, STAGE_B)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION,
                     out_dtype=ACC_DTYPE)
        if not A_DESCRIPTOR:
            a_ptrs += step * stride_ak
        if not B_DESCRIPTOR:
            b_ptrs += step * stride_bk

    c_mask = (rm[:, None] < M) & (rn[None, :] < N)
    if PARTIAL:
        c_ptrs = (c_ptr + split.to(tl.int64) * stride_cs + rm64[:, None] * stride_cm
                  + rn64[None, :] * stride_cn)
        tl.store(c_ptrs, acc, mask=c_mask)
    else:
        acc = _epilogue(acc, rm, rn, N, bias_ptr, seed_ptr, p,
                        HAS_BIAS, RELU, DROPOUT, SCALE, ACC_DTYPE)
        c_ptrs = c_ptr + rm64[:, None] * stride_cm + rn64[None, :] * stride_cn
        tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=c_mask)


@triton.jit
def linear_epilogue_kernel(
    partial_ptr, c_ptr, bias_ptr, seed_ptr, M, N, SPLIT, stride_ps, stride_pm, p,
    HAS_BIAS: tl.constexpr, RELU: tl.constexpr, DROPOUT: tl.constexpr, SCALE: tl.constexpr,
    ACC_DTYPE: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr,
):
    """C[M, N] = _epilogue(sum over s of partial[s]), partial [SPLIT, M, N] (unit column
    stride) and C contiguous.

    The splits are added in their order, 0 first, whatever order their programs ran in:
    the result does not depend on the schedule.
    """
    rm = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    rn = tl.program_id(1) * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
    in_bounds = (rm[:, None] < M) & (rn[None, :] < N)
    rm64 = rm.to(tl.int64)
    partial_ptrs = partial_ptr + rm64[:, None] * stride_pm + rn[None, :]  # [BLOCK_ROWS, BLOCK_COLS]
    acc = tl.zeros((BLOCK_ROWS, BLOCK_COLS), dtype=ACC_DTYPE)
    for _ in range(SPLIT):
        acc += tl.load(partial_ptrs, mask=in_bounds, other=0.0)
        partial_ptrs += stride_ps
    acc = _epilogue(acc, rm, rn, N, bias_ptr, seed_ptr, p,
                    HAS_BIAS, RELU, DROPOUT, SCALE, ACC_DTYPE)
    tl.store(c_ptr + rm64[:, None] * N + rn[None, :], acc.to(c_ptr.dtype.element_ty),
             mask=in_bounds)


@triton.jit
def linear_masked_grad_kernel(
    grad_ptr, output_ptr, masked_ptr, grad_bias_ptr, M, N, N_PADDED,
    stride_gm, stride_gn, stride_om, stride_on, p,
    MASK: tl.constexpr, STORE: tl.constexpr, COLUMN_SUM: tl.constexpr, SCALE: tl.constexpr,
    ACC_DTYPE: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr,
):
    """masked[M, N_PADDED] = grad * (output > 0) (MASK; else grad), zeros in the padding
    columns (STORE), and grad_bias[N] = scale * masked.sum(0) (COLUMN_SUM).

    ReLU's and dropout's backward (bar the scalar scale, which the GEMMs apply to their
    sums), once for the layer instead of in every GEMM program's main loop. One program
    owns BLOCK_COLS columns and runs down all M rows: the sums have a fixed order.
    """
    rn = tl.program_id(0) * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
    rn64 = rn.to(tl.int64)
    column_sum = tl.zeros((BLOCK_COLS,), dtype=ACC_DTYPE)
    for m in range(0, M, BLOCK_ROWS):
        rm = m + tl.arange(0, BLOCK_ROWS)
        rm64 = rm.to(tl.int64)
        in_bounds = (rm[:, None] < M) & (rn[None, :] < N)
        g = tl.load(grad_ptr + rm64[:, None] * stride_gm + rn64[None, :] * stride_gn,
                    mask=in_bounds, other=0.0)
        if MASK:
            out = tl.load(output_ptr + rm64[:, None] * stride_om + rn64[None, :] * stride_on,
                          mask=in_bounds, other=0.0)
            g = tl.where(out > 0, g, tl.zeros_like(g))
        if STORE:
            tl.store(masked_ptr + rm64[:, None] * N_PADDED + rn64[None, :], g,
                     mask=(rm[:, None] < M) & (rn[None, :] < N_PADDED))
        if COLUMN_SUM:
            column_sum += tl.sum(g.to(ACC_DTYPE), axis=0)
    if COLUMN_SUM:
        if SCALE:
            column_sum = column_sum * dropout_scale(p, ACC_DTYPE)
        tl.store(grad_bias_ptr + rn, column_sum.to(grad_bias_ptr.dtype.element_ty), mask=rn < N)


def _configs(tiles):
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk},
                          num_stages=stages, num_warps=warps)
            for bm, bn, bk, stages, warps in tiles]


# Hopper tiles for AlexNet's FC layers at batch 128 (M = 128; N, K in 1000..9216), one list
# per operand width, none that spills at AlexNet's shapes (bench.static --full). The first of
# each is the one the static report compiles as the launcher's choice, and the tile that
# split_k plans the programs for: one row tile of 128 covers the batch, so each weight
# element is read by one program. 16-bit: 128 x 64 (two programs per SM fit; half the
# float32 partial sums per program of 128 x 128); 32-bit: 128 x 128, the largest FFMA tile
# per thread that does not spill (fewest shared-memory loads per FFMA). Every BLOCK_K
# divides _SPLIT_ALIGN, so a split never ends inside a k-step. Every 16- and 32-bit tile
# meets issue 11's budgets at every FC launch (bench.static --full); those that did not are
# gone: 16-bit 128 x 128 (72 to 128 programs where split_k planned for 128 x 64), 64 x 32
# (issue ratio 1.11-1.19); 32-bit 128 x 32 and 32 x 64 (ieee FFMA 1.2 and more). float64
# takes the last 32-bit tile, the one it always fits in shared memory, and only it; on a
# GPU with less shared memory than Hopper's float32 takes it too, where its own may not fit
# (128 x 128 x 64 in 4 stages: 192 KiB). The float64 tile misses issue 11's issue ratio in
# float32 (1.3 and more), a Hopper budget.
_TILES_16BIT = [(128, 64, 64, 4, 4), (64, 128, 64, 4, 4), (64, 64, 64, 4, 4),
                (128, 32, 64, 4, 4)]
_TILES_32BIT = [(128, 128, 64, 4, 8), (64, 128, 64, 4, 4), (32, 32, 64, 2, 4)]
_FLOAT64_TILES = _TILES_32BIT[-1:]

# The flags are in the key: the GEMMs of one layer can share M, N and K (fc7) but not their
# best tile (nor their shared memory); nor can ieee and tf32 float32
# (tests/ops/test_autotune_keys.py), nor tf32 operands staged through registers and not,
# nor operands read through TMA descriptors and through plain loads, whose shared memory
# differs (the descriptors' barriers and swizzled layouts). K_CHUNK is the reduction each
# program runs.
_KEY = ["M", "N", "K", "K_CHUNK", "PARTIAL", "EVEN_K", "HAS_BIAS", "RELU", "DROPOUT", "SCALE",
        "INPUT_PRECISION", "STAGE_A", "STAGE_B", "A_DESCRIPTOR", "A_TRANSPOSED",
        "B_DESCRIPTOR", "B_TRANSPOSED"]
linear_kernel_autotuned = triton.autotune(configs=_configs(_TILES_16BIT), key=_KEY)(linear_kernel)
linear_kernel_autotuned_32bit = triton.autotune(
    configs=_configs(_TILES_32BIT), key=_KEY,
    prune_configs_by={"early_config_prune": autotune_pruner(
        "linear", {4: _configs(_TILES_32BIT[:-1]), 8: _configs(_FLOAT64_TILES)}, "a_ptr",
        small=_configs(_FLOAT64_TILES))})(linear_kernel)

# A split's reduction is a whole number of these (a multiple of every config's BLOCK_K).
_SPLIT_ALIGN = 64
_EPILOGUE_BLOCKS = {"BLOCK_ROWS": 16, "BLOCK_COLS": 256}
_MASKED_GRAD_BLOCKS = {"BLOCK_ROWS": 32, "BLOCK_COLS": 64}


def _autotuned(dtype: torch.dtype):
    """(autotuner, the (BLOCK_M, BLOCK_N) of its first config) for operands of dtype."""
    if dtype.itemsize == 2:
        return linear_kernel_autotuned, _TILES_16BIT[0][:2]
    tiles = _FLOAT64_TILES if dtype.itemsize == 8 else _TILES_32BIT
    return linear_kernel_autotuned_32bit, tiles[0][:2]


def split_k(tiles: int, k_steps: int, sms: int) -> int:
    """How many programs share each output tile's reduction of k_steps steps (split-K).

    1 when the output tiles alone give every SM a program, or the reduction is one step.
    Else at least enough splits for a program per SM (issue 11's budget: >= sms programs),
    up to 4x that many: the split whose critical path (waves of sms programs, one per SM,
    times the k-steps of one split) is the shortest, the fewest splits on a tie (each split
    adds an [M, N] float32 partial to write and read back). At batch 128, fc6 forward in
    fp32 (tiles of 128 x 128): 32 tiles of 144 steps -> 8 splits (5 would leave a second
    wave of 28 programs of 29 steps: 58 steps on the critical path against 36).
    """
    if tiles >= sms or k_steps <= 1:
        return 1
    least = triton.cdiv(sms, tiles)
    best, best_path = None, None
    for split in range(least, 4 * least + 1):
        chunk = triton.cdiv(k_steps, split)
        real = triton.cdiv(k_steps, chunk)  # splits left once each has a whole chunk
        if real * tiles < sms:
            continue
        path = triton.cdiv(real * tiles, sms) * chunk
        if best_path is None or path < best_path:
            best, best_path = real, path
    return best if best is not None else k_steps  # one step each: as many as there can be


def _interpreter_blocks(K: int, split: int) -> dict:
    # One big config under the interpreter, where an op costs about the same whatever the
    # block size; the reduction tile shrinks to a short K (the batch, for grad_weight) or
    # to a forced split's share, where padding it to 128 would only multiply the work.
    share = triton.cdiv(K, split)
    return {"BLOCK_M": 128, "BLOCK_N": 128,
            "BLOCK_K": min(128, max(16, triton.next_power_of_2(share)))}


def _align(K: int, split: Optional[int]) -> int:
    """The k-step every config's BLOCK_K divides: what a split's reduction is made of."""
    return _interpreter_blocks(K, split or 1)["BLOCK_K"] if interpreting() else _SPLIT_ALIGN


def _plan(M: int, N: int, K: int, dtype: torch.dtype, device: torch.device,
          split: Optional[int]) -> Tuple[int, int]:
    """(splits, K_CHUNK) of a GEMM: `split` if given (tests force it), else split_k's."""
    align = _align(K, split)
    steps = triton.cdiv(K, align)
    if split is None:
        if interpreting():
            split = 1  # programs run one after another: a split would only add work
        else:
            tile_m, tile_n = _autotuned(dtype)[1]
            tiles = triton.cdiv(M, tile_m) * triton.cdiv(N, tile_n)
            sms = torch.cuda.get_device_properties(device).multi_processor_count
            split = split_k(tiles, steps, sms)
    if split < 1:
        raise ValueError(f"linear: split_k must be >= 1, got {split}")
    chunk = max(1, triton.cdiv(steps, split)) * align
    return max(1, triton.cdiv(K, chunk)), chunk


def tma_block_fits(block_shape: Tuple[int, ...], itemsize: int) -> bool:
    """TMA's rules for a descriptor's block (its box): at least 16 bytes along the
    innermost dimension and at most 256 elements along every dimension."""
    return block_shape[-1] * itemsize >= 16 and all(0 < d <= 256 for d in block_shape)


def descriptor_blocks(block_m: int, block_n: int, block_k: int) -> dict:
    """{(operand, transposed): block}: the block each descriptor of linear_kernel loads."""
    return {("A", False): (block_m, block_k), ("A", True): (block_k, block_m),
            ("B", False): (block_k, block_n), ("B", True): (block_n, block_k)}


def _descriptor(operand: Tensor, strides: Tuple[int, int], rows: int, cols: int,
                name: str) -> Tuple[Optional[bool], str]:
    """(transposed, why not): how linear_kernel may describe a GEMM operand seen as
    [rows, cols] with `strides`: over [rows, cols] itself (transposed False) or over its
    transpose [cols, rows] (True), whichever has the unit innermost stride TMA needs; None
    and the reason when neither meets TMA's rules."""
    transposed = strides[0] == 1 and strides[1] != 1
    shape, outer = ((cols, rows), strides[1]) if transposed else ((rows, cols), strides[0])
    if not tensor_descriptors_available():
        return None, ("this Triton or GPU has no TMA tensor descriptors "
                      "(tl.make_tensor_descriptor and a compute capability of 9.0 or more)")
    if rows == 0 or cols == 0:
        return None, f"{name} is empty ({rows} x {cols}): TMA needs every dimension >= 1"
    if 1 not in strides:
        return None, f"{name} has no unit stride (strides {tuple(strides)})"
    if 0 in strides:  # a broadcast (expanded) operand: no tensor map for rows that alias
        return None, f"{name} is broadcast (strides {tuple(strides)})"
    if not tma_compatible(operand, shape, (outer, 1)):
        return None, (f"{name} breaks TMA's alignment rules (a 16-byte aligned base, rows a "
                      f"multiple of 16 bytes apart): it starts {operand.storage_offset()} "
                      f"elements into its storage, its rows are {outer} {operand.dtype} "
                      f"elements apart")
    return transposed, ""


def _descriptors(a: Tensor, a_strides: Tuple[int, int], b: Tensor, b_strides: Tuple[int, int],
                 M: int, N: int, K: int, fma: bool, requested: Optional[bool],
                 names: Tuple[str, str]) -> dict:
    """linear_kernel's A_DESCRIPTOR, A_TRANSPOSED, B_DESCRIPTOR, B_TRANSPOSED.

    requested None: a descriptor for each operand that TMA can read, unless the product is
    FMA (fma: ieee float32); False: plain loads; True: descriptors for both, or ValueError
    saying why not.

    Both operands, not only the weight: with one operand through TMA and the other through
    cp.async, Triton 3.9's pipeline waits on both kinds each k-step (bar.syncs around the
    mbarrier arrive) and a bf16 loop gains as much as it saves (fc6 backward_input for
    sm_90a: 149 instructions per 8 HGMMA with the weight alone through TMA, 142 plain, 85
    with both). Not for FMA unless asked: there Triton 3.9 moves the TMA-swizzled tiles
    from shared memory to FMA operands through a layout conversion that spills (fp32
    fc6.forward: 9,960 B of spills, 14,264 instructions per 4,096 FFMA; 0 and 4,596 plain),
    and the plain loop's global loads are 16 of its 4,596 instructions: nothing to save.
    """
    off = dict(A_DESCRIPTOR=False, A_TRANSPOSED=False, B_DESCRIPTOR=False, B_TRANSPOSED=False)
    if requested is False or (requested is None and fma):
        return off
    flags = dict(off)
    for operand, tensor, strides, rows, cols, name in (("A", a, a_strides, M, K, names[0]),
                                                       ("B", b, b_strides, K, N, names[1])):
        transposed, why = _descriptor(tensor, strides, rows, cols, name)
        if transposed is None and requested:
            raise ValueError(f"linear: tensor_descriptors=True, but {why}")
        flags[f"{operand}_DESCRIPTOR"] = transposed is not None
        flags[f"{operand}_TRANSPOSED"] = bool(transposed)
    return flags


def _gemm(a: Tensor, a_strides: Tuple[int, int], b: Tensor, b_strides: Tuple[int, int],
          c: Tensor, M: int, N: int, K: int, *, bias: Optional[Tensor] = None,
          relu: bool = False, p: float = 0.0, seed: Optional[Tensor] = None,
          scale: bool = False, split: Optional[int] = None,
          a_padded: Optional[Tuple[int, int]] = None,
          tensor_descriptors: Optional[bool] = None,
          names: Tuple[str, str] = ("A", "B")) -> None:
    """C[M, N] (contiguous) = epilogue(A[M, K] @ B[K, N]), A and B given by their strides;
    A readable up to a_padded = (M_A, K_A), zeros beyond [M, K] (default: [M, K]).
    tensor_descriptors: how A and B (named `names` in errors) are read (_descriptors)."""
    if M == 0 or N == 0:
        return  # nothing to store (grad_bias, the one sum over an empty batch, is not here)
    acc_dtype = accumulator(a.dtype)
    tf32 = a.dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32
    precision = "tf32" if tf32 else "ieee"
    descriptors = _descriptors(a, a_strides, b, b_strides, M, N, K,
                               a.dtype == torch.float32 and not tf32, tensor_descriptors, names)
    splits, chunk = _plan(M, N, K, a.dtype, c.device, split)
    epilogue = dict(HAS_BIAS=bias is not None, RELU=relu, DROPOUT=seed is not None, SCALE=scale)
    # Unused pointers still need a tensor; C stands in and is never read through them.
    bias_arg = c if bias is None else bias
    seed_arg = c if seed is None else seed
    if splits == 1:
        out, out_strides, flags = c, (0, c.stride(0), c.stride(1)), epilogue
    else:
        # Every (split, row, column) element is written by exactly one program.
        # Rows padded to 16 elements: the epilogue kernel's loads stay whole 16-byte vectors.
        workspace = torch.empty((splits, M, _padded(N)), device=c.device,
                                dtype=accumulation_dtype(a.dtype))
        out = workspace[:, :, :N]
        out_strides = out.stride()
        flags = dict.fromkeys(epilogue, False)
    M_A, K_A = (M, K) if a_padded is None else a_padded
    # Every config's BLOCK_K divides the alignment: one answer for all of them.
    align = _align(K, split)
    even_k = K % align == 0 and K_A % align == 0
    args = (a, b, out, bias_arg, seed_arg, M, N, K, M_A, K_A, chunk,
            *a_strides, *b_strides, *out_strides, float(p))
    # tf32 operands contiguous along M or N (the backward passes') go through registers,
    # from plain loads or from a descriptor's tile (tf32 grad_weight through TMA: 176
    # instructions per 8 HGMMA staged, 215 not).
    stage = tf32 and not interpreting()
    flags = dict(PARTIAL=splits > 1, EVEN_K=even_k, **flags, ACC_DTYPE=acc_dtype,
                 INPUT_PRECISION=precision, **descriptors,
                 STAGE_A=stage and a_strides[1] != 1, STAGE_B=stage and b_strides[0] != 1)
    # K = 0 still launches: the programs store the epilogue of zero sums.
    with descriptor_scratch(c.device):
        if interpreting():
            blocks = _interpreter_blocks(K, split or 1)
            grid = (triton.cdiv(M, blocks["BLOCK_M"]), triton.cdiv(N, blocks["BLOCK_N"]),
                    splits)
            launchable(linear_kernel)[grid](*args, **flags, **blocks)
        else:
            def grid(meta):
                return (triton.cdiv(M, meta["BLOCK_M"]), triton.cdiv(N, meta["BLOCK_N"]),
                        splits)
            launchable(_autotuned(a.dtype)[0])[grid](*args, **flags)
    if splits > 1:
        blocks = ({"BLOCK_ROWS": 128, "BLOCK_COLS": 128} if interpreting()
                  else _EPILOGUE_BLOCKS)
        grid = (triton.cdiv(M, blocks["BLOCK_ROWS"]), triton.cdiv(N, blocks["BLOCK_COLS"]))
        launchable(linear_epilogue_kernel)[grid](
            out, c, bias_arg, seed_arg, M, N, splits, out.stride(0), out.stride(1), float(p),
            **epilogue,
            ACC_DTYPE=acc_dtype, **blocks)


def _padded(n: int) -> int:
    """n rounded up to a multiple of 16: Triton specializes such sizes and strides and then
    proves masked loads uniform over 16-byte vectors."""
    return triton.cdiv(n, 16) * 16


def _masked_grad(grad_output: Tensor, output: Optional[Tensor], p: float,
                 grad_bias: Optional[Tensor] = None) -> Tuple[Tensor, int]:
    """(g, N_A): g = grad_output * (output > 0), [M, N] with row stride N_A >= N and zeros
    in columns N..N_A-1, where the GEMMs may read it in whole vectors; grad_output itself
    (N_A = N) when there is no output to mask with and N is a multiple of 16. With
    grad_bias given, also grad_bias = g.sum(0) / (1 - p)."""
    M, N = grad_output.shape
    store = output is not None or N % 16 != 0
    if not store and grad_bias is None:
        return grad_output, N
    masked, width = grad_output, N
    if store:
        width = _padded(N)
        masked = torch.empty((M, width), device=grad_output.device,
                             dtype=grad_output.dtype)[:, :N]
    if N == 0:
        return masked, width
    out = grad_output if output is None else output
    blocks = ({"BLOCK_ROWS": 128, "BLOCK_COLS": 1024} if interpreting()
              else _MASKED_GRAD_BLOCKS)
    launchable(linear_masked_grad_kernel)[(triton.cdiv(width, blocks["BLOCK_COLS"]),)](
        grad_output, out, masked, masked if grad_bias is None else grad_bias, M, N, width,
        *grad_output.stride(), *out.stride(), float(p),
        MASK=output is not None, STORE=store, COLUMN_SUM=grad_bias is not None,
        SCALE=p > 0, ACC_DTYPE=accumulator(grad_output.dtype), **blocks)
    return masked, width


def linear_forward(input: Tensor, weight: Tensor, bias: Optional[Tensor], relu: bool, p: float,
                   seed: Optional[Tensor], *, split: Optional[int] = None,
                   tensor_descriptors: Optional[bool] = None) -> Tensor:
    """input [M, K], weight [N, K], bias [N] -> dropout(relu(input @ weight.T + bias)) [M, N].

    split: how many programs share each output tile's reduction (None: split_k's choice).
    tensor_descriptors: whether the GEMM reads its operands (input, weight) through TMA
    descriptors. None: each operand whose alignment allows, where Triton and the GPU have
    them and the product is not ieee float32's FMA; False: plain loads; True: descriptors
    for both, or ValueError saying why not.
    """
    if input.dim() != 2 or weight.dim() != 2 or input.shape[1] != weight.shape[1]:
        raise ValueError("linear_forward: input must be [M, K] and weight [N, K]")
    M, K = input.shape
    N = weight.shape[0]
    if seed is not None:
        if seed.dtype != torch.int64 or seed.numel() != 1 or seed.device != input.device:
            raise ValueError("linear_forward: seed must be a one-element int64 tensor on the "
                             "input's device")
        if M * N >= 2**31:
            raise ValueError(f"linear_forward: {M * N} elements exceed the int32 Philox offsets")
    if bias is not None:
        bias = bias.contiguous()
    output = torch.empty((M, N), device=input.device, dtype=input.dtype)  # [M, N]
    # B = weight.T [K, N], read through the weight's strides.
    _gemm(input, (input.stride(0), input.stride(1)), weight, (weight.stride(1), weight.stride(0)),
          output, M, N, K, bias=bias, relu=relu, p=p, seed=seed, scale=seed is not None,
          split=split, tensor_descriptors=tensor_descriptors, names=("input", "weight"))
    return output


def linear_backward_input(grad_output: Tensor, output: Optional[Tensor], weight: Tensor,
                          p: float, *, split: Optional[int] = None,
                          tensor_descriptors: Optional[bool] = None) -> Tensor:
    """grad_input [M, K] = g' @ weight, g' = grad_output / (1 - p) * (output > 0).

    p is the forward's dropout probability, 0 when it had no dropout.

    With ReLU and dropout the output is positive exactly where the element was kept and
    its pre-activation was positive, so output > 0 times 1/(1-p) is their whole backward.
    Without output (no ReLU) there is no mask. split, tensor_descriptors (for g' and the
    weight): as in linear_forward.
    """
    M, N = grad_output.shape
    K = weight.shape[1]
    if weight.shape[0] != N or (output is not None and output.shape != grad_output.shape):
        raise ValueError("linear_backward_input: grad_output and output must be [M, N], "
                         "weight [N, K]")
    grad_input = torch.empty((M, K), device=grad_output.device, dtype=grad_output.dtype)
    masked, width = _masked_grad(grad_output, output, p)  # [M, N], zeros up to width
    _gemm(masked, (masked.stride(0), masked.stride(1)),
          weight, (weight.stride(0), weight.stride(1)), grad_input, M, K, N,
          p=p, scale=p > 0, split=split, a_padded=(M, width),
          tensor_descriptors=tensor_descriptors, names=("grad_output", "weight"))
    return grad_input


def linear_backward_weight(grad_output: Tensor, output: Optional[Tensor], input: Tensor,
                           p: float, *, split: Optional[int] = None,
                           tensor_descriptors: Optional[bool] = None) -> Tuple[Tensor, Tensor]:
    """grad_weight [N, K] = g'.T @ input and grad_bias [N] = g'.sum(0).

    g' is as in linear_backward_input. The reduction runs over the batch M, short for
    AlexNet (128): at batch 128 the output tiles alone fill the SMs, and split_k leaves it
    whole. split, tensor_descriptors (for g' and the input): as in linear_forward.
    """
    M, N = grad_output.shape
    K = input.shape[1]
    if input.shape[0] != M or (output is not None and output.shape != grad_output.shape):
        raise ValueError("linear_backward_weight: grad_output and output must be [M, N], "
                         "input [M, K]")
    grad_weight = torch.empty((N, K), device=grad_output.device, dtype=grad_output.dtype)
    grad_bias = torch.empty((N,), device=grad_output.device, dtype=grad_output.dtype)
    masked, width = _masked_grad(grad_output, output, p, grad_bias)  # [M, N], zeros up to width
    # A = g'.T [N, M], through transposed strides.
    _gemm(masked, (masked.stride(1), masked.stride(0)),
          input, (input.stride(0), input.stride(1)), grad_weight, N, K, M,
          p=p, scale=p > 0, split=split, a_padded=(width, M),
          tensor_descriptors=tensor_descriptors, names=("grad_output", "input"))
    return grad_weight, grad_bias

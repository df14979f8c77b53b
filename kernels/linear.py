"""Fully connected layer (AlexNet's fc6, fc7, fc8) as one fused GEMM kernel, forward and backward.

The forward computes ``dropout(relu(input @ weight.T + bias))`` with bias, ReLU and the
Philox dropout mask of kernels/dropout.py in the GEMM's epilogue. The two backward GEMMs
use the same kernel on transposed strides (no copies): ``grad_input = g' @ weight`` and
``grad_weight = g'.T @ input``, where ``g' = grad_output / (1 - p) * (output > 0)`` is
formed as grad_output is loaded, and ``grad_bias = g'.sum(0)`` is summed in the weight
gradient's pass.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from alexnet_triton.kernels import accumulator, interpreting, launchable
from alexnet_triton.kernels.dropout import dropout_keep, dropout_scale


@triton.jit
def linear_kernel(
    a_ptr, b_ptr, c_ptr, bias_ptr, a_mask_ptr, row_sum_ptr, seed_ptr,
    M, N, K,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
    stride_mask_m, stride_mask_k,
    p,
    HAS_BIAS: tl.constexpr, RELU: tl.constexpr, DROPOUT: tl.constexpr, SCALE: tl.constexpr,
    MASK_A: tl.constexpr, ROW_SUM: tl.constexpr,
    ACC_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """C[M, N] = scale * relu(A'[M, K] @ B[K, N] + bias[N]), A' = A * (a_mask > 0).

    Bias (HAS_BIAS), ReLU (RELU) and the mask on A (MASK_A) are each optional; scale is
    dropout's 1/(1-p) with SCALE, else 1. DROPOUT zeroes the elements that dropout drops
    (C must be contiguous [M, N]: the mask is drawn on its flat index). ROW_SUM also stores
    scale * A'.sum(1) into row_sum[M], from the programs of the first column tile so that
    no two programs write the same element.
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    # int64 offsets: fc6's weight alone has 37.7M elements and strides can be anything.
    rm64 = rm.to(tl.int64)
    rn64 = rn.to(tl.int64)
    rk64 = rk.to(tl.int64)
    a_ptrs = a_ptr + rm64[:, None] * stride_am + rk64[None, :] * stride_ak  # [BLOCK_M, BLOCK_K]
    b_ptrs = b_ptr + rk64[:, None] * stride_bk + rn64[None, :] * stride_bn  # [BLOCK_K, BLOCK_N]
    mask_ptrs = a_mask_ptr + rm64[:, None] * stride_mask_m + rk64[None, :] * stride_mask_k
    step = tl.full([], BLOCK_K, tl.int64)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    row_sum = tl.zeros((BLOCK_M,), dtype=ACC_DTYPE)
    for k in range(0, K, BLOCK_K):
        a_in_bounds = (rm[:, None] < M) & (rk[None, :] < K - k)
        a = tl.load(a_ptrs, mask=a_in_bounds, other=0.0)
        b = tl.load(b_ptrs, mask=(rk[:, None] < K - k) & (rn[None, :] < N), other=0.0)
        if MASK_A:
            # ReLU's backward (and dropout's, see linear_backward_input) as A is loaded.
            a_mask = tl.load(mask_ptrs, mask=a_in_bounds, other=0.0)
            a = tl.where(a_mask > 0, a, tl.zeros_like(a))
            mask_ptrs += step * stride_mask_k
        if ROW_SUM:
            if pid_n == 0:
                row_sum += tl.sum(a.to(ACC_DTYPE), axis=1)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION,
                     out_dtype=ACC_DTYPE)
        a_ptrs += step * stride_ak
        b_ptrs += step * stride_bk

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
        # The rule of kernels/dropout.py on the flat index of C (int32, checked by the
        # launcher), so the fused mask equals the standalone dropout's mask.
        keep = dropout_keep(tl.load(seed_ptr), rm[:, None] * N + rn[None, :], p)
        acc = tl.where(keep, acc, 0.0)
    c_ptrs = c_ptr + rm64[:, None] * stride_cm + rn64[None, :] * stride_cn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=(rm[:, None] < M) & (rn[None, :] < N))
    if ROW_SUM:
        if pid_n == 0:
            if SCALE:
                row_sum = row_sum * dropout_scale(p, ACC_DTYPE)
            tl.store(row_sum_ptr + rm, row_sum.to(row_sum_ptr.dtype.element_ty), mask=rm < M)


def _configs():
    # Hopper tiles for AlexNet's FC layers at batch 128 (M=128; N, K in 1000..9216): with
    # one or two row tiles, the column tile sets how many of the 132 SMs get work.
    # The small last tile keeps fc8 (N=1000) busy and is the one float64 always fits in
    # shared memory (the others may fail to compile there and are skipped).
    tiles = [(128, 128, 64, 4, 8), (128, 64, 64, 4, 4), (64, 128, 64, 4, 4),
             (64, 64, 64, 4, 4), (64, 64, 128, 3, 4), (128, 32, 64, 4, 4),
             (32, 64, 64, 4, 4), (64, 32, 64, 4, 4), (32, 32, 64, 2, 4)]
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk},
                          num_stages=stages, num_warps=warps)
            for bm, bn, bk, stages, warps in tiles]


# The flags are in the key: the three GEMMs of one layer can share M, N and K (fc7) but
# not their best tile, nor their shared memory (MASK_A loads a third tile); nor can ieee
# and tf32 float32 (tests/ops/test_autotune_keys.py).
linear_kernel_autotuned = triton.autotune(
    configs=_configs(),
    key=["M", "N", "K", "HAS_BIAS", "RELU", "DROPOUT", "MASK_A", "ROW_SUM", "INPUT_PRECISION"],
)(linear_kernel)


def _interpreter_blocks(K: int) -> dict:
    # One big config under the interpreter, where an op costs about the same whatever the
    # block size; the reduction tile shrinks to a short K (the batch, for grad_weight),
    # where padding it to 128 would only multiply the work of every program.
    return {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": min(128, max(16, triton.next_power_of_2(K)))}


def _gemm(a: Tensor, a_strides: Tuple[int, int], b: Tensor, b_strides: Tuple[int, int],
          c: Tensor, M: int, N: int, K: int, *, bias: Optional[Tensor] = None,
          relu: bool = False, p: float = 0.0, seed: Optional[Tensor] = None,
          a_mask: Optional[Tensor] = None, a_mask_strides: Tuple[int, int] = (0, 0),
          row_sum: Optional[Tensor] = None, scale: bool = False) -> None:
    """Launch linear_kernel for C[M, N] (contiguous) from A[M, K] and B[K, N] given by strides."""
    if M == 0:
        return
    acc_dtype = accumulator(a.dtype)
    tf32 = a.dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32
    precision = "tf32" if tf32 else "ieee"
    # Unused pointers still need a tensor; C stands in and is never read through them.
    args = (a, b, c, c if bias is None else bias, c if a_mask is None else a_mask,
            c if row_sum is None else row_sum, c if seed is None else seed,
            M, N, K, *a_strides, *b_strides, c.stride(0), c.stride(1), *a_mask_strides,
            float(p))
    flags = dict(HAS_BIAS=bias is not None, RELU=relu, DROPOUT=seed is not None, SCALE=scale,
                 MASK_A=a_mask is not None, ROW_SUM=row_sum is not None,
                 ACC_DTYPE=acc_dtype, INPUT_PRECISION=precision)
    # At least one column tile, so that row_sum is written even when N is 0.
    if interpreting():
        blocks = _interpreter_blocks(K)
        grid = (triton.cdiv(M, blocks["BLOCK_M"]), max(1, triton.cdiv(N, blocks["BLOCK_N"])))
        launchable(linear_kernel)[grid](*args, **flags, **blocks)
    else:
        def grid(meta):
            return (triton.cdiv(M, meta["BLOCK_M"]), max(1, triton.cdiv(N, meta["BLOCK_N"])))
        launchable(linear_kernel_autotuned)[grid](*args, **flags)


def linear_forward(input: Tensor, weight: Tensor, bias: Optional[Tensor], relu: bool, p: float,
                   seed: Optional[Tensor]) -> Tensor:
    """input [M, K], weight [N, K], bias [N] -> dropout(relu(input @ weight.T + bias)) [M, N]."""
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
          output, M, N, K, bias=bias, relu=relu, p=p, seed=seed, scale=seed is not None)
    return output


def linear_backward_input(grad_output: Tensor, output: Optional[Tensor], weight: Tensor,
                          p: float) -> Tensor:
    """grad_input [M, K] = g' @ weight, g' = grad_output / (1 - p) * (output > 0).

    p is the forward's dropout probability, 0 when it had no dropout.

    With ReLU and dropout the output is positive exactly where the element was kept and
    its pre-activation was positive, so output > 0 times 1/(1-p) is their whole backward.
    Without output (no ReLU) there is no mask.
    """
    M, N = grad_output.shape
    K = weight.shape[1]
    if weight.shape[0] != N or (output is not None and output.shape != grad_output.shape):
        raise ValueError("linear_backward_input: grad_output and output must be [M, N], "
                         "weight [N, K]")
    grad_input = torch.empty((M, K), device=grad_output.device, dtype=grad_output.dtype)
    mask_strides = (0, 0) if output is None else (output.stride(0), output.stride(1))
    _gemm(grad_output, (grad_output.stride(0), grad_output.stride(1)),
          weight, (weight.stride(0), weight.stride(1)), grad_input, M, K, N,
          a_mask=output, a_mask_strides=mask_strides, p=p, scale=p > 0)
    return grad_input


def linear_backward_weight(grad_output: Tensor, output: Optional[Tensor], input: Tensor,
                           p: float) -> Tuple[Tensor, Tensor]:
    """grad_weight [N, K] = g'.T @ input and grad_bias [N] = g'.sum(0), in one GEMM.

    g' is as in linear_backward_input. The reduction runs over the batch M, short for
    AlexNet (128), so the whole of it stays in one program: no split-K, no atomics.
    """
    M, N = grad_output.shape
    K = input.shape[1]
    if input.shape[0] != M or (output is not None and output.shape != grad_output.shape):
        raise ValueError("linear_backward_weight: grad_output and output must be [M, N], "
                         "input [M, K]")
    grad_weight = torch.empty((N, K), device=grad_output.device, dtype=grad_output.dtype)
    grad_bias = torch.empty((N,), device=grad_output.device, dtype=grad_output.dtype)
    # A = g'.T [N, M] and its mask output.T, both through transposed strides.
    mask_strides = (0, 0) if output is None else (output.stride(1), output.stride(0))
    _gemm(grad_output, (grad_output.stride(1), grad_output.stride(0)),
          input, (input.stride(0), input.stride(1)), grad_weight, N, K, M,
          a_mask=output, a_mask_strides=mask_strides, row_sum=grad_bias, p=p, scale=p > 0)
    return grad_weight, grad_bias

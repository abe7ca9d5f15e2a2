"""The Triton passes of :func:`vidcompress.kernels.pairwise`.

* ``_prepare_kernel`` — one pass over an operand ``[B, M, D]`` (any strides, unit stride along ``D``): the float32
  squared norm of every row and, when asked, the split of the row into bf16 ``hi = bf16(x)`` and
  ``lo = bf16(x - hi)``, written side by side as one ``[B, M, 2D]`` tensor.
* ``_dot_kernel`` — a plain tensor-core GEMM over slices of ``D`` (each slice's float32 accumulation starts from
  zero; all product terms included: ``hi hi'``, ``hi lo'`` and ``lo hi'`` for split operands, one for a 16-bit
  operand). Fused: one program per (``BLOCK_M`` x ``BLOCK_N`` tile, batch entry) sums its slices in order and writes
  the cosine, cosine distance or Euclidean distance itself. Otherwise one program per (tile, batch entry, slice)
  writes its slice's float32 partial products, which gives the small per-frame matrices (196 x 196 x 3584) enough
  programs when there are few frames; nothing is accumulated atomically.
* ``_finish_kernel`` (unfused only) — one pass over the ``[B, M, N]`` matrix: sums the partial products in slice
  order (deterministic), then forms the result from the squared norms and divides by ``divide_by``.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from .._dispatch import interpreter_active

__all__ = ["pairwise_dots", "prepare_operand", "slice_plan"]

#: Widest slice of ``D`` over which one float32 accumulation runs by default (see :func:`pairwise_dots`).
SLICE_WIDTH = 1024
#: Output tiles per SM from which one launch with the slices summed in each program is chosen (no partial products).
FUSED_PROGRAMS_PER_SM = 1.5

_KIND_CODES = {"dot": 0, "cosine": 1, "cosine_distance": 2, "euclidean": 3}


@triton.jit
def _prepare_kernel(
    x_ptr,
    square_ptr,
    parts_ptr,
    rows,
    dim,
    stride_b,
    stride_m,
    NORMS: tl.constexpr,
    SPLIT: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    batch = tl.program_id(1).to(tl.int64)
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    r_in = r < rows
    source = x_ptr + batch * stride_b + r[:, None].to(tl.int64) * stride_m
    target = parts_ptr + (batch * rows + r[:, None].to(tl.int64)) * (2 * dim)
    square = tl.zeros([BLOCK_R], dtype=tl.float32)
    for start in range(0, dim, BLOCK_D):
        d = start + tl.arange(0, BLOCK_D)
        mask = r_in[:, None] & (d < dim)[None, :]
        x = tl.load(source + d[None, :], mask=mask, other=0.0).to(tl.float32)
        if NORMS:
            square += tl.sum(x * x, axis=1)
        if SPLIT:
            hi = x.to(tl.bfloat16)
            tl.store(target + d[None, :], hi, mask=mask)
            tl.store(target + dim + d[None, :], (x - hi.to(tl.float32)).to(tl.bfloat16), mask=mask)
    if NORMS:
        tl.store(square_ptr + batch * rows + r, square, mask=r_in)


@triton.jit
def _slice_dot(
    x_rows, y_rows, i_in, j_in, first, last, dim,
    X_SPLIT: tl.constexpr, Y_SPLIT: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """``[BLOCK_M, BLOCK_N]`` float32 dot products of the tile's rows over columns ``first .. last - 1``."""
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    # the terms' parts (hi at offset 0, lo at offset dim of a split row): hi hi', then hi lo' and / or lo hi'
    for term in tl.static_range(1 + X_SPLIT + Y_SPLIT):
        x_offset = dim if (X_SPLIT and term == 1 + Y_SPLIT) else 0
        y_offset = dim if (Y_SPLIT and term == 1) else 0
        for start in range(first, last, BLOCK_D):
            d = start + tl.arange(0, BLOCK_D)
            d_in = d < dim
            a = tl.load(x_rows + x_offset + d[None, :], mask=i_in[:, None] & d_in[None, :], other=0.0)
            b = tl.load(y_rows + y_offset + d[None, :], mask=j_in[:, None] & d_in[None, :], other=0.0)
            if UPCAST:
                acc = tl.dot(a.to(tl.float32), tl.trans(b.to(tl.float32)), acc, input_precision="ieee")
            else:
                acc = tl.dot(a, tl.trans(b), acc)
    return acc


@triton.jit
def _finished(result, square_x_ptr, square_y_ptr, batch, rows, cols, i, j, i_in, j_in, eps, divide_by,
              KIND: tl.constexpr):
    """``kind`` of the summed dot products ``result`` ``[BLOCK_M, BLOCK_N]`` of rows ``i`` and columns ``j``."""
    if KIND != 0:
        square_x = tl.load(square_x_ptr + batch * rows + i, mask=i_in, other=0.0)
        square_y = tl.load(square_y_ptr + batch * cols + j, mask=j_in, other=0.0)
    if KIND == 3:
        result = tl.sqrt(tl.maximum(square_x[:, None] + square_y[None, :] - 2.0 * result, 0.0))
    elif KIND != 0:
        norm_x = tl.maximum(tl.sqrt(square_x), eps)
        norm_y = tl.maximum(tl.sqrt(square_y), eps)
        result = result / (norm_x[:, None] * norm_y[None, :])
        if KIND == 2:
            result = 1.0 - result
    return result / divide_by


@triton.jit
def _dot_kernel(
    x_ptr,
    y_ptr,
    partial_ptr,
    square_x_ptr,
    square_y_ptr,
    batches,
    rows,
    cols,
    dim,
    slices,
    slice_width,
    stride_xb,
    stride_xm,
    stride_yb,
    stride_yn,
    eps,
    divide_by,
    X_SPLIT: tl.constexpr,
    Y_SPLIT: tl.constexpr,
    UPCAST: tl.constexpr,
    FUSED: tl.constexpr,
    KIND: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    batch = tl.program_id(1).to(tl.int64)
    tiles_n = tl.cdiv(cols, BLOCK_N)
    i = (tl.program_id(0) // tiles_n) * BLOCK_M + tl.arange(0, BLOCK_M)
    j = (tl.program_id(0) % tiles_n) * BLOCK_N + tl.arange(0, BLOCK_N)
    i_in = i < rows
    j_in = j < cols
    x_rows = x_ptr + batch * stride_xb + i[:, None].to(tl.int64) * stride_xm
    y_rows = y_ptr + batch * stride_yb + j[:, None].to(tl.int64) * stride_yn
    tile = (batch * rows + i[:, None]) * cols + j[None, :]
    if FUSED:  # every slice here, summed in order, then the finished value: no partial products leave the program
        total = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for piece in range(0, slices):
            first = piece * slice_width
            total += _slice_dot(x_rows, y_rows, i_in, j_in, first, tl.minimum(first + slice_width, dim), dim,
                                X_SPLIT, Y_SPLIT, UPCAST, BLOCK_M, BLOCK_N, BLOCK_D)
        total = _finished(total, square_x_ptr, square_y_ptr, batch, rows, cols, i, j, i_in, j_in, eps, divide_by, KIND)
        tl.store(partial_ptr + tile, total, mask=i_in[:, None] & j_in[None, :])
    else:  # one slice per program, written for _finish_kernel
        first = tl.program_id(2) * slice_width
        acc = _slice_dot(x_rows, y_rows, i_in, j_in, first, tl.minimum(first + slice_width, dim), dim,
                         X_SPLIT, Y_SPLIT, UPCAST, BLOCK_M, BLOCK_N, BLOCK_D)
        tl.store(partial_ptr + tl.program_id(2).to(tl.int64) * batches * rows * cols + tile, acc,
                 mask=i_in[:, None] & j_in[None, :])


@triton.jit
def _finish_kernel(
    partial_ptr,
    out_ptr,
    square_x_ptr,
    square_y_ptr,
    parts,
    batches,
    rows,
    cols,
    eps,
    divide_by,
    KIND: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    batch = tl.program_id(2).to(tl.int64)
    i = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    j = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    i_in = i < rows
    j_in = j < cols
    mask = i_in[:, None] & j_in[None, :]
    offset = (batch * rows + i[:, None].to(tl.int64)) * cols + j[None, :]
    result = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for part in range(0, parts):
        result += tl.load(partial_ptr + part * batches * rows * cols + offset, mask=mask, other=0.0)
    result = _finished(result, square_x_ptr, square_y_ptr, batch, rows, cols, i, j, i_in, j_in, eps, divide_by, KIND)
    tl.store(out_ptr + offset, result, mask=mask)


def prepare_operand(
    x: torch.Tensor, split: bool, norms: bool, block_r: int = 4, block_d: int = 512, num_warps: int = 4
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(operand, squared norms)`` of ``x`` ``[B, M, D]`` (unit stride along ``D``): the operand is ``x`` itself
    or, with ``split``, the contiguous bf16 ``[B, M, 2D]`` tensor ``hi | lo``; the float32 ``[B, M]`` squared norms
    when ``norms``."""
    if not split and not norms:
        return x, None
    batch, rows, dim = x.shape
    square = torch.empty(batch, rows, dtype=torch.float32, device=x.device) if norms else x
    parts = torch.empty(batch, rows, 2 * dim, dtype=torch.bfloat16, device=x.device) if split else x
    _prepare_kernel[(triton.cdiv(rows, block_r), batch)](
        x, square, parts, rows, dim, x.stride(0), x.stride(1),
        NORMS=norms, SPLIT=split, BLOCK_R=block_r, BLOCK_D=min(block_d, triton.next_power_of_2(dim)),
        num_warps=num_warps,
    )
    return (parts if split else x), (square if norms else None)


@functools.cache
def _multiprocessors(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def slice_plan(dim: int, block_d: int, slices: int) -> tuple[int, int]:
    """``(slices, slice_width)``: at most ``slices`` slices of ``D``, each a whole number of ``block_d`` chunks and
    none empty (fewer slices than asked when ``D`` has too few chunks to give each one)."""
    chunks = triton.cdiv(dim, block_d)
    slice_width = triton.cdiv(chunks, max(1, min(slices, chunks))) * block_d
    return triton.cdiv(dim, slice_width), slice_width


def pairwise_dots(
    x: torch.Tensor,
    y: torch.Tensor,
    dim: int,
    x_split: bool,
    y_split: bool,
    out: torch.Tensor,
    square_x: torch.Tensor | None,
    square_y: torch.Tensor | None,
    kind: str,
    eps: float,
    divide_by: float,
    block_m: int = 64,
    block_n: int = 128,
    block_d: int = 64,
    slices: int | None = None,
    fused: bool | None = None,
    num_warps: int = 4,
    num_stages: int = 4,
) -> torch.Tensor:
    """Write ``kind`` of the dot products of the operands (``x`` ``[B, M, D]`` or, split, ``[B, M, 2D]`` bf16
    ``hi | lo``; likewise ``y``) into ``out`` ``[B, M, N]``, accumulated over ``slices`` consecutive slices of ``D``.

    ``slices=None``: slices of at most :data:`SLICE_WIDTH` (the tensor cores' float32 accumulation over 3584 terms
    lands ~1e-5 from float64 on an H100, over 4 slices of 896 ~2e-6, closer than the float32 CUDA-core reference).
    ``fused``: each program sums its tile's slices itself and writes the finished value (one launch), which the
    default chooses when the output tiles alone give every SM :data:`FUSED_PROGRAMS_PER_SM` programs; otherwise the
    slices are spread over more programs (until ~2 per SM) that write float32 partial products, and a second pass
    sums them in slice order and finishes. The default tile (64 x 128, 4 stages) was the fastest of 8 configurations
    on an H100 at 32 x 196 x 3584 (``.probe`` sweep of 2026-12-05: 52 us bf16, 119 us split float32, against 55 / 150
    us for 64 x 64 x 3 stages)."""
    batch, rows = x.shape[0], x.shape[1]
    cols = y.shape[1]
    block_m = max(16, min(block_m, triton.next_power_of_2(rows)))
    block_n = max(16, min(block_n, triton.next_power_of_2(cols)))
    block_d = max(16, min(block_d, triton.next_power_of_2(dim)))
    tiles = triton.cdiv(rows, block_m) * triton.cdiv(cols, block_n)
    processors = _multiprocessors(x.device) if x.is_cuda else 1
    if fused is None:
        fused = tiles * batch >= FUSED_PROGRAMS_PER_SM * processors
    if slices is None:
        slices = triton.cdiv(dim, SLICE_WIDTH)
        if not fused:
            slices = max(slices, triton.cdiv(2 * processors, tiles * batch))
    slices, slice_width = slice_plan(dim, block_d, slices)
    partial = out if fused else torch.empty(slices, batch, rows, cols, dtype=torch.float32, device=x.device)
    code = _KIND_CODES[kind]
    square_x = partial if square_x is None else square_x
    square_y = partial if square_y is None else square_y
    _dot_kernel[(tiles, batch, 1 if fused else slices)](
        x, y, partial, square_x, square_y, batch, rows, cols, dim, slices, slice_width,
        x.stride(0), x.stride(1), y.stride(0), y.stride(1), eps, divide_by,
        X_SPLIT=x_split, Y_SPLIT=y_split,
        # Triton's interpreter computes bf16 tl.dot wrongly; there the exact fp32 products are used instead (what a
        # 16-bit tensor-core dot accumulates)
        UPCAST=interpreter_active(), FUSED=fused, KIND=code,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
        num_warps=num_warps, num_stages=num_stages,
    )
    if not fused:
        finish_block_m, finish_block_n = 32, 64
        grid = (triton.cdiv(rows, finish_block_m), triton.cdiv(cols, finish_block_n), batch)
        _finish_kernel[grid](
            partial, out, square_x, square_y, slices, batch, rows, cols, eps, divide_by,
            KIND=code, BLOCK_M=finish_block_m, BLOCK_N=finish_block_n, num_warps=4,
        )
    return out

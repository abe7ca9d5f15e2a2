"""Sorted (CSR) segment mean: one program per (segment, D-block), fp32 accumulation, no atomics."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["launch_segment_mean"]


@triton.jit
def _segment_mean_kernel(
    x_ptr,
    members_ptr,
    offsets_ptr,
    weights_ptr,
    out_ptr,
    dim,
    stride_x,
    stride_out,
    HAS_WEIGHTS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    segment = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    col_mask = cols < dim
    start = tl.load(offsets_ptr + segment)
    end = tl.load(offsets_ptr + segment + 1)
    acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    weight_sum = tl.zeros([BLOCK_M], dtype=tl.float32)
    for first in range(start, end, BLOCK_M):
        slots = first + tl.arange(0, BLOCK_M)
        slot_mask = slots < end
        rows = tl.load(members_ptr + slots, mask=slot_mask, other=0).to(tl.int64)
        tile = tl.load(
            x_ptr + rows[:, None] * stride_x + cols[None, :],
            mask=slot_mask[:, None] & col_mask[None, :],
            other=0.0,
        ).to(tl.float32)
        if HAS_WEIGHTS:
            w = tl.load(weights_ptr + rows, mask=slot_mask, other=0.0)
            tile = tile * w[:, None]
            weight_sum += w
        acc += tl.sum(tile, axis=0)
    if HAS_WEIGHTS:
        total = tl.sum(weight_sum, axis=0)
    else:
        total = (end - start).to(tl.float32)
    safe_total = tl.where(total != 0.0, total, 1.0)
    mean = tl.where(total != 0.0, acc / safe_total, 0.0)
    tl.store(out_ptr + segment.to(tl.int64) * stride_out + cols, mean.to(out_ptr.dtype.element_ty), mask=col_mask)


def launch_segment_mean(
    features: torch.Tensor,
    members: torch.Tensor,
    offsets: torch.Tensor,
    weights: torch.Tensor | None,
    out: torch.Tensor,
    block_d: int = 512,
    block_m: int = 4,
    num_warps: int = 4,
) -> torch.Tensor:
    """Launch the kernel; ``features`` ``[M, D]`` with unit column stride, ``out`` ``[K, D]`` likewise."""
    num_segments, dim = out.shape
    if num_segments == 0 or dim == 0:
        return out
    block_d = min(block_d, triton.next_power_of_2(dim))
    grid = (num_segments, triton.cdiv(dim, block_d))
    _segment_mean_kernel[grid](
        features,
        members,
        offsets,
        weights if weights is not None else features,
        out,
        dim,
        features.stride(0),
        out.stride(0),
        HAS_WEIGHTS=weights is not None,
        BLOCK_M=block_m,
        BLOCK_D=block_d,
        num_warps=num_warps,
    )
    return out

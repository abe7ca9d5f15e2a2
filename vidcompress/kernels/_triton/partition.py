"""Diversity partition: one program per frame runs every round; the residual list lives in two ping-pong rows."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["launch_partition"]


@triton.jit
def _partition_kernel(
    sim_ptr,
    buffer_ptr,
    out_ptr,
    num_tokens,
    start_length,
    keep,
    step,
    BLOCK_H: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    frame = tl.program_id(0).to(tl.int64)
    matrix = sim_ptr + frame * num_tokens * num_tokens
    rows = buffer_ptr + frame * 2 * start_length  # two rows of start_length: the current list and the next one
    half = tl.arange(0, BLOCK_H)
    length = start_length
    current = 0
    while length > keep:
        drop = tl.minimum(step, length - keep)
        evens = (length + 1) // 2
        odds = length // 2
        even_live = half < evens
        odd_live = half < odds
        source = rows + current * start_length
        target = rows + (1 - current) * start_length
        even = tl.load(source + 2 * half, mask=even_live, other=0)
        odd = tl.load(source + 2 * half + 1, mask=odd_live, other=0)
        pair = tl.load(
            matrix + even[:, None] * num_tokens + odd[None, :],
            mask=even_live[:, None] & odd_live[None, :],
            other=float("-inf"),
        )
        redundancy = tl.max(pair, axis=1)
        # stable descending rank of each even token: higher redundancy first, then the earlier position
        ahead = (redundancy[None, :] > redundancy[:, None]) | (
            (redundancy[None, :] == redundancy[:, None]) & (half[None, :] < half[:, None])
        )
        rank = tl.sum((ahead & even_live[None, :]).to(tl.int32), axis=1)
        survivors = tl.maximum(evens - drop, 0)
        tl.store(target + rank - drop, even, mask=even_live & (rank >= drop))
        tl.store(target + survivors + half, odd, mask=odd_live)
        tl.debug_barrier()
        length = survivors + odds
        current = 1 - current
    slots = tl.arange(0, BLOCK_R)
    result = tl.load(rows + current * start_length + slots, mask=slots < keep, other=0)
    tl.store(out_ptr + frame * keep + slots, result, mask=slots < keep)


def launch_partition(similarity: torch.Tensor, residual: torch.Tensor, keep: int, step: int) -> torch.Tensor:
    """``[B, keep]`` int64 from contiguous float32 ``similarity`` ``[B, N, N]`` and int64 ``residual`` ``[B, R]``."""
    frames, start_length = residual.shape
    out = torch.empty(frames, keep, dtype=torch.long, device=residual.device)
    if frames == 0:
        return out
    buffer = torch.empty(frames, 2, start_length, dtype=torch.long, device=residual.device)
    buffer[:, 0] = residual
    block_h = max(16, triton.next_power_of_2((start_length + 1) // 2))
    _partition_kernel[(frames,)](
        similarity,
        buffer,
        out,
        similarity.shape[1],
        start_length,
        keep,
        step,
        BLOCK_H=block_h,
        BLOCK_R=max(16, triton.next_power_of_2(start_length)),
        num_warps=4 if block_h <= 64 else 8,
    )
    return out

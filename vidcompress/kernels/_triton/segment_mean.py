"""Sorted (CSR) segment mean: one program per (block of segments, block of columns), fp32 accumulation, no atomics.

Bandwidth design (H100: 132 SMs, ~3.35 TB/s HBM; the merge reads ``M x D`` and writes ``K x D`` once):

* A program owns ``BLOCK_K`` consecutive segments and ``BLOCK_D`` columns. Step ``j`` gathers the ``j``-th member
  of every one of its segments at once: a ``[BLOCK_K, BLOCK_D]`` tile of ``BLOCK_K`` independent rows, loaded with
  16-byte vectors (``BLOCK_D`` contiguous columns, row strides specialised as multiples of 16), so each step keeps
  ``BLOCK_K * BLOCK_D * itemsize`` bytes in flight per program instead of one short row.
* Steps go in pairs: the two feature tiles of steps ``j`` and ``j + 1`` are loaded together (twice the bytes in
  flight per program), and the member indices of the next pair are loaded before them, so the index gather and
  the feature gather overlap: one memory latency per pair of steps. Accumulation stays in member order.
* The column block is the fastest grid axis: the programs sharing a segment block (same offsets, same member
  indices) run side by side, so the index reads after the first hit L2.
* Every output element is written exactly once; segments of a block that run out of members are masked (a masked
  lane issues no memory traffic), so uneven segment sizes cost latency, never bandwidth.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

__all__ = ["SegmentMeanConfig", "default_config", "launch_segment_mean"]

#: Streaming multiprocessors of the reference GPU (H100 SXM); only used to size the grid.
REFERENCE_SMS = 132


class SegmentMeanConfig(NamedTuple):
    """Launch parameters: segments per program, columns per program, warps per program."""

    block_k: int
    block_d: int
    num_warps: int


@triton.jit
def _segment_mean_kernel(
    x_ptr,
    members_ptr,
    offsets_ptr,
    weights_ptr,
    scale_ptr,
    out_ptr,
    num_segments,
    dim,
    stride_x,
    stride_out,
    HAS_WEIGHTS: tl.constexpr,
    HAS_SCALE: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    cols = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
    segments = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    col_mask = cols < dim
    segment_mask = segments < num_segments
    starts = tl.load(offsets_ptr + segments, mask=segment_mask, other=0)
    lengths = tl.load(offsets_ptr + segments + 1, mask=segment_mask, other=0) - starts
    longest = tl.max(lengths, axis=0)
    acc = tl.zeros([BLOCK_K, BLOCK_D], dtype=tl.float32)
    weight_sum = tl.zeros([BLOCK_K], dtype=tl.float32)
    rows = tl.load(members_ptr + starts, mask=lengths > 0, other=0).to(tl.int64)
    rows_b = tl.load(members_ptr + starts + 1, mask=lengths > 1, other=0).to(tl.int64)
    for step in range(0, longest, 2):
        live = step < lengths
        live_b = step + 1 < lengths
        next_rows = tl.load(members_ptr + starts + step + 2, mask=step + 2 < lengths, other=0).to(tl.int64)
        next_rows_b = tl.load(members_ptr + starts + step + 3, mask=step + 3 < lengths, other=0).to(tl.int64)
        tile = tl.load(
            x_ptr + rows[:, None] * stride_x + cols[None, :],
            mask=live[:, None] & col_mask[None, :],
            other=0.0,
        ).to(tl.float32)
        tile_b = tl.load(
            x_ptr + rows_b[:, None] * stride_x + cols[None, :],
            mask=live_b[:, None] & col_mask[None, :],
            other=0.0,
        ).to(tl.float32)
        if HAS_WEIGHTS:
            weight = tl.load(weights_ptr + rows, mask=live, other=0.0)
            weight_b = tl.load(weights_ptr + rows_b, mask=live_b, other=0.0)
            tile = tile * weight[:, None]
            tile_b = tile_b * weight_b[:, None]
            weight_sum += weight
            weight_sum += weight_b
        acc += tile
        acc += tile_b
        rows = next_rows
        rows_b = next_rows_b
    if HAS_WEIGHTS:
        total = weight_sum
    else:
        total = lengths.to(tl.float32)
    safe_total = tl.where(total != 0.0, total, 1.0)
    mean = tl.where((total != 0.0)[:, None], acc / safe_total[:, None], 0.0)
    if HAS_SCALE:
        mean = mean * tl.load(scale_ptr + segments, mask=segment_mask, other=0.0)[:, None]
    tl.store(
        out_ptr + segments.to(tl.int64)[:, None] * stride_out + cols[None, :],
        mean.to(out_ptr.dtype.element_ty),
        mask=segment_mask[:, None] & col_mask[None, :],
    )


def default_config(num_segments: int, dim: int, itemsize: int) -> SegmentMeanConfig:
    """The launch parameters for H100-class GPUs, picked by ``scripts/bench_kernels.py --sweep``.

    ``BLOCK_D`` spans 1 KiB of a row (512 bf16 / 256 fp32 columns: 3584 = 7 x 512 splits evenly); with 4 warps
    each thread then holds 16-byte vectors of ``BLOCK_K`` rows. ``BLOCK_K = 4`` with two member tiles per step keeps
    8 KiB per program in flight per step; in the H100 sweep (``benchmarks/results/kernels_h100.json``) it was the
    fastest of the configurations tried at 6 of the 8 sizes (80-89 % of copy bandwidth at 32-64 frames x 3584 and
    25 % retention, 73 % on the smallest grids, where one launch's latency is a quarter of the runtime). Smaller
    problems halve ``BLOCK_K`` (then ``BLOCK_D``) until the grid fills every SM about four times over.
    """
    block_d = min(triton.next_power_of_2(max(dim, 1)), max(16, 1024 // itemsize))
    block_k = 4
    target_programs = 4 * REFERENCE_SMS

    def programs(k: int, d: int) -> int:
        return triton.cdiv(num_segments, k) * triton.cdiv(dim, d)

    while block_k > 1 and programs(block_k, block_d) < target_programs:
        block_k //= 2
    while block_d > 128 and programs(block_k, block_d) < target_programs:
        block_d //= 2
    return SegmentMeanConfig(block_k=block_k, block_d=block_d, num_warps=4)


def launch_segment_mean(
    features: torch.Tensor,
    members: torch.Tensor,
    offsets: torch.Tensor,
    weights: torch.Tensor | None,
    out: torch.Tensor,
    config: SegmentMeanConfig | None = None,
    row_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Launch the kernel; ``features`` ``[M, D]`` with unit column stride, ``out`` ``[K, D]`` likewise;
    ``row_scale``: optional contiguous float32 ``[K]`` factor of each output row."""
    num_segments, dim = out.shape
    if num_segments == 0 or dim == 0:
        return out
    block_k, block_d, num_warps = config or default_config(num_segments, dim, features.element_size())
    grid = (triton.cdiv(dim, block_d), triton.cdiv(num_segments, block_k))
    _segment_mean_kernel[grid](
        features,
        members,
        offsets,
        weights if weights is not None else features,
        row_scale if row_scale is not None else features,
        out,
        num_segments,
        dim,
        features.stride(0),
        out.stride(0),
        HAS_WEIGHTS=weights is not None,
        HAS_SCALE=row_scale is not None,
        BLOCK_K=block_k,
        BLOCK_D=block_d,
        num_warps=num_warps,
    )
    return out

"""Sorted (CSR) segment mean: one program per (segment, block of columns), fp32 accumulation, no atomics.

Bandwidth design (H100: 132 SMs, ~3.35 TB/s HBM; the merge reads ``M x D`` and writes ``K x D`` once):

* A program owns ``BLOCK_K`` consecutive segments (one after the other) and ``BLOCK_D`` columns (2 KiB of a row: one
  16-byte vector per thread per row with 4 warps). It gathers ``BLOCK_L`` members of a segment at once, a
  ``[BLOCK_L, BLOCK_D]`` tile of independent rows, and reduces it along the members; ``BLOCK_L`` follows the mean
  segment length, so a typical segment is one or two tiles.
* The member indices of the next tile are loaded before the current tile's rows, so the index gather and the feature
  gather overlap: one memory latency per tile after the first.
* Feature rows are loaded with ``evict_first``: each is read once, and keeping them out of L2's retained set leaves
  it to the indices and the output. In the H100 sweep (``benchmarks/results/probes/segment_mean_probe_h100.txt``) the
  tiles with the prefetch reached 77-91 % of the copy bandwidth over the eight bf16 cases, with ``evict_first``
  80-103 % (the earlier kernel, ``BLOCK_K`` segments stepped one member at a time: 72-89 %).
* Programs of one segment's column blocks are adjacent in the 1-D grid, so its indices are read from DRAM once.
* Every output element is written exactly once; lanes past a segment's end are masked (a masked lane issues no
  memory traffic), so uneven segment sizes cost latency, never bandwidth. Within a tile the members are summed as a
  tree, tiles in member order: deterministic, not bit-equal to a sequential sum.
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
    """Launch parameters: members per tile, columns per program, warps per program, segments per program."""

    block_l: int
    block_d: int
    num_warps: int
    block_k: int


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
    column_blocks,
    HAS_WEIGHTS: tl.constexpr,
    HAS_SCALE: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    program = tl.program_id(0)
    cols = (program % column_blocks) * BLOCK_D + tl.arange(0, BLOCK_D)
    col_mask = cols < dim
    lanes = tl.arange(0, BLOCK_L)
    for k in tl.static_range(BLOCK_K):
        segment = (program // column_blocks) * BLOCK_K + k
        if segment < num_segments:
            start = tl.load(offsets_ptr + segment)
            end = tl.load(offsets_ptr + segment + 1)
            acc = tl.zeros([BLOCK_D], dtype=tl.float32)
            weight_sum = tl.zeros([BLOCK_L], dtype=tl.float32)
            rows = tl.load(members_ptr + start + lanes, mask=start + lanes < end, other=0).to(tl.int64)
            for first in range(start, end, BLOCK_L):
                live = first + lanes < end
                following = first + BLOCK_L + lanes
                next_rows = tl.load(members_ptr + following, mask=following < end, other=0).to(tl.int64)
                tile = tl.load(
                    x_ptr + rows[:, None] * stride_x + cols[None, :],
                    mask=live[:, None] & col_mask[None, :],
                    other=0.0,
                    eviction_policy="evict_first",
                ).to(tl.float32)
                if HAS_WEIGHTS:
                    weight = tl.load(weights_ptr + rows, mask=live, other=0.0)
                    tile = tile * weight[:, None]
                    weight_sum += weight
                acc += tl.sum(tile, axis=0)
                rows = next_rows
            if HAS_WEIGHTS:
                total = tl.sum(weight_sum, axis=0)
            else:
                total = (end - start).to(tl.float32)
            mean = tl.where(total != 0.0, acc / tl.where(total != 0.0, total, 1.0), 0.0)
            if HAS_SCALE:
                mean = mean * tl.load(scale_ptr + segment)
            tl.store(out_ptr + segment.to(tl.int64) * stride_out + cols, mean.to(out_ptr.dtype.element_ty),
                     mask=col_mask)


def default_config(num_segments: int, num_members: int, dim: int, itemsize: int) -> SegmentMeanConfig:
    """The launch parameters for H100-class GPUs, from the sweep in ``benchmarks/results/probes``.

    ``BLOCK_D`` spans 2 KiB of a row (1024 bf16 / 512 fp32 columns) and ``BLOCK_L`` the mean segment length
    ``num_members / num_segments`` rounded up to a power of two (2-16), two segments per program, 4 warps: the
    configuration with the best worst case over the four bf16 sizes at 10 % and 25 % retention. Smaller problems
    halve ``BLOCK_D`` (down to 256 columns), then take one segment per program, until the grid fills every SM four
    times over.
    """
    mean_length = -(-max(num_members, 1) // max(num_segments, 1))
    block_l = min(16, max(2, triton.next_power_of_2(mean_length)))
    block_d = min(triton.next_power_of_2(max(dim, 1)), max(16, 2048 // itemsize))
    block_k = 2
    target_programs = 4 * REFERENCE_SMS

    def programs(d: int, k: int) -> int:
        return triton.cdiv(num_segments, k) * triton.cdiv(dim, d)

    while block_d > 256 and programs(block_d, block_k) < target_programs:
        block_d //= 2
    if programs(block_d, block_k) < target_programs:
        block_k = 1
    return SegmentMeanConfig(block_l=block_l, block_d=block_d, num_warps=4, block_k=block_k)


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
    config = config or default_config(num_segments, members.shape[0], dim, features.element_size())
    column_blocks = triton.cdiv(dim, config.block_d)
    grid = (column_blocks * triton.cdiv(num_segments, config.block_k),)
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
        column_blocks,
        HAS_WEIGHTS=weights is not None,
        HAS_SCALE=row_scale is not None,
        BLOCK_L=config.block_l,
        BLOCK_D=config.block_d,
        BLOCK_K=config.block_k,
        num_warps=config.num_warps,
    )
    return out

"""DPC-kNN density and score: two launches of one program per (``BLOCK_R`` rows, batch entry).

``_knn_density_kernel`` holds ``BLOCK_R`` rows of the distance matrix in registers, takes the ``k`` smallest valid
distances of each row by ``k`` first-arg-min passes (each masks the entry it took, so equal distances are all
counted, as ``topk`` does), and writes the density and the row's largest valid distance. ``_delta_kernel`` reads
the same rows and the entry's densities and writes the score.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["launch_density_scores"]


@triton.jit
def _row_block(valid_ptr, n, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr):
    """This program's batch entry, its ``BLOCK_R`` rows ``i`` and the columns ``j``, with their validity flags."""
    batch = tl.program_id(1).to(tl.int64)
    i = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    j = tl.arange(0, BLOCK_N)
    valid_i = tl.load(valid_ptr + batch * n + i, mask=i < n, other=0) != 0
    valid_j = tl.load(valid_ptr + batch * n + j, mask=j < n, other=0) != 0
    return batch, i, j, valid_i, valid_j


@triton.jit
def _knn_density_kernel(
    dist_ptr,
    valid_ptr,
    k_ptr,
    density_ptr,
    row_max_ptr,
    n,
    k_max,
    BLOCK_R: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    batch, i, j, valid_i, valid_j = _row_block(valid_ptr, n, BLOCK_R, BLOCK_N)
    i_in = i < n
    pair = valid_i[:, None] & valid_j[None, :]
    d = tl.load(dist_ptr + batch * n * n + i[:, None].to(tl.int64) * n + j[None, :], mask=pair, other=float("inf"))
    row_max = tl.max(tl.where(pair, d, 0.0), axis=1)
    valid_count = tl.sum(valid_j.to(tl.int32), axis=0)
    k_row = tl.minimum(tl.load(k_ptr + batch), tl.maximum(valid_count, 1).to(tl.int64))
    total = tl.zeros([BLOCK_R], dtype=tl.float32)
    used = tl.zeros([BLOCK_R], dtype=tl.float32)
    for step in range(k_max):
        nearest, where = tl.min(d, axis=1, return_indices=True, return_indices_tie_break_left=True)
        take = (step < k_row) & (nearest < float("inf"))
        total += tl.where(take, nearest * nearest, 0.0)
        used += tl.where(take, 1.0, 0.0)
        d = tl.where(j[None, :] == where[:, None], float("inf"), d)
    density = tl.where(valid_i, tl.exp(-(total / tl.maximum(used, 1.0))), 0.0)
    tl.store(density_ptr + batch * n + i, density, mask=i_in)
    tl.store(row_max_ptr + batch * n + i, row_max, mask=i_in)


@triton.jit
def _delta_kernel(
    dist_ptr,
    valid_ptr,
    density_ptr,
    row_max_ptr,
    score_ptr,
    n,
    BLOCK_R: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    batch, i, j, valid_i, valid_j = _row_block(valid_ptr, n, BLOCK_R, BLOCK_N)
    i_in = i < n
    j_in = j < n
    density_i = tl.load(density_ptr + batch * n + i, mask=i_in, other=0.0)
    density_j = tl.load(density_ptr + batch * n + j, mask=j_in, other=0.0)
    largest = tl.max(tl.load(row_max_ptr + batch * n + j, mask=j_in, other=0.0), axis=0)
    denser = (density_j[None, :] > density_i[:, None]) | (
        (density_j[None, :] == density_i[:, None]) & (j[None, :] < i[:, None])
    )
    use = denser & valid_i[:, None] & valid_j[None, :]
    d = tl.load(dist_ptr + batch * n * n + i[:, None].to(tl.int64) * n + j[None, :], mask=use, other=float("inf"))
    delta = tl.min(d, axis=1)
    delta = tl.where(delta == float("inf"), largest, delta)
    score = tl.where(valid_i, density_i * delta, float("-inf"))
    tl.store(score_ptr + batch * n + i, score, mask=i_in)


def launch_density_scores(
    distances: torch.Tensor, k: torch.Tensor, k_max: int, valid: torch.Tensor, elements: int = 4096
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(density, score)`` ``[B, n]`` from contiguous float32 ``distances`` ``[B, n, n]``, int64 ``k`` ``[B]`` and
    bool ``valid`` ``[B, n]``; ``elements`` bounds the distances one program holds."""
    batch, n, _ = distances.shape
    block_n = triton.next_power_of_2(n)
    block_r = max(1, min(triton.next_power_of_2(n), elements // block_n))
    warps = 4 if block_r * block_n <= 4096 else 8
    density = torch.empty(batch, n, dtype=torch.float32, device=distances.device)
    row_max = torch.empty_like(density)
    score = torch.empty_like(density)
    grid = (triton.cdiv(n, block_r), batch)
    _knn_density_kernel[grid](
        distances, valid, k, density, row_max, n, k_max, BLOCK_R=block_r, BLOCK_N=block_n, num_warps=warps
    )
    _delta_kernel[grid](distances, valid, density, row_max, score, n, BLOCK_R=block_r, BLOCK_N=block_n, num_warps=warps)
    return density, score

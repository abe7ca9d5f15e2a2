"""Greedy per-frame selection (k-center / MMR) on a per-frame similarity matrix ``[T, N, N]``.

One program per frame, all frames in one launch. The running score vector (min distance to the selection, or
max similarity to it) stays in registers; each step is a fused "arg-max over candidates + update from the chosen
token's row". ``N`` up to :data:`MAX_TOKENS` per frame fits one block (a global pool of a whole video included).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..greedy import MAX_TOKENS

__all__ = ["launch_kcenter", "launch_mmr", "launch_calibrated"]


@triton.jit
def _kcenter_kernel(
    sim_ptr,
    seed_ptr,
    scale_ptr,
    budget_ptr,
    order_ptr,
    num_tokens,
    max_budget,
    HAS_SCALE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    frame = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    valid = cols < num_tokens
    matrix = sim_ptr + frame * num_tokens * num_tokens
    # running score: the seed score (distance to the nearest other token) before the first pick, then the distance
    # to the selection; chosen tokens and padding hold -inf
    score = tl.load(seed_ptr + frame * num_tokens + cols, mask=valid, other=float("-inf"))
    if HAS_SCALE:
        scale = tl.load(scale_ptr + frame * num_tokens + cols, mask=valid, other=0.0)
    min_distance = tl.full([BLOCK_N], float("inf"), dtype=tl.float32)
    budget = tl.load(budget_ptr + frame)
    for step in range(0, budget):
        if HAS_SCALE:
            # distances lie in [0, 2]: clamping -inf first keeps 0 * -inf (a NaN) out of the product
            score = tl.where(score == float("-inf"), score, tl.maximum(score, -1.0) * scale)
        pick = tl.argmax(score, axis=0, tie_break_left=True)
        tl.store(order_ptr + frame * max_budget + step, pick.to(tl.int64))
        distance = 1.0 - tl.load(matrix + pick * num_tokens + cols, mask=valid, other=0.0)
        min_distance = tl.where(valid & (cols != pick), tl.minimum(min_distance, distance), float("-inf"))
        score = min_distance
    slots = tl.arange(0, BLOCK_K)
    padding = (slots >= budget) & (slots < max_budget)
    tl.store(order_ptr + frame * max_budget + slots, tl.full([BLOCK_K], -1, tl.int64), mask=padding)


@triton.jit
def _calibrated_kernel(
    dist_ptr,
    nearest_ptr,
    farthest_ptr,
    weight_ptr,
    order_ptr,
    num_tokens,
    count,
    BLOCK_N: tl.constexpr,
):
    frame = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    valid = cols < num_tokens
    matrix = dist_ptr + frame * num_tokens * num_tokens
    row = frame * num_tokens + cols
    weight = tl.load(weight_ptr + row, mask=valid, other=0.0)
    nearest = tl.load(nearest_ptr + row, mask=valid, other=0.0)
    farthest = tl.load(farthest_ptr + row, mask=valid, other=0.0)
    big = 3.4028234663852886e38  # torch.nan_to_num's replacement of +-inf in float32
    chosen = ~valid
    order = tl.full([BLOCK_N], num_tokens, dtype=tl.int64)
    for step in range(0, count):
        value = tl.where(weight >= 0, weight * nearest, weight * farthest)
        value = tl.where(value != value, 0.0, tl.minimum(tl.maximum(value, -big), big))
        value = tl.where(chosen, float("-inf"), value)
        pick = tl.argmax(value, axis=0, tie_break_left=True)
        chosen = chosen | (cols == pick)
        order = tl.where(cols == pick, step, order)
        distance = tl.load(matrix + pick * num_tokens + cols, mask=valid, other=0.0)
        nearest = tl.where(step == 0, distance, tl.minimum(nearest, distance))
        farthest = tl.where(step == 0, distance, tl.maximum(farthest, distance))
    tl.store(order_ptr + row, order, mask=valid)


@triton.jit
def _mmr_kernel(
    sim_ptr,
    importance_ptr,
    budget_ptr,
    order_ptr,
    num_tokens,
    max_budget,
    importance_weight,
    similarity_weight,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    frame = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    valid = cols < num_tokens
    matrix = sim_ptr + frame * num_tokens * num_tokens
    importance = tl.load(importance_ptr + frame * num_tokens + cols, mask=valid, other=0.0)
    weighted_importance = importance_weight * importance
    max_similarity = tl.full([BLOCK_N], -2.0, dtype=tl.float32)
    chosen = cols < 0
    budget = tl.load(budget_ptr + frame)
    for step in range(0, budget):
        penalty = similarity_weight * max_similarity
        score = tl.where(step == 0, importance, weighted_importance - penalty)
        score = tl.where(valid & ~chosen, score, float("-inf"))
        pick = tl.argmax(score, axis=0, tie_break_left=True)
        tl.store(order_ptr + frame * max_budget + step, pick.to(tl.int64))
        chosen = chosen | (cols == pick)
        similarity = tl.load(matrix + pick * num_tokens + cols, mask=valid, other=-2.0)
        max_similarity = tl.maximum(max_similarity, similarity)
    slots = tl.arange(0, BLOCK_K)
    padding = (slots >= budget) & (slots < max_budget)
    tl.store(order_ptr + frame * max_budget + slots, tl.full([BLOCK_K], -1, tl.int64), mask=padding)


def _blocks(num_tokens: int, max_budget: int) -> tuple[int, int, int]:
    """``BLOCK_N`` (all tokens of a frame), ``BLOCK_K`` (padding stores) and warps: 16 score entries per thread
    from 512 tokens on (a 196-token frame: 4 warps; an 8 k-token global pool: 16 warps)."""
    if num_tokens > MAX_TOKENS:
        raise ValueError(f"the greedy kernels hold at most {MAX_TOKENS} tokens per frame on chip, got {num_tokens}")
    block_n = max(16, triton.next_power_of_2(num_tokens))
    block_k = max(16, triton.next_power_of_2(max_budget))
    return block_n, block_k, min(32, max(4, block_n // 512))


def launch_kcenter(
    similarity: torch.Tensor,
    seed: torch.Tensor,
    scale: torch.Tensor | None,
    budgets: torch.Tensor,
    order: torch.Tensor,
) -> torch.Tensor:
    """Fill ``order`` ``[T, max_budget]`` int64 (``-1`` padded) from contiguous float32 ``similarity`` ``[T, N, N]``
    and the seed scores ``[T, N]`` (distance to the nearest other token)."""
    frames, num_tokens, _ = similarity.shape
    max_budget = order.shape[1]
    if frames == 0 or max_budget == 0:
        return order
    block_n, block_k, num_warps = _blocks(num_tokens, max_budget)
    _kcenter_kernel[(frames,)](
        similarity,
        seed.contiguous(),
        scale if scale is not None else similarity,
        budgets,
        order,
        num_tokens,
        max_budget,
        HAS_SCALE=scale is not None,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        num_warps=num_warps,
    )
    return order


def launch_mmr(
    similarity: torch.Tensor, importance: torch.Tensor, budgets: torch.Tensor, mmr_lambda: float, order: torch.Tensor
) -> torch.Tensor:
    """Fill ``order`` ``[T, max_budget]`` int64 (``-1`` padded) by MMR on float32 ``similarity`` / ``importance``."""
    frames, num_tokens, _ = similarity.shape
    max_budget = order.shape[1]
    if frames == 0 or max_budget == 0:
        return order
    block_n, block_k, num_warps = _blocks(num_tokens, max_budget)
    _mmr_kernel[(frames,)](
        similarity,
        importance,
        budgets,
        order,
        num_tokens,
        max_budget,
        float(mmr_lambda),
        float(1.0 - mmr_lambda),
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        num_warps=num_warps,
    )
    return order


def launch_calibrated(
    distance: torch.Tensor, nearest: torch.Tensor, farthest: torch.Tensor, weight: torch.Tensor, count: int
) -> torch.Tensor:
    """``[T, N]`` int64 selection order (``N`` for unselected) of FlashVID's signed calibrated max-min, from
    contiguous float32 ``distance`` ``[T, N, N]`` and the seed statistics / weights ``[T, N]``."""
    frames, num_tokens, _ = distance.shape
    order = torch.empty(frames, num_tokens, dtype=torch.long, device=distance.device)
    block_n, _, num_warps = _blocks(num_tokens, 1)
    _calibrated_kernel[(frames,)](
        distance, nearest, farthest, weight, order, num_tokens, count, BLOCK_N=block_n, num_warps=num_warps
    )
    return order

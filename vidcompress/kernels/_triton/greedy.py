"""Greedy per-frame selection (k-center / MMR) on a per-frame similarity matrix ``[T, N, N]``.

One program per frame, all frames in one launch. The running score vector (min distance to the selection, or
max similarity to it) stays in registers; each step is a fused "arg-max over candidates + update from the chosen
token's row". ``N`` up to :data:`MAX_TOKENS` per frame fits one block (a global pool of a whole video included).
The matrix is float16 (half-precision inputs) or float32; rows are converted to float32 in registers, which is
exact, so both give the picks of the float32 reference path. Each kernel writes ``order`` and, from the chosen set
at the end, the ascending ``indices`` (no sort afterwards).

On an H100 the fp16 matrix made DivPrune's global pool (6272 tokens, 627 picks) 0.77 ms of k-center kernel instead of
1.34 ms with the float32 one. Loading the runner-up's row speculatively each step (the next pick 95 % of the time)
was tried and was slower (0.99 ms): the extra reduction costs more than the latency it hides.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..greedy import MAX_TOKENS

__all__ = ["launch_kcenter", "launch_mmr", "launch_calibrated"]


@triton.jit
def _store_selection(index_ptr, order_ptr, frame, cols, chosen, budget, max_budget, BLOCK_K: tl.constexpr):
    """``-1`` padding of ``order`` after ``budget`` picks, and the ``chosen`` tokens into ``indices`` in ascending
    order (each one's slot is the number of chosen tokens before it), ``-1`` padded."""
    start = frame * max_budget
    rank = tl.cumsum(chosen.to(tl.int32), axis=0) - 1
    tl.store(index_ptr + start + rank, cols.to(tl.int64), mask=chosen)
    count = tl.sum(chosen.to(tl.int32), axis=0)
    slots = tl.arange(0, BLOCK_K)
    inside = slots < max_budget
    padding = tl.full([BLOCK_K], -1, tl.int64)
    tl.store(index_ptr + start + slots, padding, mask=inside & (slots >= count))
    tl.store(order_ptr + start + slots, padding, mask=inside & (slots >= budget))


@triton.jit
def _kcenter_kernel(
    sim_ptr,
    seed_ptr,
    scale_ptr,
    budget_ptr,
    order_ptr,
    index_ptr,
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
    # the seed score (distance to the nearest other token) before the first pick, then the distance to the
    # selection; -inf for chosen tokens and padding
    min_distance = tl.load(seed_ptr + frame * num_tokens + cols, mask=valid, other=float("-inf"))
    if HAS_SCALE:
        scale = tl.load(scale_ptr + frame * num_tokens + cols, mask=valid, other=0.0)
    budget = tl.load(budget_ptr + frame)
    for step in range(0, budget):
        score = min_distance
        if HAS_SCALE:
            # distances lie in [0, 2]: clamping -inf first keeps 0 * -inf (a NaN) out of the product
            score = tl.where(score == float("-inf"), score, tl.maximum(score, -1.0) * scale)
        pick = tl.argmax(score, axis=0, tie_break_left=True)
        tl.store(order_ptr + frame * max_budget + step, pick.to(tl.int64))
        # padding columns read +inf: distance -inf, never a candidate
        distance = 1.0 - tl.load(matrix + pick * num_tokens + cols, mask=valid, other=float("inf")).to(tl.float32)
        distance = tl.where(step == 0, distance, tl.minimum(min_distance, distance))
        min_distance = tl.where(cols == pick, float("-inf"), distance)
    chosen = valid & (min_distance == float("-inf"))
    _store_selection(index_ptr, order_ptr, frame, cols, chosen, budget, max_budget, BLOCK_K)


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
    index_ptr,
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
        max_similarity = tl.maximum(max_similarity, similarity.to(tl.float32))
    _store_selection(index_ptr, order_ptr, frame, cols, chosen, budget, max_budget, BLOCK_K)


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
    indices: torch.Tensor,
    *,
    num_warps: int | None = None,
) -> None:
    """Fill ``order`` and ``indices`` ``[T, max_budget]`` int64 (``-1`` padded, contiguous) from the contiguous
    float16 / float32 ``similarity`` ``[T, N, N]`` and the float32 seed scores ``[T, N]`` (distance to the nearest
    other token). ``num_warps``: ``None`` picks by ``N`` (see :func:`_blocks`); the picks do not depend on it."""
    frames, num_tokens, _ = similarity.shape
    max_budget = order.shape[1]
    if frames == 0 or max_budget == 0:
        return
    block_n, block_k, default_warps = _blocks(num_tokens, max_budget)
    _kcenter_kernel[(frames,)](
        similarity,
        seed,
        scale if scale is not None else seed,
        budgets,
        order,
        indices,
        num_tokens,
        max_budget,
        HAS_SCALE=scale is not None,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        num_warps=num_warps or default_warps,
    )


def launch_mmr(
    similarity: torch.Tensor,
    importance: torch.Tensor,
    budgets: torch.Tensor,
    mmr_lambda: float,
    order: torch.Tensor,
    indices: torch.Tensor,
) -> None:
    """Fill ``order`` and ``indices`` ``[T, max_budget]`` int64 (``-1`` padded, contiguous) by MMR on float16 /
    float32 ``similarity`` ``[T, N, N]`` and float32 ``importance`` ``[T, N]``."""
    frames, num_tokens, _ = similarity.shape
    max_budget = order.shape[1]
    if frames == 0 or max_budget == 0:
        return
    block_n, block_k, num_warps = _blocks(num_tokens, max_budget)
    _mmr_kernel[(frames,)](
        similarity,
        importance,
        budgets,
        order,
        indices,
        num_tokens,
        max_budget,
        float(mmr_lambda),
        float(1.0 - mmr_lambda),
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        num_warps=num_warps,
    )


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

"""Greedy per-frame selection (k-center / MMR) on a per-frame similarity matrix ``[T, N, N]``.

One program per frame, all frames in one launch. The running score vector (min distance to the selection, or
max similarity to it) stays in registers; each step is a fused "arg-max over candidates + update from the chosen
token's row". ``N`` up to :data:`MAX_TOKENS` per frame fits one block (a global pool of a whole video included).
The matrix is float16 (half-precision inputs) or float32; rows are converted to float32 in registers, which is
exact, so both give the picks of the float32 reference path. Each kernel writes ``order`` and, from the chosen set
at the end, the ascending ``indices`` (no sort afterwards).

Speculation (k-center): a step waits for the picked row to arrive from memory, and a whole-video matrix does not
fit in L2. The next pick is usually the runner-up of the current one (it stays the farthest candidate unless the
new pick lies closer to it than its current distance), so each step loads the row of its runner-up, the guess for
the next step. One reduction gives the best candidate other than the guess and the guess's own score, hence the pick
(the better of the two, ties to the lower index) and, when the guess is right, the next guess; a wrong guess costs
a second reduction (the runner-up of the pick) and the wait for the pick's row. The loop runs two steps per
iteration so that a row loaded in one step is read in the next without a register copy (which would wait for the
load). The picks do not depend on the guesses.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..greedy import MAX_TOKENS

__all__ = ["SPECULATE_FROM_BYTES", "launch_kcenter", "launch_mmr", "launch_calibrated"]

#: The k-center launcher speculates (module docstring) on similarity matrices larger than this: they do not stay in
#: L2 (50 MB on an H100) after the GEMM that writes them, so each step would wait on HBM for its row. Smaller ones
#: (per-frame pools) are read from L2 at a fraction of that latency and keep the plain loop (one arg-max per step).
SPECULATE_FROM_BYTES = 32 << 20


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
def _argmax_and_max(value, index, other, value_b, index_b, other_b):
    """Reduction of (arg-max, ties to the lower index) and of a plain maximum, in one pass."""
    left = (value > value_b) | ((value == value_b) & (index < index_b))
    return tl.where(left, value, value_b), tl.where(left, index, index_b), tl.maximum(other, other_b)


@triton.jit
def _kcenter_score(min_distance, scale, HAS_SCALE: tl.constexpr):
    if HAS_SCALE:
        # distances lie in [0, 2]: clamping -inf first keeps 0 * -inf (a NaN) out of the product
        return tl.where(min_distance == float("-inf"), min_distance, tl.maximum(min_distance, -1.0) * scale)
    return min_distance


@triton.jit
def _kcenter_step(
    matrix,
    scale,
    order,
    num_tokens,
    cols,
    valid,
    step,
    min_distance,
    guess,
    guess_row,
    HAS_SCALE: tl.constexpr,
    SPECULATE: tl.constexpr,
):
    """One pick: returns the updated ``min_distance``, and the next guess with its row (loaded, not yet read)."""
    score = _kcenter_score(min_distance, scale, HAS_SCALE)
    if SPECULATE:
        # the best candidate other than the guess, and the guess's score: the pick is the better of the two
        guessed = cols == guess
        rest = tl.where(guessed, float("-inf"), score)
        best, runner_up, guess_score = tl.reduce(
            (rest, cols, tl.where(guessed, score, float("-inf"))), 0, _argmax_and_max
        )
        hit = (guess_score > best) | ((guess_score == best) & (guess < runner_up))
        row = tl.load(matrix + runner_up * num_tokens + cols, mask=valid & (hit == 0), other=float("inf"))
        row = tl.where(hit, guess_row, row)
        if hit:
            pick = guess
            guess = runner_up
        else:
            # the guess missed: the next one is the best candidate other than the pick
            pick = runner_up
            second, second_index = tl.max(
                tl.where(cols == pick, float("-inf"), rest), 0, return_indices=True, return_indices_tie_break_left=True
            )
            keep = (guess_score > second) | ((guess_score == second) & (guess < second_index))
            guess = tl.where(keep, guess, second_index)
        guess_row = tl.load(matrix + guess * num_tokens + cols, mask=valid, other=float("inf"))
    else:
        pick = tl.argmax(score, axis=0, tie_break_left=True)
        row = tl.load(matrix + pick * num_tokens + cols, mask=valid, other=float("inf"))
    tl.store(order + step, pick.to(tl.int64))
    # padding columns read +inf: distance -inf, never a candidate; before the first pick min_distance holds the
    # seed score
    distance = 1.0 - row.to(tl.float32)
    distance = tl.where(step == 0, distance, tl.minimum(min_distance, distance))
    return tl.where(cols == pick, float("-inf"), distance), guess, guess_row


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
    SPECULATE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    frame = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    valid = cols < num_tokens
    matrix = sim_ptr + frame * num_tokens * num_tokens
    order = order_ptr + frame * max_budget
    # the seed score (distance to the nearest other token) before the first pick, then the distance to the
    # selection; -inf for chosen tokens and padding
    min_distance = tl.load(seed_ptr + frame * num_tokens + cols, mask=valid, other=float("-inf"))
    scale = min_distance  # unused without HAS_SCALE
    if HAS_SCALE:
        scale = tl.load(scale_ptr + frame * num_tokens + cols, mask=valid, other=0.0)
    guess = -1
    guess_row = tl.zeros([BLOCK_N], dtype=sim_ptr.dtype.element_ty)
    if SPECULATE:
        # the first guess is the first pick
        guess = tl.argmax(_kcenter_score(min_distance, scale, HAS_SCALE), axis=0, tie_break_left=True)
        guess_row = tl.load(matrix + guess * num_tokens + cols, mask=valid, other=float("inf"))
    budget = tl.load(budget_ptr + frame)
    for step in range(0, budget, 2):
        min_distance, guess, next_row = _kcenter_step(
            matrix, scale, order, num_tokens, cols, valid, step, min_distance, guess, guess_row, HAS_SCALE, SPECULATE
        )
        if step + 1 < budget:
            min_distance, guess, guess_row = _kcenter_step(
                matrix,
                scale,
                order,
                num_tokens,
                cols,
                valid,
                step + 1,
                min_distance,
                guess,
                next_row,
                HAS_SCALE,
                SPECULATE,
            )
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
    speculate: bool | None = None,
) -> None:
    """Fill ``order`` and ``indices`` ``[T, max_budget]`` int64 (``-1`` padded, contiguous) from the contiguous
    float16 / float32 ``similarity`` ``[T, N, N]`` and the float32 seed scores ``[T, N]`` (distance to the nearest
    other token). Tuning (same picks whatever the values): ``num_warps`` (``None``: by ``N``, see :func:`_blocks`)
    and ``speculate`` (load the runner-up's row each step, module docstring; ``None``: for matrices over
    :data:`SPECULATE_FROM_BYTES`)."""
    frames, num_tokens, _ = similarity.shape
    max_budget = order.shape[1]
    if frames == 0 or max_budget == 0:
        return
    block_n, block_k, default_warps = _blocks(num_tokens, max_budget)
    if speculate is None:
        speculate = similarity.numel() * similarity.element_size() > SPECULATE_FROM_BYTES
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
        SPECULATE=speculate,
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

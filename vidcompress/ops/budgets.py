"""Per-frame budgets: splitting a token count over frames and keeping each frame's best tokens.

Budgets that depend on the data (proportional shares) are computed on the tensors' device in fixed shapes, so no
value travels back to the host; budgets that depend on the grid only are host ints copied once (:func:`int_tensor_on`).
"""

from __future__ import annotations

import functools

import torch

from vidcompress.assemble import host_to_device

from .sorting import sort_ints

__all__ = ["descending_rank", "top_per_row", "first_set", "picks_to_flat", "proportional_budgets", "int_tensor_on"]


def descending_rank(scores: torch.Tensor) -> torch.Tensor:
    """``[B, N]`` rank of every entry in its row by descending score (0 = best); ties go to the lower index."""
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order))
    return rank


def top_per_row(scores: torch.Tensor, budgets: torch.Tensor) -> torch.Tensor:
    """``[B, N]`` bool mask of the ``budgets[b]`` highest-scoring entries of each row (ties: lower index)."""
    return descending_rank(scores) < budgets.to(scores.device)[:, None]


def first_set(mask: torch.Tensor, count: int) -> torch.Tensor:
    """Ascending indices of the first ``count`` set entries along the last axis of the bool ``mask`` (``[n]`` or
    ``[B, n]``; ``nonzero`` with a size known on the host: no sync). Entries past the last set one are ``n``.

    A prefix sum gives each set entry its output slot and one scatter writes it there (no sort)."""
    n = mask.shape[-1]
    slot = mask.long().cumsum(-1) - 1
    slot = torch.where(mask & (slot < count), slot, count)  # slot ``count`` collects the rest and is cut off
    index = torch.arange(n, device=mask.device).expand_as(mask)
    out = torch.full((*mask.shape[:-1], count + 1), n, dtype=torch.long, device=mask.device)
    return out.scatter_(-1, slot, index)[..., :count]


def int_tensor_on(values: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Host ints (budgets, frame indices) as an int64 tensor on ``device``, cached per (values, device): copied
    once through pinned memory, never read back (inside ``torch.compile``: a constant of the compiled graph).
    Callers must not modify the returned tensor."""
    if torch.compiler.is_compiling():
        return torch.tensor(values, dtype=torch.long, device=device)
    return _pinned_copy(values, device)


@functools.lru_cache(maxsize=256)
def _pinned_copy(values: tuple[int, ...], device: torch.device) -> torch.Tensor:
    return host_to_device(torch.tensor(values, dtype=torch.long), device)


def picks_to_flat(picks: torch.Tensor, budgets: list[int], row_size: int) -> torch.Tensor:
    """Flat indices ``b * row_size + pick`` of the first ``budgets[b]`` picks of each row of ``picks [B, k]``,
    ascending. The output has ``sum(budgets)`` entries, known on the host, so no data-dependent shape (no sync)."""
    device = picks.device
    limit = int_tensor_on(tuple(budgets), device)
    keep = torch.arange(picks.shape[1], device=device)[None, :] < limit[:, None]
    offsets = torch.arange(picks.shape[0], device=device)[:, None] * row_size
    past_end = torch.full_like(picks, picks.shape[0] * row_size)
    flat = torch.where(keep, picks + offsets, past_end).reshape(-1)
    return sort_ints(flat, picks.shape[0] * row_size).values[: sum(budgets)]


def proportional_budgets(weights: torch.Tensor, total: int, floor: int, cap: int) -> torch.Tensor:
    """``[R]`` long integer budgets summing exactly to ``total``: ``floor`` each, the rest in proportion to ``weights``.

    No budget exceeds ``cap``: shares above it are capped and their excess is spread over the other rows in
    proportion to their weights (water filling). Fractions are rounded by the largest-remainder rule, ties to the
    lower index. Rows of zero weight only receive a share when every positive-weight row is full, then evenly.
    ``weights`` ``[R]`` must be finite and non-negative (not checked: that would read them back).

    Computed on the weights' device in float64 without a host sync: the rows that water filling caps are always the
    heaviest open ones, so every round of capping is a step ``k -> k + #full(k)`` on the number ``k`` of capped
    rows, evaluated for all ``k`` at once and followed from ``k = 0`` by pointer doubling.

    Raises:
        ValueError: when ``floor * R > total`` or ``cap * R < total``.
    """
    rows = weights.shape[0]
    if rows == 0 or floor < 0 or floor > cap or floor * rows > total or cap * rows < total:
        raise ValueError(f"cannot split {total} over {rows} rows with floor {floor} and cap {cap}")
    weight = weights.to(torch.float64)
    capped, remaining, share = _water_level(weight, float(total - floor * rows), floor, cap)
    budgets = torch.where(capped, float(cap), floor + remaining * share)
    whole = torch.clamp(torch.floor(budgets + 1e-9), max=cap)
    by_remainder = torch.sort(-(budgets - whole), stable=True).indices
    open_sorted = (whole < cap)[by_remainder]
    short = total - whole.sum()
    bump = open_sorted & (torch.cumsum(open_sorted.long(), 0) <= short)
    return whole.long().index_add_(0, by_remainder, bump.long())


def _water_level(
    weight: torch.Tensor, spread: float, floor: int, cap: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Water filling of ``spread`` over rows starting at ``floor``: ``(capped [R] bool, remaining mass [1],
    share [R] of the remaining mass of every open row)``."""
    rows = weight.shape[0]
    device = weight.device
    order = torch.sort(weight, descending=True, stable=True).indices
    heaviest = weight[order]
    capped_count = torch.arange(rows + 1, device=device)  # k rows capped: the k heaviest
    remaining = spread - capped_count.to(torch.float64) * (cap - floor)
    mass = torch.cat([heaviest.flip(0).cumsum(0).flip(0), heaviest.new_zeros(1)])  # open mass for every k
    open_row = torch.arange(rows, device=device)[None, :] >= capped_count[:, None]  # [k, sorted row]
    even = 1.0 / (rows - capped_count).clamp(min=1).to(torch.float64)
    share = torch.where(mass[:, None] > 0, heaviest[None, :] / mass[:, None], even[:, None])
    full = open_row & (floor + remaining[:, None] * share >= cap)
    done = (remaining <= 1e-9) | (capped_count == rows)
    step = torch.where(done, capped_count, capped_count + full.sum(1))
    for _ in range(max(1, rows.bit_length())):
        step = step[step]
    final = step[:1]  # a 1-element index, not a 0-dim one (that would be read back)
    rank = torch.empty_like(order).scatter_(0, order, torch.arange(rows, device=device))
    capped = rank < final
    level = torch.where(remaining[final] > 1e-9, remaining[final], 0.0)
    row_share = torch.where(mass[final] > 0, weight / mass[final], even[final])
    return capped, level, row_share

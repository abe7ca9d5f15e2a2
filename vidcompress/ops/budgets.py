"""Per-frame budgets: splitting a token count over frames and keeping each frame's best tokens.

Frame counts are small (tens to hundreds), so budget arithmetic runs on the host in Python ints; token-level work
(ranking, masks) stays batched on the tensors' device.
"""

from __future__ import annotations

import functools
import math

import torch

from vidcompress.assemble import host_to_device

__all__ = ["descending_rank", "top_per_row", "picks_to_flat", "proportional_budgets", "int_tensor_on"]


def descending_rank(scores: torch.Tensor) -> torch.Tensor:
    """``[B, N]`` rank of every entry in its row by descending score (0 = best); ties go to the lower index."""
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order))
    return rank


def top_per_row(scores: torch.Tensor, budgets: torch.Tensor) -> torch.Tensor:
    """``[B, N]`` bool mask of the ``budgets[b]`` highest-scoring entries of each row (ties: lower index)."""
    return descending_rank(scores) < budgets.to(scores.device)[:, None]


@functools.lru_cache(maxsize=256)
def int_tensor_on(values: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Host ints (budgets, frame indices) as an int64 tensor on ``device``, cached per (values, device): copied
    once through pinned memory, never read back. Callers must not modify the returned tensor."""
    return host_to_device(torch.tensor(values, dtype=torch.long), device)


def picks_to_flat(picks: torch.Tensor, budgets: list[int], row_size: int) -> torch.Tensor:
    """Flat indices ``b * row_size + pick`` of the first ``budgets[b]`` picks of each row of ``picks [B, k]``,
    ascending. The output has ``sum(budgets)`` entries, known on the host, so no data-dependent shape (no sync)."""
    device = picks.device
    limit = int_tensor_on(tuple(budgets), device)
    keep = torch.arange(picks.shape[1], device=device)[None, :] < limit[:, None]
    offsets = torch.arange(picks.shape[0], device=device)[:, None] * row_size
    past_end = torch.full_like(picks, picks.shape[0] * row_size)
    return torch.sort(torch.where(keep, picks + offsets, past_end).reshape(-1)).values[: sum(budgets)]


def proportional_budgets(weights: list[float], total: int, floor: int, cap: int) -> list[int]:
    """Integer budgets summing exactly to ``total``: ``floor`` each, the rest in proportion to ``weights``.

    No budget exceeds ``cap``: shares above it are capped and their excess is spread over the other rows in
    proportion to their weights (water filling). Fractions are rounded by the largest-remainder rule, ties to the
    lower index. Rows of zero weight only receive a share when every positive-weight row is full, then evenly.

    Raises:
        ValueError: when ``floor * len(weights) > total`` or ``cap * len(weights) < total``.
    """
    rows = len(weights)
    if rows == 0 or floor < 0 or floor > cap or floor * rows > total or cap * rows < total:
        raise ValueError(f"cannot split {total} over {rows} rows with floor {floor} and cap {cap}")
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError(f"weights must be finite and non-negative, got {weights}")
    budgets = [float(floor)] * rows
    open_rows = set(range(rows))
    remaining = float(total - floor * rows)
    while remaining > 1e-9 and open_rows:
        mass = sum(weights[r] for r in open_rows)
        share = {r: (weights[r] / mass if mass > 0 else 1.0 / len(open_rows)) for r in open_rows}
        full = [r for r in open_rows if budgets[r] + remaining * share[r] >= cap]
        if not full:
            for r in open_rows:
                budgets[r] += remaining * share[r]
            break
        for r in full:
            remaining -= cap - budgets[r]
            budgets[r] = float(cap)
            open_rows.discard(r)
    whole = [min(cap, math.floor(b + 1e-9)) for b in budgets]
    short = total - sum(whole)
    by_remainder = sorted(range(rows), key=lambda r: (-(budgets[r] - whole[r]), r))
    for r in by_remainder:
        if short == 0:
            break
        if whole[r] < cap:
            whole[r] += 1
            short -= 1
    return whole

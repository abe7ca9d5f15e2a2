"""Greedy subset selection: max-min / max-sum diversity (k-center, farthest point) and maximal marginal relevance.

Both selectors run on a ``[B, N, D]`` batch (frames, or one global pool with ``B = 1``) and pick one token per step
for every batch row at once. A running vector (distance to the selected set, or best similarity to it) is updated
from the newly picked token only, so no ``N × N`` matrix is built: one step costs ``O(B·N·D)``. The loop runs over
steps, never over tokens. Ties go to the lowest index (``argmax`` returns the first maximum).

Both return the picks in selection order, ``[B, count]`` long, with ``-1`` once a row has no candidate left, so a
caller can take the first ``k_b`` picks of row ``b`` for per-row budgets (greedy picks are prefixes of each other).
"""

from __future__ import annotations

from typing import Literal

import torch

from .similarity import nearest_neighbor_distance, unit_vectors

__all__ = ["farthest_point_select", "mmr_select"]


def _check_selection(features: torch.Tensor, count: int, candidates: torch.Tensor | None) -> None:
    if features.ndim != 3:
        raise ValueError(f"features must be [B, N, D], got shape {tuple(features.shape)}")
    if not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be a non-negative int, got {count!r}")
    if candidates is not None and tuple(candidates.shape) != tuple(features.shape[:2]):
        raise ValueError(f"candidates must have shape {tuple(features.shape[:2])}, got {tuple(candidates.shape)}")


def _take_best(score: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
    """Index of the best available token per row (first on ties), ``-1`` where none is available."""
    score = score.masked_fill(~available, -torch.inf)
    best = score.argmax(dim=1)
    found = available.gather(1, best[:, None]).squeeze(1)
    return torch.where(found, best, torch.full_like(best, -1))


def _mark_taken(available: torch.Tensor, picks: torch.Tensor) -> None:
    rows = torch.arange(available.shape[0], device=available.device)
    available[rows, picks.clamp(min=0)] &= picks < 0


def _similarity_to(unit: torch.Tensor, picks: torch.Tensor) -> torch.Tensor:
    """``[B, N]`` cosine similarity of every token to the token picked in its row."""
    rows = torch.arange(unit.shape[0], device=unit.device)
    return torch.einsum("bnd,bd->bn", unit, unit[rows, picks.clamp(min=0)])


def farthest_point_select(
    features: torch.Tensor,
    count: int,
    *,
    candidates: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
    seed: Literal["farthest_neighbor", "max_scale"] | torch.Tensor = "farthest_neighbor",
    aggregate: Literal["min", "sum"] = "min",
) -> torch.Tensor:
    """Greedy diversity selection with cosine distance ``D_ij = 1 − cos(f_i, f_j)``.

    Step ``t > 0`` picks ``argmax_i scale_i · agg_{j ∈ S} D_ij`` over the remaining candidates, where ``agg`` is
    ``min`` (max-min / k-center / farthest point: DivPrune, FlashVID's ADTS, ToDRE v1) or ``sum`` (max-sum
    diversification: ToDRE v2).

    Args:
        features: ``[B, N, D]`` tokens of each batch row.
        count: picks per row.
        candidates: optional ``[B, N]`` bool: only these may be picked (and only these are neighbours for the
            ``"farthest_neighbor"`` seed).
        scale: optional ``[B, N]`` non-negative per-candidate factor on the diversity score (e.g. attention
            calibration); it also scales the ``"farthest_neighbor"`` seed score.
        seed: the first pick. ``"farthest_neighbor"``: the candidate farthest from its nearest other candidate
            (DivPrune's seed); ``"max_scale"``: the candidate with the largest ``scale``; or a ``[B]`` long tensor of
            indices, which must be candidates.
        aggregate: ``"min"`` or ``"sum"`` over the selected set.

    Returns:
        ``[B, count]`` long picks in selection order; ``-1`` after a row runs out of candidates.
    """
    _check_selection(features, count, candidates)
    if aggregate not in ("min", "sum"):
        raise ValueError(f"aggregate must be 'min' or 'sum', got {aggregate!r}")
    if scale is not None and tuple(scale.shape) != tuple(features.shape[:2]):
        raise ValueError(f"scale must have shape {tuple(features.shape[:2])}, got {tuple(scale.shape)}")
    batch, n, _ = features.shape
    device = features.device
    unit = unit_vectors(features)
    weight = None if scale is None else scale.to(device=device, dtype=torch.float32)
    available = torch.ones(batch, n, dtype=torch.bool, device=device) if candidates is None else candidates.clone()
    picks = torch.full((batch, count), -1, dtype=torch.long, device=device)
    if count == 0:
        return picks

    if isinstance(seed, torch.Tensor):
        if tuple(seed.shape) != (batch,):
            raise ValueError(f"seed indices must have shape {(batch,)}, got {tuple(seed.shape)}")
        first = seed.to(device=device, dtype=torch.long)
    elif seed == "farthest_neighbor":
        isolation = nearest_neighbor_distance(features, candidates)
        first = _take_best(isolation if weight is None else isolation * weight, available)
    elif seed == "max_scale":
        if weight is None:
            raise ValueError("seed='max_scale' needs a scale")
        first = _take_best(weight, available)
    else:
        raise ValueError(f"seed must be 'farthest_neighbor', 'max_scale' or a tensor of indices, got {seed!r}")

    picks[:, 0] = first
    _mark_taken(available, first)
    distance = 1.0 - _similarity_to(unit, first)
    for step in range(1, count):
        score = distance if weight is None else distance * weight
        best = _take_best(score, available)
        picks[:, step] = best
        _mark_taken(available, best)
        new = 1.0 - _similarity_to(unit, best)
        distance = torch.minimum(distance, new) if aggregate == "min" else distance + new
    return picks


def mmr_select(
    features: torch.Tensor,
    importance: torch.Tensor,
    count: int,
    *,
    mmr_lambda: float = 0.5,
    candidates: torch.Tensor | None = None,
) -> torch.Tensor:
    """Maximal marginal relevance: ``argmax_i λ·imp_i − (1 − λ)·max_{j ∈ S} cos(f_i, f_j)``, one token per step.

    The first pick is the most important candidate (IDPruner's rule, whatever ``λ``).

    Args:
        features: ``[B, N, D]``.
        importance: ``[B, N]`` importance of every token (IDPruner min-max normalises it to ``[0, 1]`` first).
        count: picks per row.
        mmr_lambda: weight ``λ`` of importance against redundancy, in ``[0, 1]``.
        candidates: optional ``[B, N]`` bool: only these may be picked.

    Returns:
        ``[B, count]`` long picks in selection order; ``-1`` after a row runs out of candidates.
    """
    _check_selection(features, count, candidates)
    if not 0.0 <= mmr_lambda <= 1.0:
        raise ValueError(f"mmr_lambda must lie in [0, 1], got {mmr_lambda!r}")
    if tuple(importance.shape) != tuple(features.shape[:2]):
        raise ValueError(f"importance must have shape {tuple(features.shape[:2])}, got {tuple(importance.shape)}")
    batch, n, _ = features.shape
    device = features.device
    unit = unit_vectors(features)
    importance = importance.to(device=device, dtype=torch.float32)
    available = torch.ones(batch, n, dtype=torch.bool, device=device) if candidates is None else candidates.clone()
    picks = torch.full((batch, count), -1, dtype=torch.long, device=device)
    max_similarity = torch.full((batch, n), -2.0, dtype=torch.float32, device=device)
    for step in range(count):
        score = importance if step == 0 else mmr_lambda * importance - (1.0 - mmr_lambda) * max_similarity
        best = _take_best(score, available)
        picks[:, step] = best
        _mark_taken(available, best)
        max_similarity = torch.maximum(max_similarity, _similarity_to(unit, best))
    return picks

"""Sync-free groupings whose number of groups is only known on the device, reconciled to the exact count.

:func:`~vidcompress.ops.reconcile.group_by_representative` and :func:`~vidcompress.ops.reconcile.reconcile` size
their tensors by the number of groups ``G``, which for a data-dependent grouping means reading ``G`` back to the
host. Here the groups live in ``max_groups`` slots (a host-known upper bound, e.g. from the method's budgets): slot
``g < G`` holds the ``g``-th representative in ascending order, the rest are padding; ``G`` stays a 0-d device
tensor. :func:`reconcile_padded` then brings the grouping to exactly ``count`` groups, whose number is known in
advance, with the same result as ``reconcile`` on the unpadded grouping (up to float rounding of the similarities
that choose fold targets). Every shape depends on ``M``, ``max_groups`` and ``count`` only, so nothing is read back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .reconcile import Grouping
from .temporal import unit

__all__ = [
    "PaddedGrouping",
    "true_indices",
    "pad_by_representative", "padded_priority",
    "padded_candidates",
    "reconcile_padded",
]


@dataclass(frozen=True)
class PaddedGrouping:
    """A grouping of ``M`` tokens held in ``S = max_groups`` slots.

    Args:
        group: ``[M]`` long slot of every token, ``-1`` for dropped tokens.
        representative: ``[S]`` long flat index of each slot's representative (ascending), ``M`` in padding slots.
        weights: ``[M]`` float32 member weights.
        num_groups: 0-d long device tensor ``G``, the number of occupied slots.
    """

    group: torch.Tensor
    representative: torch.Tensor
    weights: torch.Tensor
    num_groups: torch.Tensor

    @property
    def occupied(self) -> torch.Tensor:
        """``[S]`` bool: the slot holds a group."""
        return self.representative < self.group.shape[0]


def true_indices(mask: torch.Tensor, size: int) -> torch.Tensor:
    """``[size]`` ascending indices of the ``True`` entries of the 1-D ``mask``, padded with ``len(mask)``.

    ``size`` must be at least the number of ``True`` entries (a host-known bound): a sync-free ``nonzero``.
    """
    length = mask.shape[0]
    out = torch.full((size + 1,), length, dtype=torch.long, device=mask.device)
    out[torch.where(mask, torch.cumsum(mask, 0) - 1, size)] = torch.arange(length, device=mask.device)
    return out[:size]


def pad_by_representative(rep_of: torch.Tensor, max_groups: int, weights: torch.Tensor | None = None) -> PaddedGrouping:
    """Padded grouping from ``rep_of`` ``[M]`` (each token's representative, ``-1`` when dropped).

    ``max_groups`` must be at least the number of distinct representatives. Weights default to 1.
    """
    size = rep_of.shape[0]
    member = rep_of >= 0
    is_rep = torch.zeros(size + 1, dtype=torch.bool, device=rep_of.device)
    is_rep.index_fill_(0, torch.where(member, rep_of, size), True)  # a Python scalar: no host-to-device copy
    is_rep = is_rep[:size]
    slot_of = torch.cumsum(is_rep, 0) - 1  # slot of every representative
    group = torch.where(member, slot_of[rep_of.clamp(min=0)], torch.full_like(rep_of, -1))
    weights = torch.ones(size, device=rep_of.device) if weights is None else weights.float()
    return PaddedGrouping(
        group=group, representative=true_indices(is_rep, max_groups), weights=weights, num_groups=is_rep.sum()
    )


def padded_priority(grouping: PaddedGrouping, score: torch.Tensor) -> torch.Tensor:
    """:func:`~vidcompress.ops.reconcile.group_priority` per slot: members plus the rank of the representative's
    ``score`` ``[M]`` (ascending, ties to the lower slot) over ``G + 1``; padding slots hold ``inf``."""
    occupied = grouping.occupied
    sizes = torch.zeros(occupied.shape[0], device=score.device).index_add_(
        0, grouping.group.clamp(min=0), (grouping.group >= 0).float()
    )
    rep_score = torch.where(occupied, score.float()[grouping.representative.clamp(max=score.shape[0] - 1)], torch.inf)
    rank = torch.argsort(torch.argsort(rep_score, stable=True), stable=True)
    return torch.where(occupied, sizes + rank.float() / (grouping.num_groups + 1), torch.inf)


def padded_candidates(grouping: PaddedGrouping, score: torch.Tensor) -> torch.Tensor:
    """``[M]`` :func:`~vidcompress.ops.reconcile.release_candidates` followed by the representatives: dropped
    tokens, then other members, each by descending ``score`` (ties: lower index); the first ``M - G`` entries are
    the candidates."""
    size = grouping.group.shape[0]
    is_rep = torch.zeros(size + 1, dtype=torch.bool, device=score.device)
    is_rep.index_fill_(0, grouping.representative, True)
    kind = torch.where(is_rep[:size], 2, (grouping.group >= 0).long())  # 0 dropped, 1 member, 2 representative
    order = torch.sort(score.float(), descending=True, stable=True).indices
    return order[torch.sort(kind[order], stable=True).indices]


def _fold(
    grouping: PaddedGrouping, features: torch.Tensor, frame_size: int, priority: torch.Tensor, count: int
) -> Grouping:
    """The groups of lowest priority (``G - count`` of them, ``G > count``) fold into their most similar kept group
    of the same frame (any frame when none is left there), as ``reconcile``'s fold."""
    group, reps = grouping.group, grouping.representative
    slots = reps.shape[0]
    device = group.device
    member = group >= 0
    safe = group.clamp(min=0)
    sizes = torch.zeros(slots, device=device).index_add_(0, safe, member.float())
    totals = torch.zeros(slots, device=device).index_add_(0, safe, grouping.weights * member)
    weights = grouping.weights * (sizes / totals.clamp(min=1e-30))[safe] * member
    sums = torch.zeros(slots, features.shape[1], device=device).index_add_(0, safe, features.float() * weights[:, None])
    means = unit(sums / sizes.clamp(min=1)[:, None])
    excess = grouping.num_groups - count
    by_priority = torch.sort(priority, stable=True).indices  # padding (inf) last; ties: lower slot first
    folding = by_priority[: slots - count]
    fold_valid = torch.arange(slots - count, device=device) < excess
    is_fold = torch.zeros(slots + 1, dtype=torch.bool, device=device)
    is_fold.index_fill_(0, torch.where(fold_valid, folding, slots), True)
    keep_mask = grouping.occupied & ~is_fold[:slots]
    slot_index = torch.arange(slots, device=device)
    keep = torch.sort(torch.where(keep_mask, slot_index, slots)).values[:count].clamp(max=slots - 1)
    frame = reps // frame_size
    affinity = means[folding] @ means[keep].T + 2.0 * (frame[folding][:, None] == frame[keep][None, :])
    mapping = torch.arange(slots + 1, device=device)
    mapping[torch.where(fold_valid, folding, slots)] = torch.where(fold_valid, keep[affinity.argmax(-1)], slots)
    renumber = torch.full((slots,), -1, dtype=torch.long, device=device)
    renumber[keep] = torch.arange(count, device=device)
    new_group = torch.where(member, renumber[mapping[safe]], torch.full_like(group, -1))
    return Grouping(group=new_group, representative=reps[keep], weights=weights)


def _add_singletons(grouping: PaddedGrouping, candidates: torch.Tensor | None, count: int) -> Grouping:
    """The first ``count - G`` candidates (``G <= count``) become singleton groups after the existing ones, as
    ``reconcile``'s singleton path; without candidates ``G`` must equal ``count``."""
    group, reps, weights = grouping.group, grouping.representative, grouping.weights
    size = group.shape[0]
    device = group.device
    if reps.shape[0] < count:
        reps = torch.cat([reps, reps.new_full((count - reps.shape[0],), size)])
    if candidates is None:
        return Grouping(group=group, representative=reps[:count], weights=weights)
    start = grouping.num_groups
    slot = torch.arange(count, device=device)
    representative = torch.where(slot < start, reps[:count], candidates[(slot - start).clamp(min=0, max=size - 1)])
    chosen = candidates[: min(count, size)]
    position = torch.arange(chosen.shape[0], device=device)
    new = position < count - start
    group = group.clone()
    group[chosen] = torch.where(new, start + position, group[chosen])
    weights = weights.clone()
    weights[chosen] = torch.where(new, 1.0, weights[chosen])
    return Grouping(group=group, representative=representative, weights=weights)


def reconcile_padded(
    grouping: PaddedGrouping,
    features: torch.Tensor,
    frame_size: int,
    count: int,
    priority: torch.Tensor,
    candidates: torch.Tensor | None = None,
) -> Grouping:
    """:func:`~vidcompress.ops.reconcile.reconcile` of a padded grouping: exactly ``count`` groups, no host sync.

    Args:
        grouping: the native grouping, ``G`` groups in ``S`` slots.
        features: ``[M, D]`` input features.
        frame_size: ``N`` tokens per frame (a group's frame is its representative's).
        count: the exact number of groups wanted.
        priority: ``[S]`` float per slot, higher = more important (e.g. :func:`padded_priority`); padding slots must
            hold ``inf``.
        candidates: ``[M]`` tokens in :func:`padded_candidates` order, or ``None`` when ``G >= count`` is certain.

    Both outcomes (fold when ``G > count``, else add singletons) are computed and one is chosen on the device.
    """
    added = _add_singletons(grouping, candidates, count)
    if grouping.representative.shape[0] <= count:  # G <= S <= count: nothing can fold
        return added
    folded = _fold(grouping, features, frame_size, priority.float(), count)
    fold = grouping.num_groups > count
    return Grouping(
        group=torch.where(fold, folded.group, added.group),
        representative=torch.where(fold, folded.representative, added.representative),
        weights=torch.where(fold, folded.weights, added.weights),
    )

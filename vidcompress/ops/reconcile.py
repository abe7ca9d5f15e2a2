"""Exact-count reconcile (methods.md §0.7): bring a method's native grouping to exactly ``count`` output rows.

A method describes its native output as a :class:`Grouping` (the group of every input token, each group's
representative, member weights) plus a priority per group and an ordered list of tokens that may come back as
singletons. Then

* too many groups: the lowest-priority groups are folded, all at once, into the most similar remaining group of the
  same frame (any frame when their own frame has none left); a fold is a member-count-weighted mean of the two rows;
* too few groups: the first candidates (dropped tokens, or members taken out of their group) become singletons.

The result goes to :func:`vidcompress.assemble.merge_tokens`, which fixes order, ``source`` and positions.

A method whose output rows are not the means of their members (AOT: optimal-transport-updated anchors) sets
``Grouping.features``; reconcile then carries those rows: a fold is the member-count-weighted mean of the two rows
(the similarity is the cosine of the rows), a new singleton carries its own input feature, and a group that loses a
member keeps its row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .temporal import smallest_first, unit

__all__ = ["Grouping", "group_by_representative", "release_candidates", "group_priority", "reconcile"]


@dataclass(frozen=True)
class Grouping:
    """A method's grouping of the ``M = T*N`` input tokens.

    Args:
        group: ``[M]`` long group of every token, ``-1`` for dropped tokens; groups are ``0 .. G-1``.
        representative: ``[G]`` long flat index whose position each group carries (a member of the group).
        weights: ``[M]`` float32 member weights of the (weighted) mean.
        features: optional ``[G, D]`` float32 output row of every group, when it is not the members' mean.
    """

    group: torch.Tensor
    representative: torch.Tensor
    weights: torch.Tensor
    features: torch.Tensor | None = None

    @property
    def num_groups(self) -> int:
        return int(self.representative.shape[0])


def group_by_representative(
    rep_of: torch.Tensor, weights: torch.Tensor | None = None, num_groups: int | None = None
) -> Grouping:
    """Grouping from ``rep_of`` ``[M]``: the flat index of each token's representative, ``-1`` when dropped.

    Groups are numbered in order of their representatives; ``weights`` default to 1 (plain means). ``num_groups``:
    the number of distinct representatives when the caller knows it on the host (it must be exact); the grouping is
    then built without a host sync. ``None`` finds them with ``unique`` (a sync on CUDA).
    """
    member = rep_of >= 0
    if num_groups is None:
        reps = torch.unique(rep_of[member])  # sorted
    else:
        size = rep_of.shape[0]
        flags = torch.zeros(size, dtype=torch.long, device=rep_of.device)
        flags.scatter_reduce_(0, rep_of.clamp(min=0), member.long(), reduce="amax")
        index = torch.arange(size, device=rep_of.device)
        reps = torch.sort(torch.where(flags > 0, index, size)).values[:num_groups]
    group = torch.where(member, torch.searchsorted(reps, rep_of.clamp(min=0)), torch.full_like(rep_of, -1))
    weights = torch.ones(rep_of.shape[0], device=rep_of.device) if weights is None else weights.float()
    return Grouping(group=group, representative=reps, weights=weights)


def release_candidates(grouping: Grouping, score: torch.Tensor) -> torch.Tensor:
    """Tokens that may come back as singletons, best first: dropped tokens, then non-representative members, each by
    descending ``score`` ``[M]`` (ties: lower index first)."""
    is_rep = torch.zeros_like(grouping.group, dtype=torch.bool)
    is_rep[grouping.representative] = True
    order = torch.sort(score.float(), descending=True, stable=True).indices
    order = order[~is_rep[order]]
    dropped_first = torch.sort((grouping.group[order] >= 0).long(), stable=True).indices
    return order[dropped_first]


def group_priority(grouping: Grouping, score: torch.Tensor) -> torch.Tensor:
    """``[G]`` priority: the number of members, ties broken by the representative's ``score`` (higher = keep)."""
    member = grouping.group >= 0
    sizes = torch.zeros(grouping.num_groups, device=score.device).index_add_(
        0, grouping.group.clamp(min=0), member.float()
    )
    rank = torch.argsort(torch.argsort(score.float()[grouping.representative], stable=True), stable=True)
    return sizes + rank.float() / (grouping.num_groups + 1)


def _fold(grouping: Grouping, features: torch.Tensor, frame_size: int, priority: torch.Tensor, excess: int) -> Grouping:
    group, reps = grouping.group, grouping.representative
    num_groups = grouping.num_groups
    device = group.device
    member = group >= 0
    safe = group.clamp(min=0)
    sizes = torch.zeros(num_groups, device=device).index_add_(0, safe, member.float())
    totals = torch.zeros(num_groups, device=device).index_add_(0, safe, grouping.weights * member)
    # member-count weighting, so that folding two rows averages them by their number of members
    weights = grouping.weights * (sizes / totals.clamp(min=1e-30))[safe] * member
    if grouping.features is None:
        sums = torch.zeros(num_groups, features.shape[1], device=device)
        sums.index_add_(0, safe, features.float() * weights[:, None])
        means = unit(sums / sizes.clamp(min=1)[:, None])
    else:
        means = unit(grouping.features)
    # lowest priority folds first; ties: the group with the lower representative folds first
    by_rep = torch.argsort(reps)
    fold = by_rep[smallest_first(priority[by_rep])[:excess]]
    keep_mask = torch.ones(num_groups, dtype=torch.bool, device=device)
    keep_mask[fold] = False
    keep = torch.nonzero(keep_mask).squeeze(1)
    frame = reps // frame_size
    affinity = means[fold] @ means[keep].T + 2.0 * (frame[fold][:, None] == frame[keep][None, :])
    target = keep[affinity.argmax(-1)]
    mapping = torch.arange(num_groups, device=device)
    mapping[fold] = target
    renumber = torch.full((num_groups,), -1, dtype=torch.long, device=device)
    renumber[keep] = torch.arange(keep.shape[0], device=device)
    new_group = torch.where(member, renumber[mapping[safe]], torch.full_like(group, -1))
    return Grouping(
        group=new_group,
        representative=reps[keep],
        weights=weights,
        features=None if grouping.features is None else _folded_rows(grouping.features, sizes, mapping, keep),
    )


def _folded_rows(rows: torch.Tensor, sizes: torch.Tensor, mapping: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``[len(keep), D]`` member-count-weighted mean of the rows mapped onto each kept group."""
    sums = torch.zeros_like(rows, dtype=torch.float32).index_add_(0, mapping, rows.float() * sizes[:, None])
    totals = torch.zeros_like(sizes).index_add_(0, mapping, sizes)
    return sums[keep] / totals[keep, None]


def _add_singletons(grouping: Grouping, features: torch.Tensor, candidates: torch.Tensor, missing: int) -> Grouping:
    if candidates.shape[0] < missing:
        raise RuntimeError(f"exact-count reconcile needs {missing} more tokens, only {candidates.shape[0]} available")
    chosen = candidates[:missing]
    group, weights = grouping.group.clone(), grouping.weights.clone()
    group[chosen] = grouping.num_groups + torch.arange(missing, device=group.device)
    weights[chosen] = 1.0
    rows = None if grouping.features is None else torch.cat([grouping.features.float(), features[chosen].float()])
    return Grouping(
        group=group, representative=torch.cat([grouping.representative, chosen]), weights=weights, features=rows
    )


def reconcile(
    grouping: Grouping,
    features: torch.Tensor,
    frame_size: int,
    count: int,
    priority: torch.Tensor,
    candidates: torch.Tensor,
) -> Grouping:
    """Return ``grouping`` changed to exactly ``count`` groups (unchanged when it already has ``count``).

    Args:
        grouping: the native grouping.
        features: ``[M, D]`` input features (the similarity of two groups is the cosine of their means, or of their
            rows when ``grouping.features`` is set; a new singleton's row is its input feature).
        frame_size: ``N`` tokens per frame (a group's frame is its representative's).
        count: the exact number of groups wanted.
        priority: ``[G]`` float, higher = more important; the lowest fold first.
        candidates: ``[C]`` long flat indices, best first, of tokens that may become singletons; none of them may be a
            representative.
    """
    excess = grouping.num_groups - count
    if excess > 0:
        return _fold(grouping, features, frame_size, priority.float(), excess)
    if excess < 0:
        return _add_singletons(grouping, features, candidates, -excess)
    return grouping

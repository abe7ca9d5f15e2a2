"""Exact-count reconcile (methods.md §0.7): bring a method's native grouping to exactly ``count`` output rows.

A method describes its native output as a :class:`Grouping` (the group of every input token, each group's
representative, member weights) plus a priority per group and an ordered list of tokens that may come back as
singletons. Then

* too many groups: the lowest-priority groups are folded, all at once, into the most similar remaining group of the
  same frame (any frame when their own frame has none left); a fold is a member-count-weighted mean of the two rows;
* too few groups: the first candidates (dropped tokens, or members taken out of their group) become singletons.

The result goes to :func:`vidcompress.assemble.merge_tokens`, which fixes order, ``source`` and positions.

Everything runs in fixed shapes, without a host sync: a method whose native number of groups depends on the data
builds a *padded* grouping (:attr:`Grouping.size` on the device, at most a host-known capacity of groups), and
:func:`reconcile` turns it into exactly ``count`` groups with masks over fixed upper bounds.

A method whose output rows are not the means of their members (AOT: optimal-transport-updated anchors) sets
``Grouping.features``; reconcile then carries those rows: a fold is the member-count-weighted mean of the two rows
(the similarity is the cosine of the rows), a new singleton carries its own input feature, and a group that loses a
member keeps its row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..kernels import pairwise, segment_mean
from .budgets import first_set
from .sorting import sort_ints, stable_order

__all__ = ["Grouping", "group_by_representative", "release_candidates", "group_priority", "reconcile"]


@dataclass(frozen=True)
class Grouping:
    """A method's grouping of the ``M = T*N`` input tokens.

    Args:
        group: ``[M]`` long group of every token, ``-1`` for dropped tokens; groups are ``0 .. G-1``.
        representative: ``[G]`` long flat index whose position each group carries (a member of the group); in a
            padded grouping ``[capacity]``, the real groups first and ``M`` in the unused slots.
        weights: ``[M]`` float32 member weights of the (weighted) mean.
        features: optional ``[G, D]`` float32 output row of every group, when it is not the members' mean.
        size: padded groupings only: ``G`` as a long scalar on the device; ``None`` when every slot is a group.
    """

    group: torch.Tensor
    representative: torch.Tensor
    weights: torch.Tensor
    features: torch.Tensor | None = None
    size: torch.Tensor | None = None

    @property
    def num_groups(self) -> int:
        """Number of group slots (the capacity of a padded grouping)."""
        return int(self.representative.shape[0])

    def trimmed(self) -> Grouping:
        """This grouping with exactly its real groups: reads :attr:`size` back (a sync; for native counts only)."""
        if self.size is None:
            return self
        size = int(self.size)
        rows = None if self.features is None else self.features[:size]
        return Grouping(self.group, self.representative[:size], self.weights, rows)

    @property
    def num_real(self) -> torch.Tensor | int:
        """Number of real groups: the device scalar :attr:`size`, or :attr:`num_groups`."""
        return self.num_groups if self.size is None else self.size


def group_by_representative(
    rep_of: torch.Tensor,
    weights: torch.Tensor | None = None,
    num_groups: int | None = None,
    max_groups: int | None = None,
) -> Grouping:
    """Grouping from ``rep_of`` ``[M]``: the flat index of each token's representative, ``-1`` when dropped.

    Groups are numbered in order of their representatives; ``weights`` default to 1 (plain means). Without a host
    sync when the caller knows on the host either ``num_groups``, the exact number of distinct representatives, or
    ``max_groups``, an upper bound (the grouping is then padded to ``max_groups`` slots, :attr:`Grouping.size` holding
    the real number). With neither, the representatives are found with ``unique`` (a sync on CUDA).
    """
    member = rep_of >= 0
    weights = torch.ones(rep_of.shape[0], device=rep_of.device) if weights is None else weights.float()
    if num_groups is None and max_groups is None:
        reps = torch.unique(rep_of[member])  # sorted
        group = torch.where(member, torch.searchsorted(reps, rep_of.clamp(min=0)), torch.full_like(rep_of, -1))
        return Grouping(group=group, representative=reps, weights=weights)
    # a representative's group is the number of representatives before it (a prefix sum: no sort, no search)
    total = rep_of.shape[0]
    present = torch.zeros(total + 1, dtype=torch.bool, device=rep_of.device).index_fill_(
        0, torch.where(member, rep_of, total), True
    )[:total]
    reps = first_set(present, min(total, num_groups or max_groups))
    group = torch.where(member, (present.long().cumsum(0) - 1)[rep_of.clamp(min=0)], -1)
    size = None if num_groups is not None else present.sum()
    return Grouping(group=group, representative=reps, weights=weights, size=size)


def _representative_mask(grouping: Grouping) -> torch.Tensor:
    """``[M]`` bool: the tokens that represent a (real) group; padded slots point past the end and are dropped."""
    total = grouping.group.shape[0]
    flags = torch.zeros(total + 1, dtype=torch.bool, device=grouping.group.device)
    return flags.index_fill_(0, grouping.representative.clamp(max=total), True)[:total]


def release_candidates(grouping: Grouping, score: torch.Tensor) -> torch.Tensor:
    """All ``M`` tokens, best first as singletons: dropped tokens, then non-representative members, each by
    descending ``score`` ``[M]`` (ties: lower index first), then the representatives (never to be released)."""
    order = torch.sort(score.float(), descending=True, stable=True).indices
    kind = (grouping.group >= 0).long() + _representative_mask(grouping).long()  # 0 dropped, 1 member, 2 rep
    return order[sort_ints(kind[order], 2, stable=True).indices]


def group_priority(grouping: Grouping, score: torch.Tensor) -> torch.Tensor:
    """``[G]`` priority: the number of members, ties broken by the representative's ``score`` (higher = keep)."""
    member = grouping.group >= 0
    sizes = torch.zeros(grouping.num_groups, device=score.device).index_add_(
        0, grouping.group.clamp(min=0), member.float()
    )
    padded_score = torch.cat([score.float(), score.new_full((1,), float("inf"), dtype=torch.float32)])
    rep_score = padded_score[grouping.representative.clamp(max=score.shape[0])]
    rank = sort_ints(torch.argsort(rep_score, stable=True), rep_score.shape[0], stable=True).indices
    return sizes + rank.float() / (grouping.num_real + 1)


@dataclass(frozen=True)
class _Fold:
    """The fold step's decision: ``mapping`` ``[G]`` of every group onto the group it ends in, ``keep`` ``[G]``
    bool, re-normalised member ``weights`` ``[M]``, member counts ``sizes`` ``[G]`` and every group's ``rows``
    ``[G, D]`` before folding (the method's rows, or the float32 member means)."""

    mapping: torch.Tensor
    keep: torch.Tensor
    weights: torch.Tensor
    sizes: torch.Tensor
    rows: torch.Tensor


def _fold(
    grouping: Grouping, features: torch.Tensor, frame_size: int, priority: torch.Tensor, excess: torch.Tensor,
    max_excess: int,
) -> _Fold:
    """Fold the ``excess`` (at most ``max_excess``) lowest-priority real groups into their most similar kept group."""
    group, reps = grouping.group, grouping.representative
    num_groups = grouping.num_groups
    device = group.device
    slots = torch.arange(num_groups, device=device)
    real = slots < grouping.num_real
    member = group >= 0
    safe = group.clamp(min=0)
    sizes = torch.zeros(num_groups, device=device).index_add_(0, safe, member.float())
    totals = torch.zeros(num_groups, device=device).index_add_(0, safe, grouping.weights * member)
    # member-count weighting, so that folding two rows averages them by their number of members
    weights = grouping.weights * (sizes / totals.clamp(min=1e-30))[safe] * member
    if grouping.features is None:  # each group's weighted mean (one segment-mean pass)
        means = segment_mean(features, torch.where(member, group, -1), num_groups, weights, dtype=torch.float32,
                             validate=False)
    else:
        means = grouping.features
    # lowest priority folds first; ties: the group with the lower representative folds first
    by_rep = sort_ints(reps, grouping.group.shape[0]).indices
    ranked = torch.where(real, priority, torch.full_like(priority, float("inf")))
    fold = by_rep[stable_order(ranked[by_rep])[:max_excess]]
    fold_valid = torch.arange(fold.shape[0], device=device) < excess
    folded = torch.zeros(num_groups + 1, dtype=torch.bool, device=device)
    folded.index_fill_(0, torch.where(fold_valid, fold, num_groups), True)
    keep = real & ~folded[:num_groups]
    frame = reps // frame_size
    cosine = pairwise(means[fold][None], means[None], kind="cosine")[0]  # [max_excess, G], tensor cores on CUDA
    affinity = cosine + 2.0 * (frame[fold][:, None] == frame[None, :])
    target = affinity.masked_fill(~keep[None, :], float("-inf")).argmax(-1)
    mapping = torch.cat([slots, slots.new_full((1,), num_groups)])
    mapping.scatter_(0, torch.where(fold_valid, fold, num_groups), torch.where(fold_valid, target, num_groups))
    return _Fold(mapping=mapping[:num_groups], keep=keep, weights=weights, sizes=sizes, rows=means)


def _folded_rows(rows: torch.Tensor, sizes: torch.Tensor, mapping: torch.Tensor) -> torch.Tensor:
    """``[G, D]`` member-count-weighted mean of the rows mapped onto each group (NaN for groups folded away)."""
    sums = torch.zeros_like(rows, dtype=torch.float32).index_add_(0, mapping, rows.float() * sizes[:, None])
    totals = torch.zeros_like(sizes).index_add_(0, mapping, sizes)
    return sums / totals[:, None]


def reconcile(
    grouping: Grouping,
    features: torch.Tensor,
    frame_size: int,
    count: int,
    priority: torch.Tensor,
    candidates: torch.Tensor,
    max_excess: int | None = None,
) -> Grouping:
    """Return ``grouping`` changed to exactly ``count`` groups (unchanged when it already has exactly ``count`` and
    is not padded).

    Runs without a host sync, in shapes fixed by ``count``, the capacity of ``grouping`` and ``max_excess``. A changed
    grouping carries its output rows in :attr:`Grouping.features` (float32) when the method set rows (folded), and
    when it did not but ``candidates`` is empty (nothing can leave a group): the member means the fold step computes
    anyway, so :func:`~vidcompress.assemble.merge_tokens` takes them as ``rows`` instead of a second pass over the
    features. Otherwise ``features`` stays ``None``.

    Args:
        grouping: the native grouping, exact or padded.
        features: ``[M, D]`` input features (the similarity of two groups is the cosine of their means, or of their
            rows when ``grouping.features`` is set; a new singleton's row is its input feature).
        frame_size: ``N`` tokens per frame (a group's frame is its representative's).
        count: the exact number of groups wanted.
        priority: ``[G]`` float, higher = more important; the lowest fold first.
        candidates: ``[C]`` long flat indices, best first, of tokens that may become singletons; the first
            ``count - G`` of them must not be representatives.
        max_excess: host upper bound on ``G - count`` (a padded grouping's capacity minus ``count`` by default).
    """
    if grouping.size is None:
        if grouping.num_groups == count:
            return grouping
        if candidates.shape[0] < count - grouping.num_groups:
            raise RuntimeError(
                f"exact-count reconcile needs {count - grouping.num_groups} more tokens, "
                f"only {candidates.shape[0]} available"
            )
    bound = grouping.num_groups - count if max_excess is None else min(max_excess, grouping.num_groups - count)
    excess = grouping.num_real - count
    folding = _fold(grouping, features, frame_size, priority.float(), excess, max(bound, 0))
    return _assemble(grouping, features, count, folding, excess, candidates)


def _on_device(value: torch.Tensor | int, device: torch.device) -> torch.Tensor:
    """``value`` as a 0-dim long tensor on ``device``; a host int is filled in place (no host-to-device copy)."""
    return value if isinstance(value, torch.Tensor) else torch.full((), value, dtype=torch.long, device=device)


def _assemble(
    grouping: Grouping, features: torch.Tensor, count: int, folding: _Fold, excess: torch.Tensor | int,
    candidates: torch.Tensor,
) -> Grouping:
    """The ``count`` groups: the kept ones renumbered in order, then the first ``count - kept`` candidates as
    singletons (none when groups were folded)."""
    device = grouping.group.device
    total = grouping.group.shape[0]
    folds = _on_device(excess, device) > 0
    renumber = torch.where(folding.keep, folding.keep.long().cumsum(0) - 1, -1)
    member = grouping.group >= 0
    group = torch.where(member, renumber[folding.mapping[grouping.group.clamp(min=0)]], -1)
    weights = torch.where(folds, folding.weights, grouping.weights.float())
    kept = torch.clamp(_on_device(grouping.num_real, device), max=count)
    keep_ids = first_set(folding.keep, count)  # num_groups: an empty slot
    released = candidates[:count]
    order = torch.arange(released.shape[0], device=device)
    chosen = torch.where(order < count - kept, released, total)
    group = torch.cat([group, group.new_full((1,), -1)]).scatter_(0, chosen, kept + order)[:total]
    weights = torch.cat([weights, weights.new_zeros(1)]).index_fill_(0, chosen, 1.0)[:total]
    rows = torch.arange(count, device=device)
    new = rows >= kept
    release_index = (rows - kept).clamp(min=0, max=max(released.shape[0] - 1, 0))
    released = released if released.shape[0] else rows.new_zeros(1)
    reps = torch.cat([grouping.representative, grouping.representative.new_full((1,), total)])
    representative = torch.where(new, released[release_index], reps[keep_ids])
    out_features = None
    # member means are carried only when no member can leave its group (a released member changes the mean)
    if grouping.features is not None or candidates.shape[0] == 0:
        rows_out = torch.where(folds, _folded_rows(folding.rows, folding.sizes, folding.mapping),
                               folding.rows.float())
        rows_out = torch.cat([rows_out, rows_out.new_zeros(1, rows_out.shape[1])])
        out_features = torch.where(new[:, None], features[released[release_index]].float(), rows_out[keep_ids])
    return Grouping(group=group, representative=representative, weights=weights, features=out_features)

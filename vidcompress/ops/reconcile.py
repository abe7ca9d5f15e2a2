"""Exact-count reconcile of a grouping (``methods.md`` §0.7, our proposal).

A method with a data-dependent native count ``G`` produces groups (each token's group, each group's representative
and feature). To return exactly ``K`` tokens:

* ``G > K``: the ``G − K`` groups of lowest priority are folded into their most similar surviving group of the same
  frame (cosine of the group features; any frame when none of theirs survives); the survivor's feature becomes the
  member-count-weighted mean;
* ``G < K``: the ``K − G`` non-representative tokens of highest priority leave their group (or the dropped set) and
  become singletons carrying their own feature. The group they leave keeps its feature.

Priorities are per token; a group's priority is its representative's. Ties are broken by index.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["Grouping", "reconcile_count"]


@dataclass
class Grouping:
    """Groups of the flat input tokens of one video.

    Attributes:
        group: ``[T*N]`` long, each token's group in ``0 .. G-1``, or ``-1`` when dropped.
        representative: ``[G]`` long flat index of each group's representative (a member of the group).
        features: ``[G, D]`` float32 feature of each group.
    """

    group: torch.Tensor
    representative: torch.Tensor
    features: torch.Tensor

    @property
    def num_groups(self) -> int:
        return int(self.representative.shape[0])


def _ascending(priority: torch.Tensor) -> torch.Tensor:
    """Indices sorting ``priority`` ascending, equal values by index."""
    return torch.sort(priority, stable=True).indices


def _fold(grouping: Grouping, priority: torch.Tensor, tokens_per_frame: int, count: int) -> Grouping:
    num_groups = grouping.num_groups
    device = grouping.group.device
    order = _ascending(priority[grouping.representative])
    folded, survivors = order[: num_groups - count], torch.sort(order[num_groups - count :]).values
    frame = grouping.representative // tokens_per_frame
    unit = F.normalize(grouping.features, dim=-1)
    similarity = unit[folded] @ unit[survivors].T  # [F, S]
    same_frame = frame[folded][:, None] == frame[survivors][None, :]
    has_survivor = same_frame.any(dim=1, keepdim=True)
    similarity = similarity.masked_fill(has_survivor & ~same_frame, float("-inf"))
    target = survivors[similarity.argmax(dim=1)]
    destination = torch.arange(num_groups, device=device)
    destination[folded] = target
    sizes = torch.bincount(grouping.group[grouping.group >= 0], minlength=num_groups).float()
    sums = torch.zeros_like(grouping.features).index_add_(0, destination, grouping.features * sizes[:, None])
    totals = torch.zeros(num_groups, device=device).index_add_(0, destination, sizes)
    renumber = torch.full((num_groups,), -1, dtype=torch.long, device=device)
    renumber[survivors] = torch.arange(count, device=device)
    kept = grouping.group >= 0
    group = torch.where(kept, renumber[destination[grouping.group.clamp(min=0)]], grouping.group)
    features = sums[survivors] / totals[survivors, None]
    return Grouping(group, grouping.representative[survivors], features)


def _add_back(grouping: Grouping, priority: torch.Tensor, flat_features: torch.Tensor, count: int) -> Grouping:
    num_groups = grouping.num_groups
    device = grouping.group.device
    candidate = torch.ones_like(grouping.group, dtype=torch.bool)
    candidate[grouping.representative] = False
    ranked = torch.sort(priority.masked_fill(~candidate, float("-inf")), descending=True, stable=True).indices
    added = torch.sort(ranked[: count - num_groups]).values
    group = grouping.group.clone()
    group[added] = torch.arange(num_groups, count, device=device)
    representative = torch.cat([grouping.representative, added])
    features = torch.cat([grouping.features, flat_features[added].float()])
    return Grouping(group, representative, features)


def reconcile_count(
    grouping: Grouping, priority: torch.Tensor, flat_features: torch.Tensor, tokens_per_frame: int, count: int
) -> Grouping:
    """``grouping`` brought to exactly ``count`` groups (see the module docstring).

    Args:
        grouping: the method's native groups.
        priority: ``[T*N]`` float, higher survives / returns first.
        flat_features: ``[T*N, D]`` input features (the features of re-added singletons).
        tokens_per_frame: ``N``, to tell frames apart.
        count: the exact number of groups wanted, in ``[1, T*N]``.
    """
    total = grouping.group.shape[0]
    if not 1 <= count <= total:
        raise ValueError(f"count must lie in [1, {total}], got {count}")
    if grouping.num_groups > count:
        return _fold(grouping, priority.float(), tokens_per_frame, count)
    if grouping.num_groups < count:
        return _add_back(grouping, priority.float(), flat_features, count)
    return grouping

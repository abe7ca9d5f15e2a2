"""Sorting bounded integers (token indices, slot numbers, small labels) in the narrowest key dtype.

CUDA sorts 1-D tensors with a radix sort of 8 bits per pass: an int64 key takes 8 passes over the data, an int16 key 2.
The index-like keys of the token stage are bounded by the number of tokens (6272 at 32 frames x 196), so sorting them
as int16 (int32 beyond 32 766) cuts the passes by 4 (2) with the same result. The returned values are int64 again.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["COUNTING_SORT_MAX", "SortedInts", "counting_rank", "narrowest", "sort_ints", "stable_order"]

#: Under ``torch.compile``, axes up to this long are ordered by counting (an ``[..., n, n]`` comparison that Inductor
#: fuses into one kernel) instead of ``torch.sort``: a CUDA sort of a few hundred keys is one latency-bound block of
#: 12-26 us on an H100. Eagerly the counting form is half a dozen launches, so ``torch.sort`` stays.
COUNTING_SORT_MAX = 1024


class SortedInts(NamedTuple):
    """``values`` (int64) in ascending order and ``indices`` (int64) of ``torch.sort``."""

    values: torch.Tensor
    indices: torch.Tensor


def narrowest(values: torch.Tensor, bound: int) -> torch.Tensor:
    """``values`` (integers in ``[-1, bound]``) in the narrowest signed dtype that holds them (int16 or int32); the
    tensor itself when it needs int64."""
    if bound < torch.iinfo(torch.int16).max:
        return values.to(torch.int16)
    if bound < torch.iinfo(torch.int32).max:
        return values.to(torch.int32)
    return values


def counting_rank(values: torch.Tensor) -> torch.Tensor:
    """Ascending rank of every entry along the last axis, ties in input order: the number of entries before it
    (smaller, or equal at a lower index), from an ``[..., n, n]`` comparison. For short axes (``n`` up to
    :data:`COUNTING_SORT_MAX`); no NaN."""
    index = torch.arange(values.shape[-1], device=values.device)
    mine, other = values[..., :, None], values[..., None, :]
    return ((other < mine) | ((other == mine) & (index[None, :] < index[:, None]))).sum(-1)


def stable_order(values: torch.Tensor) -> torch.Tensor:
    """Indices that sort ``values`` ascending along the last axis, ties in input order (``torch.sort(...,
    stable=True).indices``); by counting (:func:`counting_rank`) under ``torch.compile`` when the axis is short."""
    n = values.shape[-1]
    if not (torch.compiler.is_compiling() and n <= COUNTING_SORT_MAX):
        return torch.sort(values, stable=True).indices
    rank = counting_rank(values)
    return torch.empty_like(rank).scatter_(-1, rank, torch.arange(n, device=values.device).expand_as(rank))


def sort_ints(values: torch.Tensor, bound: int, *, dim: int = -1, stable: bool = False) -> SortedInts:
    """``torch.sort(values, dim, stable=stable)`` of integers in ``[-1, bound]`` (``bound`` known on the host), keyed
    in the narrowest dtype; ties keep their input order when ``stable`` (always, for the counting form of short axes
    under ``torch.compile``: :func:`stable_order`)."""
    if torch.compiler.is_compiling() and values.shape[dim] <= COUNTING_SORT_MAX:
        moved = values.movedim(dim, -1)
        order = stable_order(moved)
        return SortedInts(values=moved.gather(-1, order).long().movedim(-1, dim), indices=order.movedim(-1, dim))
    result = torch.sort(narrowest(values, bound), dim=dim, stable=stable)
    return SortedInts(values=result.values.long(), indices=result.indices)

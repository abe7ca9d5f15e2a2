"""Sorting bounded integers (token indices, slot numbers, small labels) in the narrowest key dtype.

CUDA sorts 1-D tensors with a radix sort of 8 bits per pass: an int64 key takes 8 passes over the data, an int16 key 2.
The index-like keys of the token stage are bounded by the number of tokens (6272 at 32 frames x 196), so sorting them
as int16 (int32 beyond 32 766) cuts the passes by 4 (2) with the same result. The returned values are int64 again.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["SortedInts", "narrowest", "sort_ints"]


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


def sort_ints(values: torch.Tensor, bound: int, *, dim: int = -1, stable: bool = False) -> SortedInts:
    """``torch.sort(values, dim, stable=stable)`` of integers in ``[-1, bound]`` (``bound`` known on the host), keyed
    in the narrowest dtype; ties keep their input order when ``stable``."""
    result = torch.sort(narrowest(values, bound), dim=dim, stable=stable)
    return SortedInts(values=result.values.long(), indices=result.indices)

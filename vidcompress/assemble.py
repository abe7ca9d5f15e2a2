"""Build a :class:`CompressedTokens` from a method's decision: which tokens to keep, or how to group them.

Every method ends in one of these two functions, so ordering, ``source`` bookkeeping and positions follow the
contract in one place. Both run on the tensors' device without reading data back to the host: the output size is
the length of ``indices`` (selection) or ``num_groups`` (merge), both known before the data is seen.
"""

from __future__ import annotations

import torch

from .kernels import segment_mean
from .ops.sorting import sort_ints
from .tokens import CompressedTokens, VideoTokens

__all__ = ["identity", "select_tokens", "merge_tokens", "host_to_device"]


def host_to_device(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a host tensor to ``device`` without blocking the host: through pinned memory onto a CUDA device.

    For indices that depend on the grid and the count only (cache the result per device): the copy is queued on the
    current stream, so no host synchronisation happens even on the first call.
    """
    if device.type != "cuda":
        return values.to(device)
    return values.pin_memory().to(device, non_blocking=True)


def identity(tokens: VideoTokens) -> CompressedTokens:
    """All tokens, unchanged and in order."""
    n = tokens.num_tokens
    index = torch.arange(n, device=tokens.features.device)
    return CompressedTokens(
        features=tokens.flat_features, positions=tokens.flat_positions, source=index, representatives=index
    )


def select_tokens(tokens: VideoTokens, indices: torch.Tensor) -> CompressedTokens:
    """Keep the tokens at flat ``indices`` (any order, no duplicates); drop the rest.

    Output rows follow temporal-then-raster order whatever the order of ``indices``. Pass ``indices`` on the
    features' device (or pinned on the host) on the hot path: a pageable host tensor is copied synchronously.
    """
    keep = sort_ints(indices.to(device=tokens.features.device, non_blocking=True), tokens.num_tokens).values
    source = torch.full((tokens.num_tokens,), -1, dtype=torch.long, device=keep.device)
    source[keep] = torch.arange(keep.shape[0], device=keep.device)
    return CompressedTokens(
        features=tokens.flat_features[keep],
        positions=tokens.flat_positions[keep],
        source=source,
        representatives=keep,
    )


def merge_tokens(
    tokens: VideoTokens,
    group: torch.Tensor,
    representative: torch.Tensor,
    weights: torch.Tensor | None = None,
    rows: torch.Tensor | None = None,
) -> CompressedTokens:
    """Merge tokens into groups: each output row is the (weighted) mean of its members' features.

    Args:
        tokens: the input.
        group: ``[T*N]`` long, the group of every token, ``-1`` for dropped tokens; groups are ``0 .. G-1``.
        representative: ``[G]`` long flat index whose position group ``g`` carries (must be a member of ``g``).
        weights: optional ``[T*N]`` non-negative member weights (e.g. HoliTom's ``beta`` for the centre).
        rows: optional ``[G, D]`` row of every group (group order), already computed (:func:`vidcompress.ops.
            reconcile.reconcile` returns the means it computed anyway; AOT's transported anchors): taken as the
            output rows, cast to the input dtype, instead of a pass over the features.

    Returns:
        ``G`` output rows in the order of their representatives; ``source`` renumbered accordingly. The means are
        :func:`~vidcompress.kernels.segment_mean` (float32 accumulation; the Triton kernel on CUDA); a group whose
        weights sum to zero is all zeros.
    """
    device = tokens.features.device
    group = group.to(device=device, dtype=torch.long)
    representative = representative.to(device=device, dtype=torch.long)
    num_groups = representative.shape[0]
    order = sort_ints(representative, group.shape[0]).indices
    # rank[g] = output row of group g
    rank = torch.empty_like(order)
    rank[order] = torch.arange(num_groups, device=device)
    kept = group >= 0
    source = torch.where(kept, rank[group.clamp(min=0)], torch.full_like(group, -1))
    reps = representative[order]
    if rows is not None:
        expected = (num_groups, tokens.features.shape[-1])
        if tuple(rows.shape) != expected:
            raise ValueError(f"rows must be [G, D] = {expected}, got {tuple(rows.shape)}")
        merged = rows[order].to(tokens.features.dtype)
    else:
        if weights is not None:
            weights = weights.to(device=device, dtype=torch.float32)
        merged = segment_mean(tokens.flat_features, source, num_groups, weights, validate=False)
    return CompressedTokens(
        features=merged, positions=tokens.flat_positions[reps], source=source, representatives=reps
    )

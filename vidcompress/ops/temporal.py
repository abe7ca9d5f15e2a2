"""Temporal building blocks: frame similarities, segmentation into runs of frames, segment statistics.

All similarities are cosines computed in float32 whatever the input dtype. A segmentation is held as ``[T]`` long
segment ids (``0 .. S-1``, non-decreasing) or as the ``[T-1]`` bool "cut after frame t" mask it comes from.

bf16 / fp16 features are read as they are and converted inside each reduction (no float32 copy of the whole
video is made first): at 32 x 196 x 3584 such a copy is 90 MB written and read again.
"""

from __future__ import annotations

import torch

from ..kernels import segment_mean
from ..kernels.pairwise import NORM_EPS
from .sorting import stable_order

__all__ = [
    "unit",
    "unit_and_norm",
    "frame_means",
    "adjacent_similarity",
    "cuts_with_minimum",
    "segment_ids",
    "segment_bounds",
    "segment_means",
]


def unit_and_norm(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` in float32, L2-normalised along the last dimension (``F.normalize``'s ``x / max(||x||, eps)``), and the
    float32 norms ``[..., 1]``. Reads ``x`` twice in its own dtype and writes the float32 result once."""
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        x = x.float()
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=torch.float32)
    return torch.div(x, norm.clamp_min(NORM_EPS)), norm  # a bf16 / fp16 x promotes to float32


def unit(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32, L2-normalised along the last dimension."""
    return unit_and_norm(x)[0]


def frame_means(features: torch.Tensor) -> torch.Tensor:
    """``[T, D]`` float32 mean token of every frame of ``features`` ``[T, N, D]``."""
    return features.mean(1, dtype=torch.float32)


def adjacent_similarity(frame_features: torch.Tensor) -> torch.Tensor:
    """``[T-1]`` cosine similarity between consecutive rows of ``frame_features`` ``[T, D]``."""
    normed = unit(frame_features)
    return (normed[:-1] * normed[1:]).sum(-1)



def cuts_with_minimum(similarity: torch.Tensor, threshold: float, min_segments: int) -> torch.Tensor:
    """Cut wherever ``similarity < threshold``, then at the least similar remaining transitions up to ``min_segments``.

    Returns the ``[T-1]`` bool mask of cuts. With ``T`` frames there are at most ``T`` segments; this equals the union
    of "every transition below the threshold" and "the ``min_segments - 1`` least similar transitions" (FlashVID's
    complementary segmentation, FastVID's DySeg).

    Sync-free: every transition below the threshold is less similar than every other one, so the result is the
    ``max(#below, min_segments - 1)`` least similar transitions (ties: lower index), a rank compared on the device.
    """
    below = similarity < threshold
    wanted = min(min_segments - 1, similarity.shape[0])
    rank = torch.empty_like(similarity, dtype=torch.long)
    rank[stable_order(similarity)] = torch.arange(similarity.shape[0], device=similarity.device)
    return rank < torch.clamp(below.sum(), min=wanted)


def segment_ids(cuts: torch.Tensor) -> torch.Tensor:
    """``[T]`` segment id of every frame from the ``[T-1]`` cut mask."""
    return torch.cat([cuts.new_zeros(1, dtype=torch.long), cuts.long().cumsum(0)])


def frame_segment_totals(values: torch.Tensor | None, ids: torch.Tensor) -> torch.Tensor:
    """``[T]``: for every frame, the sum of ``values`` ``[T]`` over the frames of its segment (``None``: the number of
    frames in its segment); exact for integer values, in ``values``' dtype.

    A ``[T, T]`` same-segment mask summed by rows instead of ``index_add_`` and a gather: as many launches eagerly,
    and ``torch.compile`` fuses it, where an integer ``index_add_`` falls back to ATen's sort-based ``index_put_``
    (a sort, an asynchronous bounds check and a scatter per call).
    """
    same = ids[:, None] == ids[None, :]
    return same.sum(1) if values is None else (same * values[None, :]).sum(1)


def segment_first_frames(ids: torch.Tensor) -> torch.Tensor:
    """``[T]`` index of the first frame of every frame's segment (segments are runs of frames: ``ids`` non-decreasing):
    the number of frames in earlier segments."""
    return (ids[None, :] < ids[:, None]).sum(1)


def segment_bounds(ids: torch.Tensor) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` frame ranges (stop exclusive) of the segments of ``ids``."""
    lengths = torch.bincount(ids.cpu()).tolist()
    bounds, start = [], 0
    for length in lengths:
        bounds.append((start, start + length))
        start += length
    return bounds


def segment_means(values: torch.Tensor, ids: torch.Tensor, num_segments: int | None = None) -> torch.Tensor:
    """``[S, ...]`` float32 mean of the rows of ``values`` ``[T, ...]`` in each segment.

    ``num_segments``: ``S`` when the caller knows it (or an upper bound: extra segments are empty, their means
    zeros); ``None`` reads ``ids.max()`` back to the host (a synchronisation on CUDA). One
    :func:`~vidcompress.kernels.segment_mean` over the flattened rows (the Triton kernel on CUDA: ``values`` read
    once in its own dtype, float32 accumulation).
    """
    count = int(ids.max()) + 1 if num_segments is None else num_segments
    rows = values.reshape(values.shape[0], -1)
    means = segment_mean(rows, ids, count, dtype=torch.float32, validate=False)
    return means.reshape(count, *values.shape[1:])

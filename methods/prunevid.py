"""``prunevid``: PruneVid token stage (temporal segments, static/dynamic split, DPC-kNN merging)."""

from __future__ import annotations

import math

import torch

from vidcompress.assemble import merge_tokens
from vidcompress.compressor import Compressor
from vidcompress.kernels import segment_mean
from vidcompress.kernels.pairwise import NORM_EPS
from vidcompress.kernels.runs import refine_runs, run_ids
from vidcompress.ops.dpc_knn import dpc_knn
from vidcompress.ops.reconcile import group_by_representative, group_priority, reconcile, release_candidates
from vidcompress.ops.temporal import frame_means, segment_means
from vidcompress.registry import register_compressor
from vidcompress.tokens import CompressedTokens, VideoTokens


def contiguous_segments(labels: torch.Tensor) -> torch.Tensor:
    """Turn per-frame cluster labels ``[T]`` into contiguous segments: ``[T]`` long segment id of every frame
    (PruneVid's refinement, :mod:`vidcompress.kernels.runs`)."""
    return run_ids(refine_runs(labels))


@register_compressor(
    "prunevid",
    paper="PruneVid: Visual Token Pruning for Efficient Video Large Language Models (ACL 2025, arXiv 2412.16117)",
    reference="Visual-AI/PruneVid",
)
class PruneVid(Compressor):
    """PruneVid token stage: contiguous temporal segments, static positions averaged over time, DPC-kNN merging.

    Follows ``models/pllava/modeling_pllava.py`` (PLLaVA; no LLaVA-OV / Qwen code was released):

    1. DPC-kNN (``k``) on the frame-mean features with ``max(1, int(T * temporal_segment_ratio))`` clusters, refined
       into contiguous segments (:func:`contiguous_segments`).
    2. In a segment a position is static when the mean pairwise cosine of its tokens across the segment's frames
       (off-diagonal) is ``> tau``; static positions are averaged over the segment.
    3. The static tokens of a segment, and the dynamic tokens of each frame, are clustered by DPC-kNN (``k``) into
       ``int(n * ratio)`` clusters (at least one) when there are more than ``min_cluster_tokens`` of them (else
       kept as they are); a cluster becomes the plain mean of its members and takes its centre's position (a static
       cluster: the segment's first frame and the centre's ``(h, w)``).

    Not provided: the paper's stage 2 (at layer 10 keep ``int(0.4 * size)`` tokens of every static group and every
    dynamic frame by the attention of the text after the video, max over heads then over queries, and cut the KV
    cache of layers 0-10 to the survivors). The LLM-stage mechanism cannot do it faithfully: it keeps the full KV
    cache of the layers below ``K`` (so the decode-time saving, the point of the cut, would be lost), it aggregates
    attention by the mean over heads and queries, and it passes no token-stage grouping into the LLM, so the per-group
    budgets could not be kept. A global top-k under those limits would be another method, so none is offered; chain
    ``"prunevid+fastv"`` for attention pruning inside the LLM.

    Retention: PruneVid reports a realised, data-dependent count ("17 %"). ``ratio`` is ``cluster_ratio`` when given
    (the paper's 0.5), else ``min(1, retention * T * N / tokens_after_averaging)``. By default the native count is
    reconciled to ``target_count`` (methods.md §0.7): the smallest clusters fold into their most similar neighbour of
    the same frame; missing rows come back as members taken out of their cluster. ``exact=False`` returns the native
    count. Differences: contract order (the reference puts static tokens first per segment); index tie-breaks.
    """

    def __init__(
        self,
        retention: float = 1.0,
        *,
        exact: bool = True,
        tau: float = 0.8,
        temporal_segment_ratio: float = 0.25,
        cluster_ratio: float | None = None,
        k: int = 7,
        min_cluster_tokens: int = 14,
    ) -> None:
        super().__init__(retention, exact=exact)
        if not -1.0 <= tau <= 1.0:
            raise ValueError(f"tau must lie in [-1, 1], got {tau!r}")
        if not 0.0 < temporal_segment_ratio <= 1.0:
            raise ValueError(f"temporal_segment_ratio must lie in (0, 1], got {temporal_segment_ratio!r}")
        if cluster_ratio is not None and not 0.0 < cluster_ratio <= 1.0:
            raise ValueError(f"cluster_ratio must lie in (0, 1] or be None, got {cluster_ratio!r}")
        if int(k) < 1 or int(min_cluster_tokens) < 0:
            raise ValueError(f"k must be >= 1 and min_cluster_tokens >= 0, got {k!r}, {min_cluster_tokens!r}")
        self.tau = float(tau)
        self.temporal_segment_ratio = float(temporal_segment_ratio)
        self.cluster_ratio = None if cluster_ratio is None else float(cluster_ratio)
        self.k = int(k)
        self.min_cluster_tokens = int(min_cluster_tokens)

    def num_clusters(self, frames: int) -> int:
        """Temporal clusters, an upper bound of the number of segments."""
        return max(1, int(frames * self.temporal_segment_ratio))

    def segments(self, tokens: VideoTokens) -> torch.Tensor:
        """``[T]`` contiguous temporal segment of every frame (ids ``0 .. S-1``, ``S <= num_clusters``)."""
        _, assignment = dpc_knn(frame_means(tokens.features)[None], self.num_clusters(tokens.grid[0]), self.k)
        return contiguous_segments(assignment[0])

    def native_bound(self, frames: int, tokens_per_frame: int, segments: int, count: int) -> int:
        """Host upper bound of the native count: ``ratio * units`` plus, per static or dynamic group, one row of
        rounding or up to ``min_cluster_tokens`` rows kept as they are."""
        total = frames * tokens_per_frame
        clustered = count if self.cluster_ratio is None else math.ceil(self.cluster_ratio * total)
        return min(total, clustered + (segments + frames) * max(1, self.min_cluster_tokens))

    def _ratio(self, static: torch.Tensor, dynamic: torch.Tensor, count: int) -> torch.Tensor | float:
        """``cluster_ratio``, else ``min(1, count / units)`` on the device (a true division: ``count / tensor``
        would multiply by a rounded reciprocal)."""
        if self.cluster_ratio is not None:
            return self.cluster_ratio
        units = (static.sum() + dynamic.sum()).double()
        return torch.clamp(torch.full_like(units, count) / units, max=1.0)

    def _cluster_counts(self, sizes: torch.Tensor, ratio: torch.Tensor | float) -> torch.Tensor:
        reduced = torch.floor(sizes.double() * ratio).long().clamp(min=1)
        return torch.where(sizes > self.min_cluster_tokens, reduced, sizes)

    def compress(self, tokens: VideoTokens, count: int) -> CompressedTokens:
        t, n, _ = tokens.features.shape
        device = tokens.features.device
        segment_of = self.segments(tokens)
        segments = min(t, self.num_clusters(t))  # padded: unused segments are empty
        # frames per segment by a membership count (an integer index_add_ does not fuse under torch.compile)
        lengths = (segment_of[None, :] == torch.arange(segments, device=device)[:, None]).sum(1)
        # sum of the unit vectors of each (segment, position): one weighted segment-mean pass with weights
        # 1 / |x| scaled back by their totals, instead of a float32 copy of the normalised video
        inverse_norm = 1.0 / torch.linalg.vector_norm(tokens.flat_features, dim=-1, dtype=torch.float32).clamp(
            min=NORM_EPS
        )
        row = (segment_of[:, None] * n + torch.arange(n, device=device)).reshape(-1)
        totals = torch.zeros(segments * n, device=device).index_add_(0, row, inverse_norm)
        direction_sums = segment_mean(
            tokens.flat_features, row, segments * n, inverse_norm, row_scale=totals, dtype=torch.float32,
            validate=False,
        ).reshape(segments, n, -1)
        pairs = (lengths * (lengths - 1)).float()[:, None]
        mean_cosine = (direction_sums.square().sum(-1) - lengths[:, None]) / pairs.clamp(min=1)
        static = (mean_cosine > self.tau) & (lengths[:, None] > 1)  # [segments, N]
        dynamic = ~static[segment_of]  # [T, N]
        ratio = self._ratio(static, dynamic, count)

        means = segment_means(tokens.features, segment_of, segments)  # empty segments: zeros
        centre, assignment = dpc_knn(means, self._cluster_counts(static.sum(1), ratio), self.k, static, max_k=self.k)
        starts = lengths.cumsum(0) - lengths
        static_rep = torch.where(assignment >= 0, starts[:, None] * n + assignment, torch.full_like(assignment, -1))
        centre, assignment = dpc_knn(
            tokens.features, self._cluster_counts(dynamic.sum(1), ratio), self.k, dynamic, max_k=self.k
        )
        first = torch.arange(t, device=device)[:, None] * n
        rep_of = torch.where(assignment >= 0, first + assignment, static_rep[segment_of])

        grouping = group_by_representative(rep_of.reshape(-1), max_groups=self.native_bound(t, n, segments, count))
        if self.exact:
            order = torch.zeros(t * n, device=device)
            grouping = reconcile(
                grouping,
                tokens.flat_features,
                n,
                count,
                group_priority(grouping, order),
                release_candidates(grouping, order),
            )
        else:
            grouping = grouping.trimmed()  # the native count is data-dependent: read back
        return merge_tokens(tokens, grouping.group, grouping.representative, grouping.weights, grouping.features)

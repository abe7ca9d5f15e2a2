"""``fastvid``: FastVID token stage (dynamic segmentation, salient tokens, density-based token merging)."""

from __future__ import annotations

import math

import torch

from vidcompress.assemble import merge_tokens
from vidcompress.compressor import Compressor
from vidcompress.ops.dpc_knn import density_peaks, rank_desc
from vidcompress.ops.reconcile import group_by_representative, group_priority, reconcile, release_candidates
from vidcompress.ops.temporal import (
    adjacent_similarity,
    cuts_with_minimum,
    frame_means,
    segment_bounds,
    segment_ids,
    unit,
)
from vidcompress.registry import register_compressor
from vidcompress.tokens import CompressedTokens, VideoTokens

DTM_ASSIGNMENTS = ("reference", "exclusive")


def anchor_context_counts(bounds: list[tuple[int, int]], per_frame: int, interval: int) -> list[int]:
    """Context tokens of every frame: a segment's ``per_frame * length`` split evenly (floor) over its anchor frames,
    every ``interval``-th frame counted back from the segment's last frame; other frames get none."""
    counts = []
    for start, stop in bounds:
        length = stop - start
        anchors = math.ceil(length / interval)
        share = per_frame * length // anchors
        counts += [share if (length - 1 - i) % interval == 0 else 0 for i in range(length)]
    return counts


def rank01(values: torch.Tensor) -> torch.Tensor:
    """Rank of each value in ascending order (ties by index), scaled to ``[0, 1)``."""
    order = torch.sort(values.float(), stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(values.shape[0], device=values.device)
    return rank.float() / max(values.shape[0], 1)


@register_compressor(
    "fastvid",
    needs_attention=True,
    paper="FastVID: Dynamic Density Pruning for Fast Video Large Language Models (NeurIPS 2025, arXiv 2503.11187)",
    reference="LunarShen/FastVID",
)
class FastVID(Compressor):
    """FastVID: per frame, salient tokens by attention plus density-peak context tokens that absorb the rest.

    Follows the LLaVA "parallel" version (``modeling_qwen2.py`` of ``fastvid_llavaonevision``):

    1. DySeg: cosine of adjacent frames' global features; cut at the ``min_segments - 1`` least similar transitions
       and wherever the similarity is below ``segment_threshold``.
    2. Per frame ``R = int(N * retention)``: ``R - int(R * context_ratio)`` salient tokens by top attention; the
       segment's context budget ``int(R * context_ratio) * length`` goes, split evenly, to its anchor frames (every
       ``anchor_interval``-th frame counted back from the last one).
    3. Density score (DPC, ``k`` neighbours, among the frame's non-salient tokens); an anchor frame's context tokens are
       its top scores. Every non-salient token of the segment joins its most cosine-similar context token, and a
       context row becomes ``w * context + (1 - w) * mean(joined tokens, itself included)`` with
       ``w = max(1 / (n + 1), beta)``. Merged rows take the context token's position.

    ``dtm_assignment="reference"`` (default) reproduces the reference's overlap: in a segment with several anchor
    frames every non-salient token is assigned once per anchor frame, so it feeds one context of each anchor frame;
    ``source`` then records its single most similar context, and those rows are not plain means of their ``source``
    members. ``"exclusive"`` assigns each token to its single best context (rows are exact weighted member means).

    Differences from the reference: the frame global feature is the frame's mean token and the attention is the
    contract's vision attention received (the reference uses SigLIP's MAP head on LLaVA, a mean-query probe on Qwen);
    a context token always joins itself; ties go to the lower index instead of random noise; positions follow the
    adapter (contiguous on LLaVA-OV, not the reference's gapped 1-D indices).

    Retention: ``retention`` is ``fastvid_retention_ratio`` (per-frame ``int(N * r)``, floored, but at least one
    token per frame where the reference would keep none). With ``exact=False``
    that native count is returned; by default it is reconciled to ``target_count`` (methods.md §0.7): missing rows
    come back as dropped / absorbed tokens of highest attention, surplus rows fold smallest first (then by
    attention for salient tokens, density score for context tokens).
    """

    def __init__(
        self,
        retention: float = 1.0,
        *,
        exact: bool = True,
        min_segments: int = 8,
        segment_threshold: float = 0.9,
        context_ratio: float = 0.4,
        anchor_interval: int = 4,
        beta: float = 0.6,
        k: int = 4,
        dtm_assignment: str = "reference",
    ) -> None:
        super().__init__(retention, exact=exact)
        if int(min_segments) < 1 or int(anchor_interval) < 1 or int(k) < 1:
            raise ValueError(
                f"min_segments, anchor_interval and k must be >= 1, got {min_segments!r}, {anchor_interval!r}, {k!r}"
            )
        if not 0.0 <= context_ratio <= 1.0:
            raise ValueError(f"context_ratio must lie in [0, 1], got {context_ratio!r}")
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must lie in [0, 1], got {beta!r}")
        if dtm_assignment not in DTM_ASSIGNMENTS:
            raise ValueError(f"dtm_assignment must be one of {DTM_ASSIGNMENTS}, got {dtm_assignment!r}")
        self.min_segments = int(min_segments)
        self.segment_threshold = float(segment_threshold)
        self.context_ratio = float(context_ratio)
        self.anchor_interval = int(anchor_interval)
        self.beta = float(beta)
        self.k = int(k)
        self.dtm_assignment = dtm_assignment

    def compress(self, tokens: VideoTokens, count: int) -> CompressedTokens:
        assert tokens.attention is not None  # checked by Compressor.__call__
        t, n, _ = tokens.features.shape
        device = tokens.features.device
        ids = segment_ids(
            cuts_with_minimum(
                adjacent_similarity(frame_means(tokens.features)), self.segment_threshold, self.min_segments
            )
        )
        bounds = segment_bounds(ids)
        retain = max(1, int(n * self.retention))
        context_per_frame = int(retain * self.context_ratio)
        salient = rank_desc(tokens.attention.float()) < retain - context_per_frame  # [T, N]
        density = density_peaks(tokens.features, self.k, ~salient).score
        contexts = torch.tensor(anchor_context_counts(bounds, context_per_frame, self.anchor_interval), device=device)
        context = (rank_desc(density) < contexts[:, None]) & ~salient

        flat = torch.arange(t * n, device=device)
        context_index = flat[context.reshape(-1)]  # [C]
        pool = ~salient.reshape(-1)  # tokens to absorb
        same_segment = ids.repeat_interleave(n)[:, None] == ids[context_index // n][None, :]
        normed = unit(tokens.flat_features)
        affinity = (normed @ normed[context_index].T).masked_fill(~same_segment, float("-inf"))  # [T*N, C]
        affinity[context_index, torch.arange(context_index.shape[0], device=device)] = float("inf")
        has_context = pool & same_segment.any(1)
        rep_of = torch.full((t * n,), -1, dtype=torch.long, device=device)
        rep_of[salient.reshape(-1)] = flat[salient.reshape(-1)]
        if context_index.numel() > 0:
            rep_of[has_context] = context_index[affinity[has_context].argmax(1)]
        weights = self._member_weights(rep_of, context_index)

        grouping = group_by_representative(rep_of, weights)
        sizes = torch.bincount(grouping.group[grouping.group >= 0], minlength=grouping.num_groups)
        if self.exact:
            attention = tokens.attention.reshape(-1)
            score = torch.where(salient.reshape(-1), rank01(attention), rank01(density.reshape(-1)))
            grouping = reconcile(
                grouping,
                tokens.flat_features,
                n,
                count,
                group_priority(grouping, score),
                release_candidates(grouping, attention),
            )
        out = merge_tokens(tokens, grouping.group, grouping.representative, grouping.weights)
        if self.dtm_assignment == "reference":
            out = self._overlap_rows(tokens, out, ids, pool, context_index, rep_of, sizes)
        return out

    def _member_weights(self, rep_of: torch.Tensor, context_index: torch.Tensor) -> torch.Tensor:
        """Weights of ``w * context + (1 - w) * mean(members)``, ``w = max(1 / (n + 1), beta)``."""
        members = torch.bincount(rep_of[rep_of >= 0], minlength=rep_of.shape[0]).float()  # per representative
        n_joined = members[rep_of.clamp(min=0)]
        w = torch.clamp(1.0 / (n_joined + 1.0), min=self.beta)
        weights = torch.where(rep_of >= 0, (1.0 - w) / n_joined.clamp(min=1), torch.zeros_like(w))
        is_context = torch.zeros_like(rep_of, dtype=torch.bool)
        is_context[context_index] = True
        return weights + torch.where(is_context, w, torch.zeros_like(w))

    def _overlap_rows(
        self,
        tokens: VideoTokens,
        out: CompressedTokens,
        ids: torch.Tensor,
        pool: torch.Tensor,
        context_index: torch.Tensor,
        rep_of: torch.Tensor,
        native_sizes: torch.Tensor,
    ) -> CompressedTokens:
        """Rows of the reference's per-anchor-frame assignment, for context rows the reconcile left unchanged."""
        n = tokens.grid[1] * tokens.grid[2]
        normed = unit(tokens.flat_features)
        features = tokens.flat_features.float()
        frame_of_context = context_index // n
        values = torch.empty(context_index.shape[0], features.shape[1], device=features.device)
        for frame in torch.unique(frame_of_context).tolist():
            own = torch.nonzero(frame_of_context == frame).squeeze(1)
            members = torch.nonzero(pool & (ids.repeat_interleave(n) == ids[frame])).squeeze(1)
            affinity = normed[members] @ normed[context_index[own]].T
            is_self = members[:, None] == context_index[own][None, :]
            choice = affinity.masked_fill(is_self, float("inf")).argmax(1)
            sums = torch.zeros(own.shape[0], features.shape[1], device=features.device)
            sums.index_add_(0, choice, features[members])
            joined = torch.bincount(choice, minlength=own.shape[0]).float()[:, None]
            w = torch.clamp(1.0 / (joined + 1.0), min=self.beta)
            values[own] = w * features[context_index[own]] + (1.0 - w) * sums / joined.clamp(min=1)
        row = out.source[context_index]
        out_sizes = torch.bincount(out.source[out.source >= 0], minlength=out.num_tokens)
        native_group = torch.searchsorted(torch.unique(rep_of[rep_of >= 0]), context_index)
        unchanged = (out.representatives[row] == context_index) & (out_sizes[row] == native_sizes[native_group])
        merged = out.features.clone()
        merged[row[unchanged]] = values[unchanged].to(merged.dtype)
        return CompressedTokens(
            features=merged, positions=out.positions, source=out.source, representatives=out.representatives
        )

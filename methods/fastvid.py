"""``fastvid``: FastVID token stage (dynamic segmentation, salient tokens, density-based token merging)."""

from __future__ import annotations

import torch

from vidcompress.assemble import merge_tokens
from vidcompress.compressor import Compressor
from vidcompress.kernels import matmul_float32, pairwise
from vidcompress.ops.budgets import first_set
from vidcompress.ops.dpc_knn import density_peaks, rank_desc
from vidcompress.ops.reconcile import group_by_representative, group_priority, reconcile, release_candidates
from vidcompress.ops.temporal import (
    adjacent_similarity,
    cuts_with_minimum,
    frame_means,
    frame_segment_totals,
    segment_first_frames,
    segment_ids,
)
from vidcompress.registry import register_compressor
from vidcompress.tokens import CompressedTokens, VideoTokens

DTM_ASSIGNMENTS = ("reference", "exclusive")


def anchor_context_counts(ids: torch.Tensor, per_frame: int, interval: int) -> torch.Tensor:
    """``[T]`` context tokens of every frame of the segmentation ``ids``: a segment's ``per_frame * length`` split
    evenly (floor) over its anchor frames, every ``interval``-th frame counted back from the segment's last frame;
    other frames get none. Computed on the device."""
    frames = ids.shape[0]
    length = frame_segment_totals(None, ids)
    from_end = segment_first_frames(ids) + length - 1 - torch.arange(frames, device=ids.device)
    share = per_frame * length // ((length + interval - 1) // interval)
    return torch.where(from_end % interval == 0, share, 0)


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
        ids = segment_ids(
            cuts_with_minimum(
                adjacent_similarity(frame_means(tokens.features)), self.segment_threshold, self.min_segments
            )
        )
        retain = max(1, int(n * self.retention))
        context_per_frame = int(retain * self.context_ratio)
        salient = rank_desc(tokens.attention.float()) < retain - context_per_frame  # [T, N]
        density = density_peaks(tokens.features, self.k, ~salient).score
        contexts = anchor_context_counts(ids, context_per_frame, self.anchor_interval)
        context = ((rank_desc(density) < contexts[:, None]) & ~salient).reshape(-1)
        # a segment's anchor frames share at most context_per_frame tokens per frame of the segment
        context_index = first_set(context, context_per_frame * t)  # [C], padded with T*N
        affinity = self._context_affinity(tokens, ids, context_index)  # [T*N, C]
        pool = ~salient.reshape(-1)  # tokens to absorb
        flat = torch.arange(t * n, device=context.device)
        rep_of = torch.where(salient.reshape(-1), flat, -1)
        if context_index.shape[0] > 0:
            has_context = pool & (affinity > float("-inf")).any(1)
            rep_of = torch.where(has_context, context_index[affinity.argmax(1)], rep_of)
        members = torch.zeros(t * n + 1, device=flat.device).index_add_(
            0, torch.where(rep_of >= 0, rep_of, t * n), torch.ones(t * n, device=flat.device)
        )[: t * n]  # per representative
        weights = self._member_weights(rep_of, members, context)

        if self.exact:
            attention = tokens.attention.reshape(-1)
            score = torch.where(salient.reshape(-1), rank01(attention), rank01(density.reshape(-1)))
            # salient and context tokens: at most retain a frame
            padded = group_by_representative(rep_of, weights, max_groups=t * retain)
            grouping = reconcile(
                padded,
                tokens.flat_features,
                n,
                count,
                group_priority(padded, score),
                release_candidates(padded, attention),
            )
        else:
            grouping = group_by_representative(rep_of, weights)  # the native count: read back
        out = merge_tokens(tokens, grouping.group, grouping.representative, grouping.weights, grouping.features)
        if self.dtm_assignment == "reference" and context_index.shape[0] > 0:
            out = self._overlap_rows(tokens, out, pool, context, context_index, affinity, members)
        return out

    @staticmethod
    def _context_affinity(tokens: VideoTokens, ids: torch.Tensor, context_index: torch.Tensor) -> torch.Tensor:
        """``[T*N, C]`` cosine of every token to every context token of its segment (``-inf`` for other segments
        and padding, ``inf`` for the token itself)."""
        n = tokens.grid[1] * tokens.grid[2]
        size = tokens.num_tokens
        real = context_index < size
        safe = context_index.clamp(max=size - 1)
        segment = torch.where(real, ids[safe // n], -1)
        flat = tokens.flat_features[None]
        affinity = pairwise(flat, flat[:, safe], kind="cosine")[0].masked_fill(
            ids.repeat_interleave(n, output_size=size)[:, None] != segment[None, :], float("-inf")
        )
        own = torch.arange(size, device=safe.device)[:, None] == context_index[None, :]
        return affinity.masked_fill(own, float("inf"))

    def _member_weights(self, rep_of: torch.Tensor, members: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Weights of ``w * context + (1 - w) * mean(members)``, ``w = max(1 / (n + 1), beta)``."""
        n_joined = members[rep_of.clamp(min=0)]
        w = torch.clamp(1.0 / (n_joined + 1.0), min=self.beta)
        weights = torch.where(rep_of >= 0, (1.0 - w) / n_joined.clamp(min=1), torch.zeros_like(w))
        return weights + torch.where(context, w, torch.zeros_like(w))

    def _overlap_rows(
        self,
        tokens: VideoTokens,
        out: CompressedTokens,
        pool: torch.Tensor,
        context: torch.Tensor,
        context_index: torch.Tensor,
        affinity: torch.Tensor,
        members: torch.Tensor,
    ) -> CompressedTokens:
        """Rows of the reference's per-anchor-frame assignment, for context rows the reconcile left unchanged.

        Each pool token joins, for every anchor frame of its segment, its most similar context token of that frame.
        """
        n = tokens.grid[1] * tokens.grid[2]
        size = tokens.num_tokens
        features = tokens.flat_features
        joins = self._anchor_choices(affinity.masked_fill(~pool[:, None], float("-inf")), context_index // n, size // n)
        joined = joins.sum(0, dtype=torch.float32)[:, None]
        sums = matmul_float32(joins.T.to(features.dtype), features)  # 0/1 weights: exact products
        w = torch.clamp(1.0 / (joined + 1.0), min=self.beta)
        values = w * features[context_index.clamp(max=size - 1)].float() + (1.0 - w) * sums / joined.clamp(min=1)
        out_sizes = torch.zeros(out.num_tokens + 1, device=features.device).index_add_(
            0, torch.where(out.source >= 0, out.source, out.num_tokens), torch.ones(size, device=features.device)
        )[: out.num_tokens]
        reps = out.representatives
        unchanged = context[reps] & (out_sizes == members[reps])  # the row of a context token, as natively grouped
        slot = (torch.cumsum(context, 0) - 1)[reps].clamp(min=0)
        merged = torch.where(unchanged[:, None], values[slot].to(out.features.dtype), out.features)
        return CompressedTokens(
            features=merged, positions=out.positions, source=out.source, representatives=out.representatives
        )

    @staticmethod
    def _anchor_choices(affinity: torch.Tensor, frame_of: torch.Tensor, frames: int) -> torch.Tensor:
        """``[M, C]`` bool: column ``c`` is the first maximum of row ``m`` among the columns of its frame
        ``frame_of[c]`` (in ``0 .. frames``); entries at ``-inf`` are never chosen."""
        rows, columns = affinity.shape
        frame = frame_of[None, :].expand(rows, columns)
        best = torch.full((rows, frames + 1), float("-inf"), device=affinity.device)
        best = best.scatter_reduce(1, frame, affinity, reduce="amax")
        is_best = (affinity == best.gather(1, frame)) & (affinity > float("-inf"))
        column = torch.arange(columns, device=affinity.device).expand(rows, columns)
        first = torch.full((rows, frames + 1), columns, dtype=torch.long, device=affinity.device)
        first = first.scatter_reduce(1, frame, torch.where(is_best, column, columns), reduce="amin")
        return is_best & (first.gather(1, frame) == column)

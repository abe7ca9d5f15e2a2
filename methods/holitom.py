"""``holitom``: HoliTom (global redundancy-aware segmentation, static merging, dynamic selection, and the optional
similarity merge inside the LLM)."""

from __future__ import annotations

import math

import torch

from vidcompress.assemble import merge_tokens
from vidcompress.compressor import Compressor
from vidcompress.llm_stage import LayerInputs, LayerReduction, keep_top_visual
from vidcompress.ops.dpc_knn import dpc_knn, rank_desc
from vidcompress.ops.reconcile import group_by_representative, group_priority, reconcile, release_candidates
from vidcompress.ops.temporal import aligned_similarity, segment_means, unit
from vidcompress.registry import register_compressor
from vidcompress.tokens import CompressedTokens, VideoTokens

STATIC_MERGES = ("reference", "mean")
INNER_MERGES = ("reference", "mean")


def static_windows(similarity: torch.Tensor, tau: float, max_window: int) -> tuple[list[tuple[int, int]], int]:
    """HoliTom's dynamic programme: windows ``[(start, stop), ...]`` (stop exclusive) and the tokens they remove.

    ``similarity`` ``[T-1, N]`` is the position-aligned cosine of adjacent frames. A window ``[s, e]`` makes the
    positions with similarity ``> tau`` at every step inside it static; its gain is ``|static| * (e - s)`` (tokens
    removed by temporal averaging). ``dp[i] = max(dp[i-1], max_W dp[i-W] + gain(i-W+1, i))`` for ``2 <= W <=
    min(i+1, max_window)``; a longer window must strictly improve (so ties keep singletons), as in the reference.
    """
    frames = similarity.shape[0] + 1
    above = similarity > tau
    gain = [[0] * frames for _ in range(frames)]
    for start in range(frames - 1):
        counts = torch.cumprod(above[start:].long(), dim=0).sum(1).tolist()  # static count of [start, start+1+j]
        for offset, static in enumerate(counts):
            gain[start][start + 1 + offset] = static * (offset + 1)
    best = [0] * frames
    first = [0] * frames
    for end in range(frames):
        value, start = (best[end - 1] if end > 0 else 0), end
        for width in range(2, min(end + 1, max_window) + 1):
            before = end - width
            candidate = (best[before] if before >= 0 else 0) + gain[before + 1][end]
            if candidate > value:
                value, start = candidate, before + 1
        best[end], first[end] = value, start
    windows, end = [], frames - 1
    while end >= 0:
        windows.append((first[end], end + 1))
        end = first[end] - 1
    return windows[::-1], best[-1]


def beta_weights(assignment: torch.Tensor, centre: torch.Tensor, beta: float) -> torch.Tensor:
    """Member weights of ``beta * centre + (1 - beta) * mean(other members)``, ``[B, n]`` (0 for unassigned)."""
    rows, n = assignment.shape
    member = assignment >= 0
    others = torch.zeros(rows, n, device=assignment.device)
    others.scatter_add_(1, assignment.clamp(min=0), (member & ~centre).float())
    own_others = others.gather(1, assignment.clamp(min=0))
    centre_weight = torch.where(own_others > 0, torch.full_like(own_others, beta), torch.ones_like(own_others))
    weights = torch.where(centre, centre_weight, (1 - beta) / own_others.clamp(min=1))
    return weights * member


def _gather_rows(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values[b, index[b]]`` for ``values`` ``[B, S, D]`` and ``index`` ``[B, K]``."""
    return values.gather(1, index[..., None].expand(-1, -1, values.shape[-1]))


def running_average_weights(target: torch.Tensor, num_targets: int, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights of HoliTom's inner merge: ``(target_weight [B, K], member_weight [B, M])``.

    ``target`` ``[B, M]`` is the kept token each merged token joins, members listed in sequence order. ``"reference"``
    is the reference's in-place running average ``h <- (h + h_member) / 2`` applied member after member: with ``m``
    members the kept token weighs ``2**-m`` and the ``i``-th member (from 1) ``2**-(m - i + 1)``. ``"mean"`` weighs the
    kept token and its members equally.
    """
    batch, members = target.shape
    counts = torch.zeros(batch, num_targets, device=target.device).scatter_add_(
        1, target, torch.ones_like(target, dtype=torch.float)
    )
    own_count = counts.gather(1, target)
    if mode == "mean":
        return 1.0 / (counts + 1.0), 1.0 / (own_count + 1.0)
    sequence = torch.arange(members, device=target.device).expand(batch, members)
    order = torch.argsort(target * members + sequence, dim=1)  # by target, then by sequence position
    starts = counts.cumsum(1) - counts
    rank_sorted = sequence - starts.gather(1, target.gather(1, order)).long()  # 0-based rank among its target's
    rank = torch.empty_like(rank_sorted).scatter_(1, order, rank_sorted)
    return torch.exp2(-counts), torch.exp2(rank.float() - own_count)


@register_compressor(
    "holitom",
    stages=("token", "llm"),
    needs_attention=True,
    paper="HoliTom: Holistic Token Merging for Fast Video Large Language Models (NeurIPS 2025, arXiv 2505.21334)",
    reference="cokeshao/HoliTom",
)
class HoliTom(Compressor):
    """HoliTom token stage: windows of static positions are averaged over time and clustered; dynamic tokens are
    selected by vision attention (``holitom/main.py``).

    1. Position-aligned cosine of adjacent frames; a dynamic programme (:func:`static_windows`) splits the video into
       windows maximising the tokens removed by averaging positions whose similarity stays ``> tau`` in the window.
    2. The budget ``r`` is rescaled to the tokens left after averaging: ``r' = min(r / ((NT - R) / NT), 1)``.
    3. Per window: each static position is averaged over the window's frames; DPC-kNN (``k = min(k, C)``) groups them
       into ``C = round(n_static * r')`` clusters merged as ``beta * centre + (1 - beta) * mean(other members)``
       (``beta = 0.6``); per frame, ``ceil(n_dynamic * r')`` dynamic tokens: ``round(. * (1 - dominant_ratio))`` by top
       attention, the rest as DPC-kNN clusters of the remaining dynamic tokens with the same ``beta`` rule (with the
       default ``dominant_ratio = 0`` this is attention top-k and the other dynamic tokens are dropped).

    Positions: a static cluster takes the first frame of its window and its centre's ``(h, w)``; dynamic tokens keep
    their own.

    LLM stage (``Qwen2Model_holitom.forward``; off by default, as in the reference, which runs it only when
    ``HOLITOM_k`` and ``HOLITOM_r`` are set; ``llm_merge=True`` turns it on with the scripts' values): at decoder layer
    ``llm_layer`` (``HOLITOM_k``, 18) the ``round(L_v * (1 - llm_merge_ratio))`` (``HOLITOM_r`` = 0.5) visual tokens
    that the last prompt token attends to most at layer ``llm_layer - 1`` (mean over heads) stay; every other visual
    token is merged into its most cosine-similar kept token (hidden states entering layer ``llm_layer``, similarities
    taken before any merge) and removed. ``inner_merge="reference"`` reproduces the reference's in-place running
    average ``h <- (h + h_member) / 2`` in sequence order (later members weigh more, :func:`running_average_weights`);
    ``inner_merge="mean"`` gives the member mean. Kept tokens keep their original positions. Differences: merges are
    computed in float32 in one batched step (the reference loops in the model dtype); the score is recomputed for the
    last query row in a hook; ties go to the earlier position; batches are supported when every row holds the same
    number of visual tokens (the reference: batch 1); LLaVA-OV's trailing newline is never merged or counted (the
    reference's visual span includes it; ``protect_newline`` is therefore always on); at least one visual token is
    kept when there are any (the reference crashes when the rounding keeps none).

    Differences from the reference: a window with static positions keeps at least one static cluster (the
    reference's ``round`` can give none and drop them all, which could leave no token at all); output in contract
    order (the reference puts each window's static tokens first); ties broken by index instead of random noise.
    ``static_merge="mean"`` replaces the ``beta`` rule by a plain mean of the members (the reference's ``NO_BETA``
    switch, which its own default leaves off).

    Retention: ``retention`` is HoliTom's ``RETAIN_RATIO`` (before the LLM); the inner merge is extra (the
    literature's "10 %/5 %" label: 10 % at the LLM input, 5 % after layer 18). The per-window rounding makes the native
    count (``exact=False``) data-dependent; by default it is reconciled to ``target_count`` (methods.md §0.7): surplus
    rows fold by member count (then attention of the representative), missing rows come back as the dropped dynamic
    tokens of highest attention.
    """

    llm_attention_query = "last"

    def __init__(
        self,
        retention: float = 1.0,
        *,
        exact: bool = True,
        tau: float = 0.8,
        beta: float = 0.6,
        dominant_ratio: float = 0.0,
        k: int = 7,
        max_window: int = 1024,
        static_merge: str = "reference",
        llm_merge: bool = False,
        llm_layer: int = 18,
        llm_merge_ratio: float = 0.5,
        inner_merge: str = "reference",
    ) -> None:
        super().__init__(retention, exact=exact)
        if not -1.0 <= tau <= 1.0:
            raise ValueError(f"tau must lie in [-1, 1], got {tau!r}")
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must lie in [0, 1], got {beta!r}")
        if not 0.0 <= dominant_ratio <= 1.0:
            raise ValueError(f"dominant_ratio must lie in [0, 1], got {dominant_ratio!r}")
        if int(k) < 1 or int(max_window) < 2:
            raise ValueError(f"k must be >= 1 and max_window >= 2, got k={k!r}, max_window={max_window!r}")
        if static_merge not in STATIC_MERGES:
            raise ValueError(f"static_merge must be one of {STATIC_MERGES}, got {static_merge!r}")
        self.tau = float(tau)
        self.beta = float(beta)
        self.dominant_ratio = float(dominant_ratio)
        self.k = int(k)
        self.max_window = int(max_window)
        self.static_merge = static_merge
        if isinstance(llm_layer, bool) or int(llm_layer) != llm_layer or llm_layer < 1:
            raise ValueError(f"llm_layer must be an integer >= 1 (scores come from llm_layer - 1), got {llm_layer!r}")
        if not 0.0 <= llm_merge_ratio < 1.0:
            raise ValueError(f"llm_merge_ratio must lie in [0, 1), got {llm_merge_ratio!r}")
        if inner_merge not in INNER_MERGES:
            raise ValueError(f"inner_merge must be one of {INNER_MERGES}, got {inner_merge!r}")
        self.llm_merge = bool(llm_merge)
        self.llm_layer = int(llm_layer)
        self.llm_merge_ratio = float(llm_merge_ratio)
        self.inner_merge = inner_merge

    @property
    def stages(self) -> tuple[str, ...]:
        """``("token", "llm")`` with ``llm_merge=True``, else ``("token",)``."""
        return self.info.stages if self.llm_merge else tuple(s for s in self.info.stages if s != "llm")

    def reduce_in_llm(self, inputs: LayerInputs) -> LayerReduction:
        """Keep the most attended visual tokens and merge every other visual token into its most similar kept one."""
        assert inputs.attention is not None  # requested through llm_attention_query
        hidden = inputs.hidden_states
        batch = hidden.shape[0]
        visual = int(inputs.visual_mask[0].sum())
        keep_visual = min(visual, max(1, round(visual * (1.0 - self.llm_merge_ratio))))
        keep = keep_top_visual(inputs, inputs.attention, keep_visual)
        kept = torch.zeros_like(inputs.visual_mask).scatter_(1, keep, True)
        target_pos = torch.nonzero(inputs.visual_mask & kept)[:, 1].view(batch, -1)
        member_pos = torch.nonzero(inputs.visual_mask & ~kept)[:, 1].view(batch, -1)
        if member_pos.shape[1] == 0:
            return LayerReduction(keep=keep)
        targets = _gather_rows(hidden, target_pos).float()
        members = _gather_rows(hidden, member_pos).float()
        nearest = (unit(members) @ unit(targets).transpose(1, 2)).argmax(-1)  # [B, M], first index on ties
        target_weight, member_weight = running_average_weights(nearest, keep_visual, self.inner_merge)
        merged = targets * target_weight[..., None]
        merged.scatter_add_(1, nearest[..., None].expand_as(members), members * member_weight[..., None])
        replaced = hidden.scatter(1, target_pos[..., None].expand_as(targets), merged.to(hidden.dtype))
        return LayerReduction(keep=keep, hidden_states=_gather_rows(replaced, keep))

    def compress(self, tokens: VideoTokens, count: int) -> CompressedTokens:
        assert tokens.attention is not None  # checked by Compressor.__call__
        t, n, _ = tokens.features.shape
        device = tokens.features.device
        similarity = aligned_similarity(tokens.features)
        windows, removed = static_windows(similarity, self.tau, self.max_window)
        total = t * n
        ratio = min(self.retention / ((total - removed) / total), 1.0) if total > removed else self.retention
        window_of = torch.cat(
            [torch.full((stop - start,), i, device=device) for i, (start, stop) in enumerate(windows)]
        )
        static = torch.stack(
            [(similarity[start : stop - 1] > self.tau).all(0) & (stop - start > 1) for start, stop in windows]
        )  # [windows, N]; one-frame windows have no static position
        rep_of = torch.full((t, n), -1, dtype=torch.long, device=device)
        weights = torch.zeros(t, n, device=device)
        self._merge_static(tokens, windows, window_of, static, ratio, rep_of, weights)
        self._select_dynamic(tokens, static[window_of], ratio, rep_of, weights)
        grouping = group_by_representative(rep_of.reshape(-1), weights.reshape(-1))
        if self.exact:
            attention = tokens.attention.reshape(-1)
            grouping = reconcile(
                grouping,
                tokens.flat_features,
                n,
                count,
                group_priority(grouping, attention),
                release_candidates(grouping, attention),
            )
        return merge_tokens(tokens, grouping.group, grouping.representative, grouping.weights)

    def _merge_weights(self, assignment: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
        if self.static_merge == "mean":
            return (assignment >= 0).float()
        return beta_weights(assignment, centre, self.beta)

    def _merge_static(
        self,
        tokens: VideoTokens,
        windows: list[tuple[int, int]],
        window_of: torch.Tensor,
        static: torch.Tensor,
        ratio: float,
        rep_of: torch.Tensor,
        weights: torch.Tensor,
    ) -> None:
        """Fill ``rep_of`` / ``weights`` ``[T, N]`` for the static tokens: clusters of per-window temporal means."""
        n = static.shape[1]
        units = segment_means(tokens.features, window_of)  # [windows, N, D] temporal means
        clusters = torch.tensor(
            [max(1, round(s * ratio)) if s else 0 for s in static.sum(1).tolist()], device=static.device
        )
        valid = static & (clusters[:, None] > 0)
        centre, assignment = dpc_knn(units, clusters, clusters.clamp(min=1, max=self.k), valid)
        unit_weight = self._merge_weights(assignment, centre)
        starts = torch.tensor([start for start, _ in windows], device=static.device)
        unit_rep = torch.where(assignment >= 0, starts[:, None] * n + assignment, torch.full_like(assignment, -1))
        lengths = torch.bincount(window_of).float()
        rep_of.copy_(unit_rep[window_of])
        weights.copy_(unit_weight[window_of] / lengths[window_of][:, None])

    def _select_dynamic(
        self, tokens: VideoTokens, static: torch.Tensor, ratio: float, rep_of: torch.Tensor, weights: torch.Tensor
    ) -> None:
        """Fill ``rep_of`` / ``weights`` for the dynamic tokens: attention top-k, then DPC-kNN contextual clusters."""
        t, n = static.shape
        dynamic = ~static
        budget = torch.tensor([math.ceil(int(d) * ratio) for d in dynamic.sum(1).tolist()], device=static.device)
        dominant = torch.tensor(
            [round(b * (1 - self.dominant_ratio)) for b in budget.tolist()], device=static.device, dtype=torch.long
        )
        attention = tokens.attention.float().masked_fill(static, float("-inf"))
        chosen = (rank_desc(attention) < dominant[:, None]) & dynamic
        flat_index = torch.arange(t * n, device=static.device).reshape(t, n)
        rep_of[chosen] = flat_index[chosen]
        weights[chosen] = 1.0
        contextual = budget - dominant
        if int(contextual.max()) == 0:
            return
        rest = dynamic & ~chosen & (contextual[:, None] > 0)
        centre, assignment = dpc_knn(tokens.features, contextual, contextual.clamp(min=1, max=self.k), rest)
        merged = assignment >= 0
        rep_of[merged] = (flat_index[:, :1] + assignment)[merged]
        weights[merged] = self._merge_weights(assignment, centre)[merged]

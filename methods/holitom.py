"""``holitom``: HoliTom (global redundancy-aware segmentation, static merging, dynamic selection, and the optional
similarity merge inside the LLM)."""

from __future__ import annotations

import torch

from vidcompress.assemble import merge_tokens
from vidcompress.compressor import Compressor
from vidcompress.kernels import aligned_cosine
from vidcompress.llm_stage import LayerInputs, LayerReduction, keep_top_visual
from vidcompress.ops.dpc_knn import dpc_knn, rank_desc
from vidcompress.ops.reconcile import group_by_representative, group_priority, reconcile, release_candidates
from vidcompress.ops.temporal import segment_means, unit
from vidcompress.registry import register_compressor
from vidcompress.tokens import CompressedTokens, VideoTokens

STATIC_MERGES = ("reference", "mean")
INNER_MERGES = ("reference", "mean")


def static_windows(similarity: torch.Tensor, tau: float, max_window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HoliTom's dynamic programme: ``([T] long window of every frame, 0-dim tokens the windows remove)``.

    ``similarity`` ``[T-1, N]`` is the position-aligned cosine of adjacent frames. A window ``[s, e]`` makes the
    positions with similarity ``> tau`` at every step inside it static; its gain is ``|static| * (e - s)`` (tokens
    removed by temporal averaging). ``dp[i] = max(dp[i-1], max_W dp[i-W] + gain(i-W+1, i))`` for ``2 <= W <=
    min(i+1, max_window)``; a longer window must strictly improve (so ties keep singletons), as in the reference.

    On the device without a host sync: ``dp`` is the longest path of a max-plus closure (repeated squaring), each
    window's start the first best width, and the windows the chain back from the last frame (pointer doubling).
    """
    frames = similarity.shape[0] + 1
    device = similarity.device
    gain = window_gains(similarity > tau, max_window)  # [T+1, T+1]: boundary j -> boundary i, -inf if not allowed
    closure = torch.where(torch.eye(frames + 1, dtype=torch.bool, device=device), 0.0, gain)
    for _ in range(frames.bit_length()):
        closure = (closure[:, :, None] + closure[None, :, :]).amax(1)
    best = closure[0]  # [T+1] dp value after each boundary
    boundary = torch.arange(frames + 1, device=device)
    width = torch.arange(1, frames + 1, device=device)
    before = (boundary[:, None] - width[None, :]).clamp(min=0)  # [T+1, T]
    candidate = torch.where(boundary[:, None] >= width[None, :], best[before] + gain[before, boundary[:, None]],
                            float("-inf"))
    previous = boundary - 1 - candidate.argmax(1)  # first best width: ties keep the shorter window
    previous[:1].fill_(0)  # fill_, not item assignment: that copies a host scalar to the device
    on_chain = torch.zeros(frames + 1, dtype=torch.long, device=device)
    on_chain[frames:].fill_(1)
    for _ in range(frames.bit_length()):
        on_chain = on_chain.scatter_reduce(0, previous, on_chain, reduce="amax")
        previous = previous[previous]
    window_of = torch.cat([on_chain.new_zeros(1), on_chain[1:frames].cumsum(0)])
    return window_of, best[frames].long()


def window_gains(above: torch.Tensor, max_window: int) -> torch.Tensor:
    """``[T+1, T+1]`` float64 gain of the window of frames ``j .. i-1`` at ``[j, i]`` (``|static| * (i - 1 - j)``),
    ``-inf`` unless ``1 <= i - j <= max_window`` (one-frame windows gain 0). ``above`` ``[T-1, N]`` bool."""
    steps, n = above.shape
    frames = steps + 1
    device = above.device
    step = torch.arange(steps, device=device)
    first_below = torch.where(above, steps, step[:, None]).flip(0).cummin(0).values.flip(0)  # [T-1, N]
    run = first_below - step[:, None]  # steps above tau from step s on
    histogram = torch.zeros(steps, frames, dtype=torch.float64, device=device)
    histogram.scatter_add_(1, run, torch.ones_like(run, dtype=torch.float64))
    at_least = histogram.flip(1).cumsum(1).flip(1)  # [s, w]: positions static over w steps from s
    if not steps:  # one frame: no step, a single one-frame window
        at_least = histogram.new_zeros(1, frames)
    boundary = torch.arange(frames + 1, device=device)
    inner = boundary[None, :] - 1 - boundary[:, None]  # steps inside the window [j, i)
    static = at_least[boundary.clamp(max=max(steps - 1, 0))[:, None], inner.clamp(min=0, max=frames - 1)]
    gain = torch.where(inner > 0, static * inner, 0.0)
    allowed = (inner >= 0) & (inner < max_window)
    return torch.where(allowed, gain, float("-inf"))


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

    1. Position-aligned cosine of adjacent frames (:func:`~vidcompress.kernels.aligned_cosine`: ``<a, b> /
       max(|a| |b|, 1e-8)``, one launch on CUDA; ``F.cosine_similarity`` clamps each norm instead, which differs only
       for near-zero tokens); a dynamic programme (:func:`static_windows`) splits the video into
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
        # [T-1, N] cosines of the same position in adjacent frames: one launch on CUDA
        similarity = aligned_cosine(tokens.features) if t > 1 else torch.zeros(0, n, device=tokens.features.device)
        window_of, removed = static_windows(similarity, self.tau, self.max_window)
        total = t * n
        kept_share = (total - removed.double()) / total
        wanted = torch.full_like(kept_share, self.retention)  # a true division: scalar / tensor multiplies a reciprocal
        ratio = torch.where(kept_share > 0, torch.clamp(wanted / kept_share, max=1.0), wanted)
        static = window_static(similarity > self.tau, window_of)  # [T (windows, padded), N]
        rep_of, weights = self._merge_static(tokens, window_of, static, ratio)
        self._select_dynamic(tokens, static[window_of], ratio, rep_of, weights)
        # per-window rounding: at most one extra row per window and per frame (docstring of ``compress``)
        bound = min(total, count + 2 * t)
        grouping = group_by_representative(rep_of.reshape(-1), weights.reshape(-1), max_groups=bound)
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
        else:
            grouping = grouping.trimmed()  # the native count is data-dependent: read back
        return merge_tokens(tokens, grouping.group, grouping.representative, grouping.weights, grouping.features)

    def _merge_weights(self, assignment: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
        if self.static_merge == "mean":
            return (assignment >= 0).float()
        return beta_weights(assignment, centre, self.beta)

    def _merge_static(
        self, tokens: VideoTokens, window_of: torch.Tensor, static: torch.Tensor, ratio: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rep_of, weights)`` ``[T, N]`` of the static tokens (``-1`` / ``0`` elsewhere): clusters of per-window
        temporal means."""
        t, n = window_of.shape[0], static.shape[1]
        lengths = torch.zeros(t, device=static.device).index_add_(0, window_of, torch.ones(t, device=static.device))
        units = segment_means(tokens.features, window_of, t)  # [windows, N, D]; empty windows: zeros
        sizes = static.sum(1)
        clusters = torch.where(sizes > 0, torch.round(sizes * ratio).long().clamp(min=1), 0)
        centre, assignment = dpc_knn(units, clusters, clusters.clamp(min=1, max=self.k), static, max_k=self.k)
        unit_weight = self._merge_weights(assignment, centre)
        starts = (lengths.cumsum(0) - lengths).long()
        unit_rep = torch.where(assignment >= 0, starts[:, None] * n + assignment, torch.full_like(assignment, -1))
        return unit_rep[window_of], unit_weight[window_of] / lengths[window_of][:, None]

    def _select_dynamic(
        self, tokens: VideoTokens, static: torch.Tensor, ratio: torch.Tensor, rep_of: torch.Tensor,
        weights: torch.Tensor,
    ) -> None:
        """Fill ``rep_of`` / ``weights`` for the dynamic tokens: attention top-k, then DPC-kNN contextual clusters."""
        t, n = static.shape
        dynamic = ~static
        budget = torch.ceil(dynamic.sum(1) * ratio)
        dominant = torch.round(budget * (1 - self.dominant_ratio)).long()
        attention = tokens.attention.float().masked_fill(static, float("-inf"))
        chosen = (rank_desc(attention) < dominant[:, None]) & dynamic
        flat_index = torch.arange(t * n, device=static.device).reshape(t, n)
        rep_of.copy_(torch.where(chosen, flat_index, rep_of))
        weights.copy_(torch.where(chosen, 1.0, weights))
        if self.dominant_ratio == 0.0:  # every budget is dominant: no contextual clusters
            return
        contextual = budget.long() - dominant
        rest = dynamic & ~chosen & (contextual[:, None] > 0)
        centre, assignment = dpc_knn(
            tokens.features, contextual, contextual.clamp(min=1, max=self.k), rest, max_k=self.k
        )
        merged = assignment >= 0
        rep_of.copy_(torch.where(merged, flat_index[:, :1] + assignment, rep_of))
        weights.copy_(torch.where(merged, self._merge_weights(assignment, centre), weights))


def window_static(above: torch.Tensor, window_of: torch.Tensor) -> torch.Tensor:
    """``[T, N]`` bool: position ``n`` is static in window ``w`` (``w < T``, padded) when every step inside the
    window stays above ``tau``; windows of one frame (and unused window ids) have no static position."""
    frames = window_of.shape[0]
    inner = window_of[1:] == window_of[:-1]  # step t lies inside a window
    breaks = torch.zeros(frames, above.shape[1], device=above.device)
    breaks.index_add_(0, window_of[1:], (inner[:, None] & ~above).float())
    steps = torch.zeros(frames, device=above.device).index_add_(0, window_of[1:], inner.float())
    return (breaks == 0) & (steps > 0)[:, None]

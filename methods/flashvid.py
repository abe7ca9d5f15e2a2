"""``flashvid``: FlashVID (DySeg, ADTS selection, tree-based spatio-temporal merging, DPC-kNN merge, and the
FastV-style pruning inside the LLM)."""

from __future__ import annotations

import dataclasses
import math

import torch

from vidcompress.assemble import merge_tokens
from vidcompress.compressor import Compressor
from vidcompress.kernels import calibrated_kcenter, pairwise, segment_mean, squared_norms
from vidcompress.llm_stage import LayerInputs, LayerReduction, keep_top_visual
from vidcompress.ops.dpc_knn import dpc_knn
from vidcompress.ops.reconcile import group_by_representative, reconcile
from vidcompress.ops.sorting import sort_ints
from vidcompress.ops.temporal import (
    adjacent_similarity,
    cuts_with_minimum,
    frame_means,
    frame_segment_totals,
    segment_first_frames,
    segment_ids,
    segment_means,
)
from vidcompress.registry import register_compressor
from vidcompress.tokens import CompressedTokens, VideoTokens, check_retention

TOKEN_SELECTIONS = ("attn_div", "attn_div_v2")
TSTM_MEANS = ("reference", "subtree")


def calibrated_max_min(
    features: torch.Tensor, weight: torch.Tensor, count: int, square: torch.Tensor | None = None
) -> torch.Tensor:
    """ADTS greedy selection, batched over frames: ``[T, N]`` selection order (``count`` and above: not selected).

    ``features``: ``[T, N, D]`` tokens, any float dtype (``square``: their ``[T, N]`` squared norms, when already
    computed). With ``D_ij = 1 - cos(f_i, f_j)`` (float32, :func:`~vidcompress.kernels.pairwise` on CUDA) and the
    column weight ``w_j``, the first token is ``argmax_j min_{i != j} D_ij * w_j`` and each next one
    ``argmax_j min_{i in S} D_ij * w_j`` over unselected ``j`` (:func:`~vidcompress.kernels.calibrated_kcenter`; one
    Triton launch on CUDA). Ties go to the lower index.
    """
    return calibrated_kcenter(pairwise(features, kind="cosine_distance", x_square=square), weight, count)


@register_compressor(
    "flashvid",
    stages=("token", "llm"),
    needs_attention=True,
    paper="FlashVID: Efficient Video Large Language Models via Training-free Tree-based Spatiotemporal Token Merging "
    "(ICLR 2026, arXiv 2602.08024)",
    reference="Fanziyang-v/FlashVID",
)
class FlashVID(Compressor):
    """FlashVID: ADTS-selected tokens plus tree-merged spatio-temporal tokens, then FastV-style pruning in the LLM.

    Token stage (``flashvid/utils.py: flashvid_compression``):

    1. Budget per frame ``B``, of which ``A = ceil(B * alpha)`` are ADTS tokens and ``S = B - A`` merged tokens.
    2. DySeg: cosine of adjacent frame-mean features, cut below ``segment_threshold``; with ``complementary_segment``
       the least similar transitions are cut too until there are ``min_segments`` segments.
    3. ADTS per frame: greedy max-min on ``(1 - cos) * w`` (:func:`calibrated_max_min`), ``w = attention``
       (``attn_div``, the Qwen2.5-VL script) or ``attention * <f_j, mean frame of the segment>`` (``attn_div_v2``,
       LLaVA; default).
    4. TSTM per segment on the other tokens: each picks as parent the most cosine-similar non-ADTS token of the previous
       frame and becomes its child when the similarity is ``> temporal_threshold``; when fewer than ``B * F_seg`` roots
       (ADTS tokens counted) would remain, the threshold becomes the ``(F_seg * N - B * F_seg)``-th largest similarity
       (strict ``>``). A root's value is its tree's sum divided by ``1 +`` its direct children (reference quirk:
       ``tstm_mean="reference"``) or by the tree size (``tstm_mean="subtree"``, the true member mean).
    5. Per frame, when the segment has more than ``S * F_seg`` roots, DPC-kNN over the roots' values with
       ``ceil(n_f * S * F_seg / roots)`` clusters, ``k = min(clusters, 7)``; a cluster is the plain mean of its roots
       and takes its centre's position. A merged token takes the position of its root / centre.

    LLM stage (``fastv_prune``; on by default, as in the reference; ``llm_stage=False`` turns it off): at decoder
    layer ``llm_layer`` (the reference's ``pruning_layer``, 20) the ``ceil(L_v * llm_retention_ratio)`` (0.3) visual
    tokens that the last prompt token attends to most at layer ``llm_layer - 1`` (mean over heads, softmax over all
    keys) survive, with their original positions; layers below keep every token. The model must have more than
    ``llm_layer`` decoder layers, else generation raises a ``ValueError`` naming both numbers (the built-in tiny
    models have 2 layers: pass ``llm_layer=1``). Differences: the score is recomputed for the last query row in a
    hook, so other layers keep their fast attention kernel; ties go to the earlier position (the reference's
    ``topk`` order is unspecified); batches are supported when every row holds the same number of visual tokens.

    Retention: FlashVID's ``retention_ratio`` is layer-averaged over the LLM; the LLM input holds
    ``retention_ratio * expansion`` of the visual tokens. With ``L`` decoder layers the layer average is
    ``retention_ratio * expansion * (llm_layer + (L - llm_layer) * llm_retention_ratio) / L``, which equals
    ``retention_ratio`` for the defaults on a 28-layer LLM (``1.25 * (20 + 8 * 0.3) / 28 = 1``): FlashVID "10 %" =
    12.5 % at the LLM input and 3.75 % after layer 20 (``answer.stats["llm_stage"]["layer_averaged_retention"]``
    reports the realised average). ``expansion`` is the mapping's only link to the LLM stage: with ``llm_stage=False``
    or another model depth the "10 %" label no longer holds, while ``retention`` keeps its meaning. Give either our
    ``retention`` (then ``retention_ratio = retention / expansion``) or the paper's ``retention_ratio`` (then
    ``retention = retention_ratio * expansion``). Native budget (``exact=False``): ``B = ceil(N * retention_ratio *
    expansion)``, with a data-dependent count (at least ``B * T``). By default ``B = ceil(target_count / T)`` and the
    surplus is reconciled (methods.md §0.7): the smallest merged rows fold into the most similar row of their frame;
    ADTS tokens fold last, latest-selected first.

    Differences from the reference: in a one-frame segment the reference clusters all ``N`` tokens, ADTS tokens
    included (so a token can be output twice); here the ADTS tokens are left out of that clustering. Ties are broken
    by index. With ``tstm_mean="reference"`` a merged row is the reference's value, not a weighted mean of its
    ``source`` members (it is ``sum / direct children``); ``"subtree"`` gives exact member means. A root's value is
    accumulated in float32 and rounded once to the input dtype, where the reference adds in place in the video's
    dtype frame by frame (one rounding per addition); DPC-kNN reads those values, as in the reference. Model defaults
    differ in the reference scripts: LLaVA ``attn_div_v2`` / 8 segments (defaults here), Qwen2.5-VL ``attn_div`` / 4.
    """

    llm_attention_query = "last"

    def __init__(
        self,
        retention: float | None = None,
        *,
        exact: bool = True,
        retention_ratio: float | None = None,
        expansion: float = 1.25,
        alpha: float = 0.7,
        segment_threshold: float = 0.9,
        min_segments: int = 8,
        complementary_segment: bool = True,
        temporal_threshold: float = 0.8,
        token_selection: str = "attn_div_v2",
        tstm_mean: str = "reference",
        llm_stage: bool = True,
        llm_layer: int = 20,
        llm_retention_ratio: float = 0.3,
    ) -> None:
        if not expansion > 0:
            raise ValueError(f"expansion must be positive, got {expansion!r}")
        retention, retention_ratio = self._resolve_retention(retention, retention_ratio, float(expansion))
        super().__init__(retention, exact=exact)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha!r}")
        if int(min_segments) < 1:
            raise ValueError(f"min_segments must be >= 1, got {min_segments!r}")
        if not -1.0 < temporal_threshold < 1.0:
            raise ValueError(f"temporal_threshold must lie in (-1, 1), got {temporal_threshold!r}")
        if token_selection not in TOKEN_SELECTIONS:
            raise ValueError(f"token_selection must be one of {TOKEN_SELECTIONS}, got {token_selection!r}")
        if tstm_mean not in TSTM_MEANS:
            raise ValueError(f"tstm_mean must be one of {TSTM_MEANS}, got {tstm_mean!r}")
        self.retention_ratio = retention_ratio
        self.expansion = float(expansion)
        self.alpha = float(alpha)
        self.segment_threshold = float(segment_threshold)
        self.min_segments = int(min_segments)
        self.complementary_segment = bool(complementary_segment)
        self.temporal_threshold = float(temporal_threshold)
        self.token_selection = token_selection
        self.tstm_mean = tstm_mean
        if isinstance(llm_layer, bool) or int(llm_layer) != llm_layer or llm_layer < 1:
            raise ValueError(f"llm_layer must be an integer >= 1 (scores come from llm_layer - 1), got {llm_layer!r}")
        if not 0.0 < llm_retention_ratio <= 1.0:
            raise ValueError(f"llm_retention_ratio must lie in (0, 1], got {llm_retention_ratio!r}")
        self.llm_stage = bool(llm_stage)
        self.llm_layer = int(llm_layer)
        self.llm_retention_ratio = float(llm_retention_ratio)

    @property
    def stages(self) -> tuple[str, ...]:
        """``("token", "llm")``, or ``("token",)`` with ``llm_stage=False``."""
        return self.info.stages if self.llm_stage else tuple(s for s in self.info.stages if s != "llm")

    def reduce_in_llm(self, inputs: LayerInputs) -> LayerReduction:
        """Keep the ``ceil(L_v * llm_retention_ratio)`` visual tokens the last prompt token attends to most."""
        assert inputs.attention is not None  # requested through llm_attention_query
        visual = int(inputs.visual_mask[0].sum())
        keep_visual = math.ceil(visual * self.llm_retention_ratio)
        return LayerReduction(keep=keep_top_visual(inputs, inputs.attention, keep_visual))

    @staticmethod
    def _resolve_retention(retention: float | None, ratio: float | None, expansion: float) -> tuple[float, float]:
        if ratio is None:
            retention = 1.0 if retention is None else check_retention(retention)
            return retention, retention / expansion
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 0:
            raise ValueError(f"retention_ratio must be a positive number, got {ratio!r}")
        implied = ratio * expansion
        if implied > 1.0 + 1e-9:
            raise ValueError(
                f"retention_ratio {ratio} x expansion {expansion} = {implied:.4g} exceeds 1 (all tokens at the input)"
            )
        if retention is not None and abs(check_retention(retention) - implied) > 1e-9:
            raise ValueError(
                f"retention {retention} and retention_ratio {ratio} disagree: retention = retention_ratio x expansion"
                f" = {implied:.4g}; give one of them"
            )
        return min(implied, 1.0), float(ratio)

    # -- stages ---------------------------------------------------------------------------------------------------
    def segments(self, frame_features: torch.Tensor) -> torch.Tensor:
        """``[T]`` segment id of every frame (DySeg) from the ``[T, D]`` frame means."""
        similarity = adjacent_similarity(frame_features)
        minimum = self.min_segments if self.complementary_segment else 1
        return segment_ids(cuts_with_minimum(similarity, self.segment_threshold, minimum))

    def selection_weight(
        self, attention: torch.Tensor, features: torch.Tensor, frame_features: torch.Tensor, ids: torch.Tensor
    ) -> torch.Tensor:
        """``[T, N]`` ADTS column weight (the reference's constant factor 1e6 does not change the choice); the event
        relevance ``<f_j, centre>`` of ``attn_div_v2`` is one float32 matrix-vector product per frame, ``features``
        read in their own dtype."""
        weight = attention.float()
        if self.token_selection == "attn_div_v2":
            frames = ids.shape[0]  # at most one segment per frame
            segment_centre = segment_means(frame_features, ids, frames)[ids]  # [T, D]
            weight = weight * pairwise(features, segment_centre[:, None, :])[..., 0]
        return weight

    def _budget(self, tokens: VideoTokens, count: int) -> tuple[int, int]:
        t, n, _ = tokens.features.shape
        per_frame = math.ceil(count / t) if self.exact else math.ceil(n * self.retention_ratio * self.expansion)
        per_frame = min(per_frame, n)
        selected = math.ceil(per_frame * self.alpha)
        return selected, per_frame - selected

    def _parents(
        self, features: torch.Tensor, square: torch.Tensor, adts: torch.Tensor, ids: torch.Tensor, budget: int
    ) -> torch.Tensor:
        """``[T, N]`` flat index of each token's TSTM parent (itself for roots and ADTS tokens); ``square``: the
        ``[T, N]`` squared norms of ``features``."""
        t, n, _ = features.shape
        device = features.device
        # child frame t+1, parent frame t
        similarity = pairwise(features[1:], features[:-1], kind="cosine", x_square=square[1:], y_square=square[:-1])
        blocked = adts[1:, :, None] | adts[:-1, None, :] | (ids[1:] != ids[:-1])[:, None, None]
        best, parent = similarity.masked_fill(blocked, -1.0).max(-1)
        best = torch.cat([torch.full((1, n), -1.0, device=device), best])  # frame 0 has no parent
        parent = torch.cat([torch.zeros(1, n, dtype=torch.long, device=device), parent])
        child = self._children(best, ids, budget)
        flat = torch.arange(t * n, device=device).reshape(t, n)
        previous = (torch.arange(t, device=device)[:, None] - 1).clamp(min=0) * n
        return torch.where(child, previous + parent, flat)

    def _children(self, best: torch.Tensor, ids: torch.Tensor, budget: int) -> torch.Tensor:
        """``[T, N]`` children, per segment of ``F`` frames: similarity ``> temporal_threshold``; when that leaves
        more than ``most = F * (N - budget)`` children, the lower-bound guard's ``> max(most-th largest, -1 + 1e-6)``
        (none when ``most <= 0``). All segments at once."""
        t, n = best.shape
        first = segment_first_frames(ids)  # first frame of each frame's segment
        most = frame_segment_totals(None, ids) * (n - budget)  # [T], per frame: its segment's
        child = best > self.temporal_threshold
        children = frame_segment_totals(child.sum(1), ids)
        # every segment's similarities in descending order, segment after segment (segments are runs of frames)
        values = best.reshape(-1)
        order = torch.sort(values, descending=True, stable=True).indices
        segment_of = ids[:, None].expand(t, n).reshape(-1)
        ranked = values[order[sort_ints(segment_of[order], t, stable=True).indices]]
        soft = ranked[(first * n + most - 1).clamp(min=0, max=t * n - 1)]  # the most-th largest of the segment
        guard = (best > torch.clamp(soft, min=-1.0 + 1e-6)[:, None]) & (most > 0)[:, None]
        return torch.where((children > most)[:, None], guard, child)

    def compress(self, tokens: VideoTokens, count: int) -> CompressedTokens:
        t, n, _ = tokens.features.shape
        device = tokens.features.device
        assert tokens.attention is not None  # checked by Compressor.__call__ (needs_attention)
        frame_features = frame_means(tokens.features)
        ids = self.segments(frame_features)
        selected, merged = self._budget(tokens, count)
        weight = self.selection_weight(tokens.attention, tokens.features, frame_features, ids)
        square = squared_norms(tokens.features)  # read once for the ADTS and the TSTM cosines
        order = calibrated_max_min(tokens.features, weight, selected, square)
        adts = order < selected
        flat = torch.arange(t * n, device=device)
        if merged == 0:  # the reference then drops every other token
            rep_of = torch.where(adts.reshape(-1), flat, torch.full_like(flat, -1))
            return self._finish(tokens, rep_of, torch.ones(t * n, device=device), t * selected, order, count, None)

        parent = self._parents(tokens.features, square, adts, ids, selected + merged).reshape(-1)
        root = parent
        for _ in range(max(t - 2, 0).bit_length()):  # pointer jumping: chains are shorter than T
            root = root[root]
        is_root = (parent == flat) & ~adts.reshape(-1)
        other = ~adts.reshape(-1)
        tree_size = self._counts(root, other)
        if self.tstm_mean == "reference":  # tree sum / (1 + direct children)
            divisor = 1.0 + self._counts(parent, other & ~is_root)
        else:
            divisor = tree_size
        # each root's tree sum / divisor = tree mean x size / divisor: one segment-mean pass, float32 accumulation,
        # stored in the input dtype as the reference stores it (it sums in place in the video's dtype)
        values = segment_mean(tokens.flat_features, torch.where(other, root, -1), t * n,
                              row_scale=tree_size / divisor.clamp(min=1), validate=False).reshape(t, n, -1)

        centre_of = self._spatial_merge(values, is_root.reshape(t, n), ids, merged)
        rep_of = torch.where(adts.reshape(-1), flat, centre_of[root])
        weights = torch.where(adts.reshape(-1), 1.0, 1.0 / divisor[root].clamp(min=1))
        counted = (is_root | adts.reshape(-1)).float()
        # ADTS tokens, plus at most ceil(roots * S * F / segment roots) <= S + 1 centres a frame on average
        max_groups = min(t * n, t * (selected + merged + 1))
        return self._finish(tokens, rep_of, weights, max_groups, order, count, counted)

    @staticmethod
    def _counts(index: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``[M]`` float32 number of masked entries of ``index`` ``[M]`` pointing at each token."""
        size = index.shape[0]
        return torch.zeros(size + 1, device=index.device).index_add_(
            0, torch.where(mask, index, size), torch.ones(size, device=index.device)
        )[:size]

    def _spatial_merge(
        self, values: torch.Tensor, is_root: torch.Tensor, ids: torch.Tensor, merged: int
    ) -> torch.Tensor:
        """``[T*N]`` flat index of the cluster centre of every root (itself when its frame is not clustered)."""
        t, n, _ = values.shape
        device = values.device
        roots_per_frame = is_root.sum(1)
        roots_per_segment = frame_segment_totals(roots_per_frame, ids)  # [T], per frame: its segment's
        # float64, as the reference's Python arithmetic: merged * F / max(segment roots, 1), then ceil(roots * ratio)
        ratio = (merged * frame_segment_totals(None, ids)).double() / roots_per_segment.clamp(min=1).double()
        clusters = torch.where(ratio < 1.0, torch.ceil(roots_per_frame.double() * ratio).long(), roots_per_frame)
        cluster_frames = clusters < roots_per_frame
        valid = is_root & cluster_frames[:, None]
        _, assignment = dpc_knn(
            values, torch.where(cluster_frames, clusters, 0), clusters.clamp(min=1, max=7), valid, max_k=7
        )
        flat = torch.arange(t * n, device=device).reshape(t, n)
        centre = torch.where(valid, flat[:, :1] + assignment, flat)
        return centre.reshape(-1)

    def _finish(
        self,
        tokens: VideoTokens,
        rep_of: torch.Tensor,
        weights: torch.Tensor,
        max_groups: int,
        order: torch.Tensor,
        count: int,
        counted: torch.Tensor | None,
    ) -> CompressedTokens:
        """Group by representative, reconcile to ``count`` rows (when exact), merge, and apply the reference
        tree-mean magnitude: a row is ``(1 / roots) * sum over its roots of tree_sum / divisor``, i.e. the weighted
        member mean times ``sum of weights / roots`` (1 for ``"subtree"``; ``counted`` marks the roots and ADTS
        tokens, ``None`` when every member counts)."""
        t, n, _ = tokens.features.shape
        if self.exact:
            padded = group_by_representative(rep_of, weights, max_groups=max_groups)
            grouping = reconcile(
                padded,
                tokens.flat_features,
                n,
                count,
                self._fold_priority(padded.group, padded.representative, order),
                padded.group.new_empty(0),  # no singleton candidates: the groups always number at least count
            )
            rows, slots = padded.group, max_groups
        else:
            grouping = group_by_representative(rep_of, weights)  # the native count: read back
            rows, slots = grouping.group, grouping.num_groups
        out = merge_tokens(tokens, grouping.group, grouping.representative, grouping.weights, grouping.features)
        if self.tstm_mean == "subtree" or counted is None:
            return out
        member = (rows >= 0).float()
        weight_sum = torch.zeros(slots, device=rows.device).index_add_(0, rows.clamp(min=0), weights * member)
        roots = torch.zeros(slots, device=rows.device).index_add_(0, rows.clamp(min=0), counted * member)
        magnitude = (weight_sum / roots)[rows.clamp(min=0)]
        row = out.source.clamp(min=0)
        weights = grouping.weights * (out.source >= 0)
        scale = torch.zeros(out.num_tokens, device=row.device).index_add_(0, row, weights * magnitude)
        scale = scale / torch.zeros(out.num_tokens, device=row.device).index_add_(0, row, weights)
        features = (out.features.float() * scale[:, None]).to(out.features.dtype)
        return dataclasses.replace(out, features=features)

    @staticmethod
    def _fold_priority(group: torch.Tensor, representative: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        """Per slot: merged rows fold first, smallest first; ADTS rows last, latest-selected first; padding never."""
        t, n = order.shape
        sizes = torch.zeros(representative.shape[0], device=group.device).index_add_(
            0, group.clamp(min=0), (group >= 0).float()
        )
        occupied = representative < t * n
        selection = order.reshape(-1)[representative.clamp(max=t * n - 1)]
        priority = torch.where(selection < n, float(t * n) + (n - selection).float(), sizes)
        return torch.where(occupied, priority, torch.inf)

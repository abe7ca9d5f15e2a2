"""``visionzip``: VisionZip's dominant tokens (attention) plus contextual tokens (similarity merge), per frame."""

from __future__ import annotations

import dataclasses
import math

import torch

from vidcompress.assemble import merge_tokens
from vidcompress.compressor import Compressor
from vidcompress.ops.budgets import int_tensor_on, top_per_row
from vidcompress.ops.similarity import cosine_similarity
from vidcompress.registry import register_compressor
from vidcompress.tokens import CompressedTokens, VideoTokens

from .uniform import frame_budgets

CONTEXTUAL_MERGES = ("reference", "mean")


@register_compressor(
    "visionzip",
    needs_attention=True,
    paper="VisionZip: Longer is Better but Not Necessary in Vision Language Models, CVPR 2025, arXiv 2412.04467",
    reference="dvlab-research/VisionZip; video ports cokeshao/HoliTom (LLaVA-OV), Tencent/AngelSlim (Qwen2.5-VL)",
)
class VisionZip(Compressor):
    """VisionZip: per frame, keep the tokens that receive the most attention and merge the rest into a few others.

    The budget is split evenly over frames; each frame's budget ``b`` holds ``c = round(b · contextual_ratio)``
    contextual and ``b − c`` dominant tokens (the video ports' split: 54 + 10 of 64, i.e. ``contextual_ratio =
    10/64``; AngelSlim's rounding). Per frame:

    1. **Dominant:** the ``b − c`` tokens with the highest attention received (ties: lower index).
    2. **Targets:** of the remaining ``R`` tokens, in raster order, every ``⌊R / c⌋``-th one, ``c`` in all (uniform
       stride, not chosen by content — as in the reference).
    3. Every other remaining token joins the target with the highest cosine similarity.
    4. ``contextual_merge="reference"`` (default): a contextual token is ``target + mean(joined tokens)`` (a sum, so
       about twice the norm of a token; just the target when nothing joined), as in the official code and the
       LLaVA-OV port. ``"mean"``: the plain mean of the target and its joined tokens (AngelSlim's Qwen2.5-VL port).

    A contextual token carries its target's position. Output in contract order (the reference emits
    ``[dominant; contextual]``; we keep temporal-then-raster order of representatives, so no ``order`` flag).

    Differences from the reference: the reference measures similarity on the attention *keys* of the scoring layer
    (head-mean); ``VideoTokens`` carries no keys, so we use the projected features. The official code counts tokens
    absolutely (54 + 10 of 576 on CLIP; the LLaVA-OV port 20–50 of 196 per frame): ``retention`` = kept / total,
    e.g. 50 of 196 per frame ↔ ``retention≈0.255``. There is no CLS token on our encoders, so all ``b − c``
    dominant tokens are patches. Exact count by construction.

    Args:
        retention: fraction of visual tokens at the LLM input.
        exact: accepted for the common interface; always exact.
        contextual_ratio: share of each frame's budget given to contextual (merged) tokens, in ``[0, 1]``.
        contextual_merge: ``"reference"`` (target + mean) or ``"mean"`` (mean including the target).
    """

    def __init__(
        self,
        retention: float = 1.0,
        *,
        exact: bool = True,
        contextual_ratio: float = 10 / 64,
        contextual_merge: str = "reference",
    ) -> None:
        super().__init__(retention, exact=exact)
        if not 0.0 <= float(contextual_ratio) <= 1.0:
            raise ValueError(f"contextual_ratio must lie in [0, 1], got {contextual_ratio!r}")
        if contextual_merge not in CONTEXTUAL_MERGES:
            raise ValueError(f"contextual_merge must be one of {CONTEXTUAL_MERGES}, got {contextual_merge!r}")
        self.contextual_ratio = float(contextual_ratio)
        self.contextual_merge = contextual_merge

    def split(self, budget: int) -> tuple[int, int]:
        """``(dominant, contextual)`` counts of a frame budget."""
        contextual = math.floor(budget * self.contextual_ratio + 0.5)
        return budget - contextual, contextual

    def compress(self, tokens: VideoTokens, count: int) -> CompressedTokens:
        t, h, w = tokens.grid
        n = h * w
        device = tokens.features.device
        splits = [self.split(budget) for budget in frame_budgets(t, count)]
        dominant_count = int_tensor_on(tuple(d for d, _ in splits), device)
        contextual_count = int_tensor_on(tuple(c for _, c in splits), device)
        assert tokens.attention is not None  # checked by Compressor.__call__
        dominant = top_per_row(tokens.attention.to(torch.float32), dominant_count)

        # targets: every step-th remaining token in raster order, `contextual` of them per frame
        remaining = ~dominant
        slot = torch.cumsum(remaining.long(), dim=1) - 1  # index among the frame's remaining tokens
        step = torch.clamp((n - dominant_count) // contextual_count.clamp(min=1), min=1)[:, None]
        target = remaining & (slot % step == 0) & (slot // step < contextual_count[:, None])

        # every other remaining token joins its most similar target of the same frame
        similarity = cosine_similarity(tokens.features).masked_fill(~target[:, None, :], -torch.inf)
        joined_target = similarity.argmax(dim=2)  # [T, N] target index within the frame
        has_target = (contextual_count > 0)[:, None]
        offsets = torch.arange(t, device=device)[:, None] * n
        own = torch.arange(t * n, device=device).reshape(t, n)
        root = torch.where(dominant | target, own, joined_target + offsets)
        root = torch.where(dominant | target | (remaining & has_target), root, torch.full_like(root, -1)).reshape(-1)
        return self.merge(tokens, (dominant | target).reshape(-1), root, count)

    def merge(self, tokens: VideoTokens, is_root: torch.Tensor, root: torch.Tensor, count: int) -> CompressedTokens:
        """Merge every token into its ``root`` (flat index, ``-1`` dropped) by the ``contextual_merge`` rule; there
        are exactly ``count`` roots (each frame's dominant plus target tokens make its budget)."""
        group_of_root = torch.cumsum(is_root.long(), dim=0) - 1
        kept = root >= 0
        group = torch.where(kept, group_of_root[root.clamp(min=0)], torch.full_like(root, -1))
        index = torch.arange(is_root.shape[0], device=is_root.device)
        # the roots in index order, without a data-dependent shape: non-roots sort past the end
        representative = torch.sort(torch.where(is_root, index, is_root.shape[0])).values[:count]
        if self.contextual_merge == "mean":
            return merge_tokens(tokens, group, representative)
        # reference: root + mean(others) = 2 · weighted mean with weight 1/2 on the root and 1/(2m) on each of m others
        joined = kept & ~is_root
        others = torch.zeros(representative.shape[0], dtype=torch.float32, device=root.device)
        others.index_add_(0, group.clamp(min=0), joined.to(torch.float32))
        weights = torch.where(is_root, 0.5, 0.5 / others[group.clamp(min=0)].clamp(min=1.0))
        merged = merge_tokens(tokens, group, representative, weights=weights)
        factor = torch.where(others > 0, 2.0, 1.0)
        # merged rows are in representative order, which is the group order here (groups numbered by root index)
        features = (merged.features.to(torch.float32) * factor[:, None]).to(merged.features.dtype)
        return dataclasses.replace(merged, features=features)

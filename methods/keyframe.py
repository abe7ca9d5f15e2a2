"""``keyframe``: KFFocus-style keyframe highlighting — drop repeated frames before the encoder, then give novel
frames more tokens and redundant ones fewer."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vidcompress.assemble import select_tokens
from vidcompress.compressor import Compressor
from vidcompress.frame_stage import FrameSelection
from vidcompress.ops.budgets import first_set, proportional_budgets, top_per_row
from vidcompress.ops.similarity import unit_vectors
from vidcompress.registry import register_compressor
from vidcompress.tokens import CompressedTokens, VideoTokens

TOKEN_SCORES = ("auto", "novelty", "attention")


def frame_novelty(features: torch.Tensor) -> torch.Tensor:
    """``[T]`` novelty ``1 − cos(g_t, g_{t−1})`` of each frame's mean token ``g_t``; the first frame gets 1."""
    descriptors = unit_vectors(features.to(torch.float32).mean(dim=1))
    novelty = torch.ones(features.shape[0], dtype=torch.float32, device=features.device)
    novelty[1:] = 1.0 - (descriptors[1:] * descriptors[:-1]).sum(dim=-1)
    return novelty


def pixel_descriptors(frames: np.ndarray, side: int) -> torch.Tensor:
    """``[T, 3·side²]`` float32: each ``uint8`` frame ``[H, W, 3]`` area-averaged to ``side × side``, in [0, 1]."""
    pixels = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).to(torch.float32) / 255.0
    return F.adaptive_avg_pool2d(pixels, side).reshape(frames.shape[0], -1)


def keep_novel_frames(descriptors: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep a frame when its mean absolute change from the last kept frame reaches ``threshold``.

    The first frame is always kept (novelty 1). Comparing with the last *kept* frame, as a P-frame is coded against
    its reference, means a slow drift is kept once it has accumulated, rather than lost step by step.

    Returns:
        ``([T] bool kept, [T] float32 novelty against the reference at that point)``.
    """
    frames = descriptors.shape[0]
    kept = torch.zeros(frames, dtype=torch.bool)
    novelty = torch.ones(frames, dtype=torch.float32)
    kept[0] = True
    reference = descriptors[0]
    for t in range(1, frames):  # sequential by nature: the reference moves with each kept frame
        novelty[t] = (descriptors[t] - reference).abs().mean()
        if novelty[t] >= threshold:
            kept[t] = True
            reference = descriptors[t]
    return kept, novelty


def token_novelty(features: torch.Tensor) -> torch.Tensor:
    """``[T, N]`` novelty of each token: ``1 − cos`` to the token at the same place in the previous frame.

    The first frame has no previous frame; its tokens score their distinctiveness instead, ``1 − cos`` to the
    frame's mean token, so its budget goes to the tokens that stand out rather than to the top-left corner.
    """
    unit = unit_vectors(features)
    novelty = torch.empty(unit.shape[:2], dtype=torch.float32, device=unit.device)
    novelty[1:] = 1.0 - (unit[1:] * unit[:-1]).sum(dim=-1)
    novelty[0] = 1.0 - unit[0] @ unit_vectors(features[0].to(torch.float32).mean(dim=0))
    return novelty


@register_compressor(
    "keyframe",
    stages=("frame", "token"),
    paper="KFFocus — Highlighting Keyframes for Enhanced Video Understanding, arXiv 2508.08989 (reconstruction)",
    reference=None,
)
class KeyframeFocus(Compressor):
    """Keyframe-weighted per-frame budgets: frames that change get more tokens, repeated frames fewer.

    **Reconstruction** (methods.md §16): KFFocus has no public code and its abstract does not give the criterion;
    results with this method must not be reported as KFFocus reproductions. Steps:

    1. Frame descriptor ``g_t`` = mean of the frame's projected tokens; novelty ``n_t = 1 − cos(g_t, g_{t−1})``,
       ``n_0 = 1`` (the first frame is an I-frame).
    2. Keyframes: ``n_t`` at or above the ``keyframe_percentile`` of all novelties (linear interpolation).
    3. Budgets: every frame gets ``⌊min_share · count / T⌋`` tokens; the rest is split in proportion to
       ``n_t`` (times ``keyframe_boost`` for keyframes), capped at ``H·W`` per frame, largest-remainder rounding, so
       the budgets sum exactly to ``count``.
    4. Within each frame, the budget keeps the highest-scoring tokens: ``token_score="novelty"`` (``1 − cos`` to the
       same place in the previous frame; distinctiveness from the frame mean in the first frame), ``"attention"``
       (vision attention received), or ``"auto"`` (attention when ``VideoTokens.attention`` is present, else
       novelty).

    Frame stage (methods.md §16 step 6, before the encoder): each candidate frame is area-averaged to
    ``frame_side × frame_side`` RGB pixels; a frame is kept when the mean absolute change (fraction of full scale)
    from the last kept frame is at least ``frame_threshold``, so repeated and near-duplicate frames are never
    encoded. The first frame is always kept. ``frame_threshold=0`` keeps every frame. On Qwen2.5-VL the kept frames
    bring their temporal-group partner (the pipeline keeps whole groups). The threshold default is ours (no published
    value): about 5 grey levels of average change on 8-bit frames.

    In a chain with another token-stage method (``"keyframe+mmr"``), keyframe contributes its frame stage only.

    Args:
        retention: fraction of visual tokens at the LLM input.
        exact: accepted for the common interface; always exact.
        keyframe_percentile: novelty percentile in ``[0, 100]`` from which a frame is a keyframe.
        keyframe_boost: budget weight multiplier (``≥ 1``) of keyframes.
        min_share: fraction in ``[0, 1]`` of the even per-frame share that every frame is guaranteed.
        token_score: ``"auto"``, ``"novelty"`` or ``"attention"``.
        frame_threshold: frame stage: minimum mean absolute pixel change in ``[0, 1]`` for a frame to be encoded.
        frame_side: frame stage: side in pixels of the downsampled frames the change is measured on (``>= 1``).
    """

    def __init__(
        self,
        retention: float = 1.0,
        *,
        exact: bool = True,
        keyframe_percentile: float = 75.0,
        keyframe_boost: float = 2.0,
        min_share: float = 0.25,
        token_score: str = "auto",
        frame_threshold: float = 0.02,
        frame_side: int = 32,
    ) -> None:
        super().__init__(retention, exact=exact)
        if not 0.0 <= float(keyframe_percentile) <= 100.0:
            raise ValueError(f"keyframe_percentile must lie in [0, 100], got {keyframe_percentile!r}")
        if not float(keyframe_boost) >= 1.0:
            raise ValueError(f"keyframe_boost must be at least 1, got {keyframe_boost!r}")
        if not 0.0 <= float(min_share) <= 1.0:
            raise ValueError(f"min_share must lie in [0, 1], got {min_share!r}")
        if token_score not in TOKEN_SCORES:
            raise ValueError(f"token_score must be one of {TOKEN_SCORES}, got {token_score!r}")
        self.keyframe_percentile = float(keyframe_percentile)
        self.keyframe_boost = float(keyframe_boost)
        self.min_share = float(min_share)
        if not 0.0 <= float(frame_threshold) <= 1.0:
            raise ValueError(f"frame_threshold must lie in [0, 1], got {frame_threshold!r}")
        if isinstance(frame_side, bool) or int(frame_side) != frame_side or frame_side < 1:
            raise ValueError(f"frame_side must be a positive integer, got {frame_side!r}")
        self.token_score = token_score
        self.frame_threshold = float(frame_threshold)
        self.frame_side = int(frame_side)

    @property
    def needs_attention(self) -> bool:
        return self.token_score == "attention"

    def select_frames(
        self, frames: np.ndarray, timestamps: np.ndarray, question: str, *, frames_per_step: int = 1
    ) -> FrameSelection:
        """Keep the candidate frames that differ from the last kept one (the frame stage)."""
        kept, novelty = keep_novel_frames(pixel_descriptors(frames, self.frame_side), self.frame_threshold)
        return FrameSelection(indices=np.flatnonzero(kept.numpy()), scores=novelty.numpy())

    def frame_budgets(self, features: torch.Tensor, count: int) -> torch.Tensor:
        """``[T]`` per-frame token budgets summing to ``count`` (steps 1–3), on the features' device."""
        t, n, _ = features.shape
        novelty = frame_novelty(features).clamp(min=0.0)
        threshold = torch.quantile(novelty, self.keyframe_percentile / 100.0)
        weights = torch.where(novelty >= threshold, novelty * self.keyframe_boost, novelty)
        floor = min(n, int(self.min_share * count / t))
        return proportional_budgets(weights, count, floor, n)

    def token_scores(self, tokens: VideoTokens) -> torch.Tensor:
        """``[T, N]`` within-frame scores (step 4)."""
        use_attention = self.token_score == "attention" or (
            self.token_score == "auto" and tokens.attention is not None
        )
        if use_attention:
            assert tokens.attention is not None  # checked by Compressor.__call__ for "attention"
            return tokens.attention.to(torch.float32)
        return token_novelty(tokens.features)

    def compress(self, tokens: VideoTokens, count: int) -> CompressedTokens:
        keep = top_per_row(self.token_scores(tokens), self.frame_budgets(tokens.features, count))
        return select_tokens(tokens, first_set(keep.reshape(-1), count))

"""``keyframe``: KFFocus-style keyframe highlighting — more tokens for novel frames, fewer for redundant ones."""

from __future__ import annotations

import torch

from vidcompress.assemble import select_tokens
from vidcompress.compressor import Compressor
from vidcompress.ops.budgets import proportional_budgets, top_per_row
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
    stages=("token",),
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

    Registered as a token-stage method; the frame stage (dropping redundant frames before the encoder) comes later.

    Args:
        retention: fraction of visual tokens at the LLM input.
        exact: accepted for the common interface; always exact.
        keyframe_percentile: novelty percentile in ``[0, 100]`` from which a frame is a keyframe.
        keyframe_boost: budget weight multiplier (``≥ 1``) of keyframes.
        min_share: fraction in ``[0, 1]`` of the even per-frame share that every frame is guaranteed.
        token_score: ``"auto"``, ``"novelty"`` or ``"attention"``.
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
        self.token_score = token_score

    @property
    def needs_attention(self) -> bool:
        return self.token_score == "attention"

    def frame_budgets(self, features: torch.Tensor, count: int) -> list[int]:
        """Per-frame token budgets summing to ``count`` (steps 1–3)."""
        t, n, _ = features.shape
        novelty = frame_novelty(features).clamp(min=0.0)
        threshold = torch.quantile(novelty, self.keyframe_percentile / 100.0)
        weights = torch.where(novelty >= threshold, novelty * self.keyframe_boost, novelty)
        floor = min(n, int(self.min_share * count / t))
        return proportional_budgets(weights.tolist(), count, floor, n)

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
        budgets = torch.tensor(self.frame_budgets(tokens.features, count), device=tokens.features.device)
        keep = top_per_row(self.token_scores(tokens), budgets)
        return select_tokens(tokens, torch.nonzero(keep.reshape(-1)).squeeze(1))

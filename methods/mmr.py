"""``mmr``: IDPruner's importance + diversity selection by maximal marginal relevance, training-free."""

from __future__ import annotations

import torch

from vidcompress.assemble import select_tokens
from vidcompress.compressor import Compressor
from vidcompress.kernels import MAX_TOKENS, greedy_mmr
from vidcompress.ops.budgets import int_tensor_on, picks_to_flat
from vidcompress.ops.greedy import mmr_select
from vidcompress.ops.similarity import minmax, query_relevance
from vidcompress.registry import register_compressor
from vidcompress.tokens import CompressedTokens, VideoTokens

from .uniform import frame_budgets

IMPORTANCE = ("attention", "query", "norm")
POOLS = ("global", "per_frame")


@register_compressor(
    "mmr",
    needs_attention=True,
    paper="IDPruner: Harmonizing Importance and Diversity in Visual Token Pruning for MLLMs, arXiv 2602.13315",
    reference="Tencent/AngelSlim (angelslim/compressor/token_compressor/algorithm/idpruner.py)",
)
class MMR(Compressor):
    """IDPruner's maximal-marginal-relevance selection with a training-free importance score.

    Greedy, one token per step: the first pick is the most important token, then
    ``argmax_v λ·Imp(v) − (1 − λ)·max_{u ∈ S} cos(v, u)`` over the remaining tokens, with ``Imp`` min-max
    normalised over the pool and cosine similarity on the projected features (IDPruner's defaults: ``λ = 0.5``, one
    token per step, all frames in one pool). Output: the selected tokens, in contract order.

    Differences from the reference: IDPruner scores importance with a *trained* Vision Selector (Hub weights), and
    its published numbers were obtained with it; they do not carry over here. Ours is training-free:

    * ``importance="attention"`` (default): vision-encoder attention each token receives (``VideoTokens.attention``);
    * ``importance="query"``: soft-pooled cosine similarity to the question embeddings (FlashVLM's text relevance
      before sharpening, ``VideoTokens.query``);
    * ``importance="norm"``: the L2 norm of the projected feature (free, weakest signal).

    Like the reference we build the full ``N × N`` similarity matrix (one GEMM, fp16 tensor cores for half-precision
    features) and run the greedy loop in one Triton program on CUDA (:func:`~vidcompress.kernels.greedy_mmr`);
    pools above :data:`~vidcompress.kernels.MAX_TOKENS` tokens fall back to a step loop with a running
    best-similarity vector (same picks, ``O(K·N·D)``). IDPruner's ``ratio`` is the *drop* ratio:
    ``retention = 1 − ratio``.
    ``pool="per_frame"`` (ours, not in the reference) splits the budget evenly over frames and runs MMR in each frame.

    Args:
        retention: fraction of visual tokens kept.
        exact: accepted for the common interface; MMR always returns exactly ``target_count`` tokens.
        importance: ``"attention"``, ``"query"`` or ``"norm"``.
        mmr_lambda: ``λ`` in ``[0, 1]``; 1 is pure importance top-k, 0 pure diversity after the first pick.
        pool: ``"global"`` (reference) or ``"per_frame"``.
    """

    def __init__(
        self,
        retention: float = 1.0,
        *,
        exact: bool = True,
        importance: str = "attention",
        mmr_lambda: float = 0.5,
        pool: str = "global",
    ) -> None:
        super().__init__(retention, exact=exact)
        if importance not in IMPORTANCE:
            raise ValueError(f"importance must be one of {IMPORTANCE}, got {importance!r}")
        if not 0.0 <= float(mmr_lambda) <= 1.0:
            raise ValueError(f"mmr_lambda must lie in [0, 1], got {mmr_lambda!r}")
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        self.importance = importance
        self.mmr_lambda = float(mmr_lambda)
        self.pool = pool

    @property
    def needs_attention(self) -> bool:
        return self.importance == "attention"

    @property
    def needs_query(self) -> bool:
        return self.importance == "query"

    def raw_importance(self, tokens: VideoTokens) -> torch.Tensor:
        """``[T, N]`` float32 importance before normalisation."""
        if self.importance == "attention":
            assert tokens.attention is not None  # checked by Compressor.__call__
            return tokens.attention.to(torch.float32)
        if self.importance == "query":
            assert tokens.query is not None  # checked by Compressor.__call__
            return query_relevance(tokens.features, tokens.query)
        return tokens.features.to(torch.float32).norm(dim=-1)

    def compress(self, tokens: VideoTokens, count: int) -> CompressedTokens:
        t, h, w = tokens.grid
        importance = self.raw_importance(tokens)
        if self.pool == "global":
            features = tokens.features.reshape(1, t * h * w, -1)
            pooled = minmax(importance.reshape(1, -1))
            if features.shape[1] > MAX_TOKENS:
                return select_tokens(tokens, mmr_select(features, pooled, count, mmr_lambda=self.mmr_lambda)[0])
            picks = greedy_mmr(features, pooled, count, count, self.mmr_lambda, validate=False).order
            return select_tokens(tokens, picks[0])
        budgets = frame_budgets(t, count)
        device_budgets = int_tensor_on(tuple(budgets), tokens.features.device)
        picks = greedy_mmr(
            tokens.features, minmax(importance), device_budgets, max(budgets), self.mmr_lambda, validate=False
        ).order
        return select_tokens(tokens, picks_to_flat(picks, budgets, h * w))

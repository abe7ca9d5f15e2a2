"""``divprune``: DivPrune's greedy max-min diversity selection."""

from __future__ import annotations

from vidcompress.assemble import select_tokens
from vidcompress.compressor import Compressor
from vidcompress.kernels import MAX_TOKENS, greedy_kcenter
from vidcompress.ops.budgets import int_tensor_on, picks_to_flat
from vidcompress.ops.greedy import farthest_point_select
from vidcompress.registry import register_compressor
from vidcompress.tokens import CompressedTokens, VideoTokens

from .uniform import frame_budgets

POOLS = ("global", "per_frame")


@register_compressor(
    "divprune",
    paper="DivPrune: Diversity-based Visual Token Pruning for Large Multimodal Models, CVPR 2025, arXiv 2503.02175",
    reference="vbdi/divprune (LLaVA/llava/model/llava_arch.py)",
)
class DivPrune(Compressor):
    """DivPrune: keep the most diverse tokens by greedy max-min cosine distance (farthest-point sampling).

    With ``D_ij = 1 − cos(f_i, f_j)`` on the projected features, the seed is the token farthest from its nearest
    neighbour (``argmax_i min_{j ≠ i} D_ij``), then each step adds ``argmax_i min_{j ∈ S} D_ij`` until
    ``target_count`` tokens are selected. Text-agnostic, no attention. The reference pools every token of the
    input in one set (``pool="global"``, default), and its keep ratio is our ``retention`` (the paper's
    ``SUBSET_RATIO = 0.098`` is ``retention=0.098``).

    Differences from the reference: like the reference we build the ``N × N`` cosine matrix (one GEMM; in fp16 on
    the tensor cores for half-precision features, where the reference rounds it to the model dtype), then run the
    whole greedy loop in one Triton program on CUDA (:func:`~vidcompress.kernels.greedy_kcenter`; no per-step
    launches, no host sync). Pools larger than :data:`~vidcompress.kernels.MAX_TOKENS` tokens fall back to a
    step loop with a running min-distance vector and row-blocked seed distances (same picks, bounded memory).
    Already selected tokens are masked explicitly rather than relying on a zero self-distance, so near-duplicate
    tokens cannot be picked twice through rounding. ``pool="per_frame"`` is ours (the reference has none): the budget
    is split evenly over frames and the selection runs in each frame, which guarantees temporal coverage.

    Args:
        retention: fraction of visual tokens kept.
        exact: accepted for the common interface; DivPrune always returns exactly ``target_count`` tokens.
        pool: ``"global"`` (reference) or ``"per_frame"``.
    """

    def __init__(self, retention: float = 1.0, *, exact: bool = True, pool: str = "global") -> None:
        super().__init__(retention, exact=exact)
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        self.pool = pool

    def compress(self, tokens: VideoTokens, count: int) -> CompressedTokens:
        t, h, w = tokens.grid
        if self.pool == "global":
            pool = tokens.features.reshape(1, t * h * w, -1)
            if pool.shape[1] > MAX_TOKENS:
                return select_tokens(tokens, farthest_point_select(pool, count)[0])
            return select_tokens(tokens, greedy_kcenter(pool, count, count, validate=False).order[0])
        budgets = frame_budgets(t, count)
        device_budgets = int_tensor_on(tuple(budgets), tokens.features.device)
        picks = greedy_kcenter(tokens.features, device_budgets, max(budgets), validate=False).order
        return select_tokens(tokens, picks_to_flat(picks, budgets, h * w))

"""``todre``: ToDRE — a diverse token subset after the encoder, then visual tokens removed inside the LLM."""

from __future__ import annotations

import torch

from vidcompress.assemble import select_tokens
from vidcompress.compressor import Compressor
from vidcompress.kernels import MAX_TOKENS, greedy_kcenter
from vidcompress.llm_stage import LayerInputs, LayerReduction, keep_top_visual
from vidcompress.ops.greedy import farthest_point_select
from vidcompress.registry import register_compressor
from vidcompress.tokens import CompressedTokens, VideoTokens

VARIANTS = {"k_center": "min", "max_sum": "sum"}
SEEDS = ("farthest_neighbor", "attention")
STAGE2 = ("all", "attention")


@register_compressor(
    "todre",
    stages=("token", "llm"),
    paper="ToDRE: Visual Token Pruning via Diversity and Task Awareness for Efficient LVLMs, arXiv 2505.18757 "
    "(reconstruction)",
    reference=None,
)
class ToDRE(Compressor):
    """ToDRE: greedy diversity selection after the encoder, then removal of visual tokens at a late decoder layer.

    **Reconstruction** (methods.md §11): ToDRE has no public code; only the abstracts describe it. Results obtained
    with this method must not be reported as ToDRE reproductions.

    Stage 1 (token stage, text-agnostic): greedy diversity over all tokens of the video with cosine distance
    ``D_ij = 1 − cos(f_i, f_j)`` on the projected features, keeping ``target_count(grid, retention)`` tokens.
    ``variant="k_center"`` (paper v1, default): ``argmax_i min_{j ∈ S} D_ij`` (farthest point, as DivPrune);
    ``variant="max_sum"`` (paper v2): ``argmax_i Σ_{j ∈ S} D_ij``. The seed is not published: DivPrune's token
    farthest from its nearest neighbour (``seed="farthest_neighbor"``, default) or the token with the most vision
    attention received (``seed="attention"``, which then needs ``VideoTokens.attention``).

    Stage 2 (LLM stage, prefill, "information migration"): entering decoder layer ``layer``, ``stage2="all"``
    (default, v1) removes every remaining visual token from the hidden states and from the KV cache of the later
    layers; ``stage2="attention"`` (v2's "guided by cross-modal attention") removes the ``llm_drop_ratio`` fraction
    with the least attention from the text after the video at layer ``layer − 1`` (mean over heads and text queries).
    Text keeps its original positions. The paper's layer is not public ("certain decoder layers"; methods.md suggests
    1/2 to 2/3 of the depth); the default 18 is 2/3 of a 28-layer LLM (Qwen2.5-VL-7B, LLaVA-OV-7B). It must be
    smaller than the model's layer count; the LLM stage raises otherwise.

    Implementation: the default stage 1 (``k_center`` from the ``farthest_neighbor`` seed, pools of at most
    :data:`~vidcompress.kernels.MAX_TOKENS` tokens) is DivPrune's global selection and runs as one batched program
    (:func:`~vidcompress.kernels.greedy_kcenter`: one cosine GEMM, the greedy loop in one Triton program on CUDA, no
    host sync); the other variants and larger pools use the step loop of
    :func:`~vidcompress.ops.greedy.farthest_point_select` (same picks up to ties and rounding).

    Retention: ``retention`` is the stage-1 fraction at the LLM input (the paper's headline: 10% after the encoder,
    then all visual tokens removed in the late layers); stage 2 is extra and reported as the layer-averaged retention.

    Args:
        retention: fraction of visual tokens kept by stage 1.
        exact: accepted for the common interface; stage 1 always returns exactly ``target_count`` tokens.
        variant: ``"k_center"`` (min over the selected set) or ``"max_sum"`` (sum).
        seed: ``"farthest_neighbor"`` or ``"attention"``.
        layer: decoder layer ``K >= 1`` where stage 2 acts.
        stage2: ``"all"`` or ``"attention"``.
        llm_drop_ratio: with ``stage2="attention"``, the fraction in ``[0, 1]`` of the visual tokens removed.
    """

    def __init__(
        self,
        retention: float = 1.0,
        *,
        exact: bool = True,
        variant: str = "k_center",
        seed: str = "farthest_neighbor",
        layer: int = 18,
        stage2: str = "all",
        llm_drop_ratio: float = 0.5,
    ) -> None:
        super().__init__(retention, exact=exact)
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {tuple(VARIANTS)}, got {variant!r}")
        if seed not in SEEDS:
            raise ValueError(f"seed must be one of {SEEDS}, got {seed!r}")
        if isinstance(layer, bool) or int(layer) != layer or layer < 1:
            raise ValueError(f"layer must be an integer >= 1 (stage 2 acts entering decoder layer K), got {layer!r}")
        if stage2 not in STAGE2:
            raise ValueError(f"stage2 must be one of {STAGE2}, got {stage2!r}")
        if not 0.0 <= float(llm_drop_ratio) <= 1.0:
            raise ValueError(f"llm_drop_ratio must lie in [0, 1], got {llm_drop_ratio!r}")
        self.variant = variant
        self.seed = seed
        self.layer = int(layer)
        self.stage2 = stage2
        self.llm_drop_ratio = float(llm_drop_ratio)
        self.llm_layer = self.layer
        self.llm_attention_query = "text" if stage2 == "attention" else "none"

    @property
    def needs_attention(self) -> bool:
        return self.seed == "attention"

    def compress(self, tokens: VideoTokens, count: int) -> CompressedTokens:
        flat = tokens.features.reshape(1, tokens.num_tokens, -1)
        if self.seed == "attention":
            assert tokens.attention is not None  # checked by Compressor.__call__
            first = tokens.attention.reshape(-1).to(torch.float32).argmax().reshape(1)
            picks = farthest_point_select(flat, count, seed=first, aggregate=VARIANTS[self.variant])
        elif self.variant == "k_center" and tokens.num_tokens <= MAX_TOKENS:
            picks = greedy_kcenter(flat, count, count, validate=False).order
        else:
            picks = farthest_point_select(flat, count, aggregate=VARIANTS[self.variant])
        return select_tokens(tokens, picks[0])

    def reduce_in_llm(self, inputs: LayerInputs) -> LayerReduction:
        if self.stage2 == "all":
            return LayerReduction(keep=keep_top_visual(inputs, torch.zeros_like(inputs.hidden_states[..., 0]), 0))
        assert inputs.attention is not None  # requested through llm_attention_query
        visual = int(inputs.visual_mask[0].sum())
        keep_visual = round(visual * (1.0 - self.llm_drop_ratio))
        return LayerReduction(keep=keep_top_visual(inputs, inputs.attention, keep_visual))

"""``fastv``: attention pruning inside the LLM at layer K."""

from __future__ import annotations

from vidcompress.compressor import Compressor
from vidcompress.llm_stage import LayerInputs, LayerReduction, keep_top_visual
from vidcompress.registry import register_compressor


@register_compressor(
    "fastv",
    stages=("llm",),
    paper="An Image is Worth 1/2 Tokens After Layer 2 (FastV), ECCV 2024, arXiv 2403.06764",
    reference="pkunlp-icler/FastV",
)
class FastV(Compressor):
    """Drops, at decoder layer ``layer``, the visual tokens the last prompt token attends to least at ``layer - 1``.

    Follows the reference code: the score is the last token's attention (mean over heads, softmax over all keys),
    ``round(N * (1 - drop_ratio))`` visual tokens survive, survivors keep their original positions, layers below
    ``layer`` keep their full KV cache, and the decision is taken once at prefill. Differences: the score is recomputed
    for one query row in a hook, so every other layer keeps its fast attention kernel (the reference forces eager
    attention); batches are supported when every row holds the same number of visual tokens (the reference: batch 1).
    The paper's text ("average attention from all tokens") and the AngelSlim layer-0 variant are not offered.

    ``retention`` is the fraction at the LLM input and stays 1.0: FastV removes tokens inside the LLM. Chain it after
    a token-stage method (``"uniform+fastv"``) to compress at both points.
    """

    llm_attention_query = "last"

    def __init__(self, retention: float = 1.0, *, exact: bool = True, layer: int = 2, drop_ratio: float = 0.5) -> None:
        super().__init__(retention, exact=exact)
        if self.retention != 1.0:
            raise ValueError(
                "fastv acts inside the LLM, so its input retention is 1.0; set drop_ratio, or chain it after a "
                f"token-stage method (e.g. 'uniform+fastv'); got retention={retention!r}"
            )
        if isinstance(layer, bool) or int(layer) != layer or layer < 1:
            raise ValueError(f"layer must be an integer >= 1 (scores come from layer - 1), got {layer!r}")
        if not 0.0 <= drop_ratio < 1.0:
            raise ValueError(f"drop_ratio must lie in [0, 1), got {drop_ratio!r}")
        self.layer = int(layer)
        self.llm_layer = self.layer
        self.drop_ratio = float(drop_ratio)

    def reduce_in_llm(self, inputs: LayerInputs) -> LayerReduction:
        assert inputs.attention is not None  # requested through llm_attention_query
        visual = int(inputs.visual_mask[0].sum())
        keep_visual = round(visual * (1.0 - self.drop_ratio))
        return LayerReduction(keep=keep_top_visual(inputs, inputs.attention, keep_visual))

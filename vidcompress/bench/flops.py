"""Prefill FLOPs by FastV's convention and by a true count, and the vision encoder's FLOPs (``anchors.md`` §4).

FastV convention (multiply-accumulates, no GQA, two-matrix FFN), used by VisionZip, FastVID, HoliTom, VidCom2::

    f(n) = L · (4·n·d² + 2·n²·d + 2·n·d·m)

True count (2 FLOPs per multiply-accumulate), per layer::

    2·n·d²·(2 + 2·kv/q) + 4·n²·d + 6·n·d·m

(Q and O full width, K and V at ``kv/q`` of it, scores and values without causal halving, three SwiGLU matrices).
Both exclude the vision encoder and the LM head. Inner-LLM pruning at layer ``K`` to ``n'`` tokens counts ``K``
layers at ``n`` and ``L − K`` at ``n'``.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PretrainedConfig

__all__ = ["TextDims", "text_dims", "prefill_flops", "layer_flops", "vision_flops"]


@dataclass(frozen=True)
class TextDims:
    """What the FLOPs formulas need of a decoder: layers, hidden width, FFN width, query and key/value heads."""

    layers: int
    hidden: int
    ffn: int
    heads: int
    kv_heads: int


def text_dims(config: PretrainedConfig) -> TextDims:
    """The decoder dimensions of a Qwen2.5-VL or LLaVA-OneVision config."""
    text = config.text_config
    return TextDims(
        layers=int(text.num_hidden_layers),
        hidden=int(text.hidden_size),
        ffn=int(text.intermediate_size),
        heads=int(text.num_attention_heads),
        kv_heads=int(text.num_key_value_heads),
    )


def layer_flops(dims: TextDims, tokens: float, convention: str = "fastv") -> float:
    """FLOPs of one decoder layer over ``tokens`` tokens: ``"fastv"`` (the papers' convention) or ``"true"``."""
    n, d, m = float(tokens), float(dims.hidden), float(dims.ffn)
    if convention == "fastv":
        return 4 * n * d * d + 2 * n * n * d + 2 * n * d * m
    if convention == "true":
        return 2 * n * d * d * (2 + 2 * dims.kv_heads / dims.heads) + 4 * n * n * d + 6 * n * d * m
    raise ValueError(f"convention must be 'fastv' or 'true', got {convention!r}")


def prefill_flops(
    dims: TextDims, tokens: int, convention: str = "fastv", layer: int | None = None, tokens_after: int | None = None
) -> float:
    """Prefill FLOPs over ``tokens`` tokens; with ``layer``/``tokens_after``, layers from ``layer`` on see only
    ``tokens_after`` tokens (FastV-style pruning inside the LLM)."""
    if tokens < 0:
        raise ValueError(f"tokens must be >= 0, got {tokens}")
    if layer is None:
        return dims.layers * layer_flops(dims, tokens, convention)
    if tokens_after is None or not 0 <= layer <= dims.layers:
        raise ValueError(f"inner-LLM pruning needs 0 <= layer <= {dims.layers} and tokens_after, got {layer}, {tokens_after}")
    return layer * layer_flops(dims, tokens, convention) + (dims.layers - layer) * layer_flops(
        dims, tokens_after, convention
    )


def vision_flops(config: PretrainedConfig, grid: tuple[int, int, int]) -> float:
    """True FLOPs (2 per multiply-accumulate) of the vision tower and projector that produce the token ``grid``.

    Qwen2.5-VL: 14 px patches over 2-frame temporal groups, windowed attention (``window_size`` px) except in the
    full-attention blocks (one temporal group), SwiGLU MLP, 2x2 patch merger. LLaVA-OneVision: SigLIP over each frame
    (2-matrix GELU MLP), the layers up to ``vision_feature_layer``, then the 2-layer projector on every patch.
    ``grid`` is the LLM-token grid (``VideoTokens.grid``): temporal groups / frames, then merged or pooled rows and
    columns.
    """
    steps = int(grid[0])
    vision = config.vision_config
    if config.model_type == "qwen2_5_vl":
        per_group = int(grid[1]) * int(grid[2]) * vision.spatial_merge_size**2
        patches = steps * per_group
        h, i = vision.hidden_size, vision.intermediate_size
        window = (vision.window_size // vision.patch_size) ** 2
        full = set(vision.fullatt_block_indexes)
        total = 2 * patches * (3 * vision.temporal_patch_size * vision.patch_size**2) * h
        for block in range(vision.depth):
            span = per_group if block in full else window
            total += 2 * patches * (4 * h * h + 3 * h * i) + 4 * patches * span * h
        merged, width = patches / vision.spatial_merge_size**2, h * vision.spatial_merge_size**2
        return total + 2 * merged * (width * width + width * vision.out_hidden_size)
    side = vision.image_size // vision.patch_size
    per_frame = side * side
    patches = steps * per_frame
    h, i = vision.hidden_size, vision.intermediate_size
    selected = config.vision_feature_layer
    layers = vision.num_hidden_layers + 1 + selected if selected < 0 else selected
    total = 2 * patches * (3 * vision.patch_size**2) * h
    total += layers * (2 * patches * (4 * h * h + 2 * h * i) + 4 * patches * per_frame * h)
    d = config.text_config.hidden_size
    return total + 2 * patches * (h * d + d * d)

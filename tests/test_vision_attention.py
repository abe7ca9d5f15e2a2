"""Batched segment attention for Qwen2.5-VL's windowed ViT: same output as the stock per-window sdpa loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vidcompress.models.vision_attention as vision_attention
from vidcompress import wrap
from vidcompress.models.tiny import tiny_llava_onevision, tiny_qwen2_5_vl
from vidcompress.models.vision_attention import (
    BATCHED_VISION_ATTENTION,
    batched_segment_attention,
    use_batched_vision_attention,
)


def _reference(q, k, v, bounds, scale):
    """Softmax attention written out, one segment at a time; ``[1, S, H, d]``."""
    out = torch.zeros_like(q[0].transpose(0, 1))
    for start, end in zip(bounds[:-1], bounds[1:]):
        weights = torch.softmax(q[0, :, start:end] @ k[0, :, start:end].transpose(1, 2) * scale, dim=-1)
        out[start:end] = (weights @ v[0, :, start:end]).transpose(0, 1)
    return out.unsqueeze(0)


@pytest.mark.parametrize(
    "lengths",
    [[16, 16, 16, 16], [16, 8, 16, 8, 4, 16], [5, 3, 5, 5, 1], [7]],
    ids=["equal", "scattered-equal", "odd", "single"],
)
def test_segment_attention_matches_explicit_softmax(lengths):
    torch.manual_seed(0)
    total, heads, dim = sum(lengths), 3, 8
    q, k, v = (torch.randn(1, heads, total, dim, dtype=torch.float64) for _ in range(3))
    bounds = torch.tensor([0, *np.cumsum(lengths).tolist()], dtype=torch.int32)
    out, weights = batched_segment_attention(None, q, k, v, scaling=0.3, cu_seq_lens_q=bounds, cu_seq_lens_k=bounds)
    assert weights is None and out.shape == (1, total, heads, dim)
    torch.testing.assert_close(out, _reference(q, k, v, bounds.tolist(), 0.3), rtol=1e-10, atol=1e-10)


def test_segment_attention_refuses_a_mask_or_missing_segments():
    q = torch.zeros(1, 2, 4, 8)
    with pytest.raises(ValueError):
        batched_segment_attention(None, q, q, q, attention_mask=torch.ones(1, 1, 4, 4))
    with pytest.raises(ValueError):
        batched_segment_attention(None, q, q, q)


def _vision_outputs(model, grid, pixels):
    with torch.no_grad():
        return model.model.visual(pixels, grid_thw=grid).pooler_output


# (t, h, w) patch grids: 8 x 10 and 6 x 14 patches are not multiples of the tiny ViT's 4-patch window
@pytest.mark.parametrize("grid", [(4, 8, 10), (2, 6, 14), (3, 10, 6), (2, 16, 16)])
def test_vision_tower_equals_stock_sdpa_in_fp32(grid, monkeypatch):
    model, _ = tiny_qwen2_5_vl()
    model = model.float()
    t, h, w = grid
    torch.manual_seed(1)
    pixels = torch.randn(t * h * w, 3 * 2 * 14 * 14)
    grid_thw = torch.tensor([grid])
    stock = _vision_outputs(model, grid_thw, pixels)

    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(vision_attention.F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or sdpa(*a, **k))
    assert use_batched_vision_attention(model)
    assert model.config.text_config._attn_implementation == "sdpa"  # the LLM keeps its attention
    batched = _vision_outputs(model, grid_thw, pixels)
    torch.testing.assert_close(batched, stock, rtol=1e-5, atol=1e-5)
    depth = len(model.model.visual.blocks)
    windows_equal = h % 4 == 0 and w % 4 == 0
    assert len(calls) == depth if windows_equal else depth < len(calls) <= 3 * depth


def test_ask_gives_the_stock_answer_with_batched_vision_attention():
    frames = np.random.default_rng(0).integers(0, 255, (8, 112, 140, 3), dtype=np.uint8)
    stock = wrap("tiny-qwen2.5-vl", method="visionzip", retention=0.25)
    batched = wrap("tiny-qwen2.5-vl", method="visionzip", retention=0.25, vision_attention="batched")
    assert batched.model.config.vision_config._attn_implementation == BATCHED_VISION_ATTENTION
    assert stock.model.config.vision_config._attn_implementation == "sdpa"
    first = stock.ask(frames, "what happens in the video ?", max_new_tokens=6)
    second = batched.ask(frames, "what happens in the video ?", max_new_tokens=6)
    assert first.stats["grid"][1] % 2 == 1  # 3 merged rows: the 2-unit windows do not tile the frame
    assert second.token_ids == first.token_ids
    assert second.stats["visual_tokens_out"] == first.stats["visual_tokens_out"]


def test_llava_and_bad_choices():
    model, _ = tiny_llava_onevision()
    assert not use_batched_vision_attention(model)
    assert model.config.vision_config._attn_implementation != BATCHED_VISION_ATTENTION
    with pytest.raises(ValueError, match="vision_attention"):
        wrap("tiny-qwen2.5-vl", vision_attention="flash")

"""Model adapters on the tiny random-weight Qwen2.5-VL and LLaVA-OneVision.

The checks are token-exact: uncompressed = stock ``generate``; compressed = a no-cache greedy loop over the same
reduced sequence; a left-padded batch = the single runs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidcompress import get_compressor, target_count
from vidcompress.api import VideoLLM
from vidcompress.models import LlavaOnevisionAdapter, Qwen2_5_VLAdapter, adapter_for
from vidcompress.models.qwen2_5_vl import window_index
from vidcompress.video import load_video

QUESTION = "what happens in the video ?"
STEPS = 6


def trim(ids: list[int], eos: int) -> list[int]:
    return ids[: ids.index(eos) + 1] if eos in ids else ids


def greedy_without_cache(model, llm_inputs, steps: int) -> list[list[int]]:
    """Reference decoder: a full forward over the whole sequence at every step, no KV cache."""
    embed = model.get_input_embeddings()
    embeds, mask, positions = llm_inputs.inputs_embeds, llm_inputs.attention_mask, llm_inputs.position_ids
    generated = []
    with torch.no_grad():
        for _ in range(steps):
            kwargs = dict(inputs_embeds=embeds, attention_mask=mask, use_cache=False)
            if positions is not None:
                kwargs["position_ids"] = positions
            next_token = model(**kwargs).logits[:, -1].argmax(-1)
            generated.append(next_token)
            embeds = torch.cat([embeds, embed(next_token)[:, None]], dim=1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            if positions is not None:
                positions = torch.cat([positions, positions[..., -1:] + 1], dim=-1)
    return torch.stack(generated, 1).tolist()


def test_full_retention_equals_stock_generate(tiny, frames):
    name, model, processor = tiny
    vlm = VideoLLM(model, processor, get_compressor("none"), rope_compat="hf")
    answer = vlm.ask(frames, QUESTION, max_new_tokens=STEPS)
    adapter = vlm.adapter
    inputs = adapter.preprocess(load_video(frames), adapter.prompt(QUESTION))
    with torch.no_grad():
        stock = model.generate(**inputs, max_new_tokens=STEPS, do_sample=False)[0, inputs["input_ids"].shape[1] :]
    if name == "qwen":
        model.model.rope_deltas = None
    assert answer.token_ids == trim(stock.tolist(), processor.tokenizer.eos_token_id)
    assert answer.stats["visual_tokens_out"] == answer.stats["visual_tokens_in"]


@pytest.mark.parametrize("method", ["uniform", "random"])
def test_compressed_generate_equals_no_cache_reference(tiny, frames, method):
    name, model, processor = tiny
    adapter = adapter_for(model, processor)
    inputs = adapter.preprocess(load_video(frames), adapter.prompt(QUESTION))
    sample = adapter.encode(inputs, with_attention=False)
    out = get_compressor(method, retention=0.25)(sample.tokens)
    assert out.num_tokens == target_count(sample.tokens.grid, 0.25)
    llm_inputs = adapter.splice([sample], [out])
    expected_length = sample.input_ids.shape[0] - sample.tokens.num_tokens + out.num_tokens
    assert llm_inputs.input_ids.shape == (1, expected_length)
    generated, report = adapter.generate(llm_inputs, max_new_tokens=STEPS, do_sample=False, min_new_tokens=STEPS)
    assert report is None
    assert generated.tolist() == greedy_without_cache(model, llm_inputs, STEPS)


def test_qwen_positions_keep_each_kept_token_and_the_text(qwen, frames):
    model, processor = qwen
    adapter = Qwen2_5_VLAdapter(model, processor)
    inputs = adapter.preprocess(load_video(frames), adapter.prompt(QUESTION))
    sample = adapter.encode(inputs, with_attention=False)
    out = get_compressor("uniform", retention=0.25)(sample.tokens)
    positions = adapter.splice([sample], [out]).position_ids[:, 0]
    start, k = sample.video_start, out.num_tokens
    assert torch.equal(positions[:, start : start + k].T, out.positions)
    assert torch.equal(positions[:, :start], sample.positions[:, :start])
    assert torch.equal(positions[:, start + k :], sample.positions[:, sample.video_end :])
    # the full-prompt positions follow the reference rule: text after the video at max + 1
    assert int(sample.positions[0, sample.video_end]) == int(sample.positions[:, : sample.video_end].max()) + 1


def test_rope_deltas_left_clean(qwen, frames):
    model, processor = qwen
    vlm = VideoLLM(model, processor, get_compressor("uniform", retention=0.5))
    vlm.ask(frames, QUESTION, max_new_tokens=2)
    assert model.model.rope_deltas is None


def test_batch_of_two_equals_single_runs(tiny, frames):
    name, model, processor = tiny
    vlm = VideoLLM(model, processor, get_compressor("uniform", retention=0.5))
    other = np.random.RandomState(1).randint(0, 255, (4, 112, 112, 3), dtype=np.uint8)
    questions = [QUESTION, "which shape flashed first ?"]
    batch = vlm.ask_batch([frames, other], questions, max_new_tokens=STEPS)
    singles = [vlm.ask(video, q, max_new_tokens=STEPS) for video, q in zip([frames, other], questions)]
    assert batch[0].stats["prompt_tokens"] != batch[1].stats["prompt_tokens"]  # padding really happened
    for b, s in zip(batch, singles):
        assert b.token_ids == s.token_ids
        assert b.stats["visual_tokens_out"] == s.stats["visual_tokens_out"]


def test_llava_newline_closes_the_video(llava, frames):
    model, processor = llava
    adapter = LlavaOnevisionAdapter(model, processor)
    inputs = adapter.preprocess(load_video(frames), adapter.prompt(QUESTION))
    sample = adapter.encode(inputs, with_attention=False)
    assert sample.tokens.grid == (8, 2, 2)
    out = get_compressor("uniform", retention=0.25)(sample.tokens)
    llm = adapter.splice([sample], [out])
    newline_at = sample.video_start + out.num_tokens
    assert int(llm.input_ids[0, newline_at]) == adapter.video_token_id
    assert torch.equal(llm.inputs_embeds[0, newline_at], model.model.image_newline.detach())
    assert int(llm.input_ids[0, newline_at + 1]) != adapter.video_token_id


class _OutputCapture:
    def __init__(self):
        self.args = self.kwargs = self.output = None

    def __call__(self, module, args, kwargs, output):
        self.args, self.kwargs, self.output = args, kwargs, output


def test_qwen_attention_probe_is_the_softmax_the_block_used(qwen, frames):
    """Weights recomputed independently reproduce the block's own output; the probe's scores are their column means,
    pooled per 2x2 unit and put back in raster order."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision

    model, processor = qwen
    adapter = Qwen2_5_VLAdapter(model, processor)
    inputs = adapter.preprocess(load_video(frames), adapter.prompt(QUESTION))
    attn = model.model.visual.blocks[max(model.config.vision_config.fullatt_block_indexes)].attn
    capture = _OutputCapture()
    handle = attn.register_forward_hook(capture, with_kwargs=True)
    try:
        sample = adapter.encode(inputs, with_attention=True)
    finally:
        handle.remove()
    x = capture.args[0]
    cos, sin = capture.kwargs["position_embeddings"]
    bounds = capture.kwargs["cu_seqlens"].tolist()
    q, k, v = attn.qkv(x).reshape(x.shape[0], 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)
    outputs, received = [], []
    for a, b in zip(bounds[:-1], bounds[1:]):
        weights = torch.softmax(torch.einsum("qhd,khd->hqk", q[a:b], k[a:b]) * attn.scaling, -1)
        outputs.append(torch.einsum("hqk,khd->qhd", weights, v[a:b]).reshape(b - a, -1))
        received.append(weights.mean((0, 1)))
    assert torch.allclose(attn.proj(torch.cat(outputs)), capture.output, atol=1e-5)
    grid_thw = tuple(inputs["video_grid_thw"][0].tolist())
    order = window_index(grid_thw, 2, model.config.vision_config.window_size, 14)
    expected = torch.cat(received).view(-1, 4).mean(-1)[torch.argsort(order)].view(sample.tokens.grid[0], -1)
    assert torch.allclose(sample.tokens.attention, expected, atol=1e-6)
    # each temporal group's scores are a distribution over its patches, averaged per unit
    assert torch.allclose(sample.tokens.attention.sum(-1), torch.full((sample.tokens.grid[0],), 0.25), atol=1e-5)


def test_qwen_window_index_matches_transformers():
    from transformers.vision_utils import get_vision_window_index

    for grid in [(2, 8, 8), (1, 12, 20), (3, 6, 10)]:
        ours = window_index(grid, 2, 56, 14)
        theirs, _ = get_vision_window_index(torch.tensor([grid]), 2, 56, 14)
        assert torch.equal(ours, theirs)


def test_llava_attention_probe_is_the_softmax_the_layer_used(llava, frames):
    model, processor = llava
    adapter = LlavaOnevisionAdapter(model, processor)
    inputs = adapter.preprocess(load_video(frames), adapter.prompt(QUESTION))
    attn = adapter._feature_layer().self_attn
    capture = _OutputCapture()
    handle = attn.register_forward_hook(capture, with_kwargs=True)
    try:
        sample = adapter.encode(inputs, with_attention=True)
    finally:
        handle.remove()
    x = capture.args[0] if capture.args else capture.kwargs["hidden_states"]
    f, s, _ = x.shape
    split = lambda t: t.view(f, s, attn.num_heads, attn.head_dim).transpose(1, 2)  # noqa: E731
    weights = torch.softmax(split(attn.q_proj(x)) @ split(attn.k_proj(x)).transpose(-1, -2) * attn.scale, -1)
    output = attn.out_proj((weights @ split(attn.v_proj(x))).transpose(1, 2).reshape(f, s, -1))
    assert torch.allclose(output, capture.output[0], atol=1e-5)
    side = int(s**0.5)
    pooled = torch.nn.functional.interpolate(weights.mean((1, 2)).view(f, 1, side, side), size=(2, 2), mode="bilinear")
    assert torch.allclose(sample.tokens.attention, pooled.view(f, 4), atol=1e-6)


def test_attention_is_computed_only_when_asked(tiny, frames):
    _, model, processor = tiny
    adapter = adapter_for(model, processor)
    inputs = adapter.preprocess(load_video(frames), adapter.prompt(QUESTION))
    assert adapter.encode(inputs, with_attention=False).tokens.attention is None
    assert adapter.encode(inputs, with_attention=True).tokens.attention is not None


def test_question_embeddings_are_word_embeddings(tiny):
    _, model, processor = tiny
    adapter = adapter_for(model, processor)
    query = adapter.question_embeddings("which shape flashed ?")
    ids = processor.tokenizer("which shape flashed ?", add_special_tokens=False)["input_ids"]
    assert query.shape == (4, model.config.text_config.hidden_size)
    assert torch.equal(query, model.get_input_embeddings()(torch.tensor(ids)))
    with pytest.raises(ValueError, match="empty"):
        adapter.question_embeddings("")


def test_unsupported_model_is_refused(llava):
    model, processor = llava
    with pytest.raises(ValueError, match="no adapter for"):
        adapter_for(model.model.language_model, processor)

"""The LLM stage: one hook mechanism that removes visual tokens at layer K, checked against a cache-free,
hook-free layer-by-layer reference, and FastV on top of it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidcompress import get_compressor
from vidcompress.api import VideoLLM
from vidcompress.llm_stage import LayerInputs, LayerReduction, keep_top_visual
from vidcompress.models import adapter_for
from vidcompress.models.llm_stage import layer_reduction
from vidcompress.models.tiny import tiny_llava_onevision, tiny_qwen2_5_vl
from vidcompress.video import load_video

QUESTION = "what happens in the video ?"
STEPS = 5


def test_keep_top_visual_keeps_text_and_best_visual_tokens():
    visual = torch.tensor([[False, True, True, True, True, False]])
    scores = torch.tensor([[9.0, 0.1, 0.4, 0.2, 0.4, 9.0]])
    inputs = LayerInputs(2, torch.zeros(1, 6, 4), visual, torch.ones_like(visual), scores)
    # the two best visual tokens are 2 and 4 (tie at 0.4, both kept); text 0 and 5 always kept
    assert keep_top_visual(inputs, scores, 2).tolist() == [[0, 2, 4, 5]]
    # a tie for the last place goes to the earlier position
    assert keep_top_visual(inputs, scores, 1).tolist() == [[0, 2, 5]]
    with pytest.raises(ValueError, match="cannot keep 5 of 4"):
        keep_top_visual(inputs, scores, 5)


def test_fastv_keeps_the_tokens_the_last_token_attends_to_most():
    visual = torch.tensor([[False, True, True, True, True, True, True, False]])
    attention = torch.tensor([[0.3, 0.01, 0.2, 0.02, 0.15, 0.03, 0.09, 0.2]])
    inputs = LayerInputs(2, torch.zeros(1, 8, 4), visual, torch.ones_like(visual), attention)
    decision = get_compressor("fastv", drop_ratio=0.5).reduce_in_llm(inputs)
    # round(6 * 0.5) = 3 survivors: attention 0.2 (pos 2), 0.15 (pos 4), 0.09 (pos 6)
    assert decision.keep.tolist() == [[0, 2, 4, 6, 7]]
    assert decision.hidden_states is None


def test_fastv_parameters_are_checked():
    with pytest.raises(ValueError, match="input retention is 1.0"):
        get_compressor("fastv", retention=0.5)
    with pytest.raises(ValueError, match="layer"):
        get_compressor("fastv", layer=0)
    with pytest.raises(ValueError, match="drop_ratio"):
        get_compressor("fastv", drop_ratio=1.0)
    chain = get_compressor("uniform+fastv", retention=0.25, layer=1)
    assert chain.stage("token").retention == 0.25 and chain.stage("llm").retention == 1.0
    assert chain.stage("llm").layer == 1


def build(family: str, attn: str):
    model, processor = tiny_qwen2_5_vl() if family == "qwen" else tiny_llava_onevision()
    model.set_attn_implementation(attn)
    return model, processor


def spliced(model, processor, videos, retention=1.0):
    adapter = adapter_for(model, processor)
    samples = []
    for frames, question in videos:
        sample = adapter.encode(adapter.preprocess(load_video(frames), adapter.prompt(question)), with_attention=False)
        samples.append(sample)
    outputs = [get_compressor("uniform", retention=retention)(s.tokens) for s in samples]
    return adapter, adapter.splice(samples, outputs)


def layerwise_reference(model, llm_inputs, keep: torch.Tensor, layer: int, steps: int, merge=None) -> list[list[int]]:
    """Greedy decoding that runs the decoder layers one by one over the whole sequence at every step, with no cache
    and no hooks: layers < K see every position, layers >= K the kept ones (plus the generated tokens).

    ``merge`` (merging methods) maps the prompt's hidden states entering layer K, ``[B, prompt, D]``, to the
    replacement hidden states of the kept positions, ``[B, S', D]``."""
    lm = model.model.language_model
    embed = model.get_input_embeddings()
    embeds, mask, positions = llm_inputs.inputs_embeds, llm_inputs.attention_mask, llm_inputs.position_ids
    prompt_length = embeds.shape[1]
    if positions is None:  # generate's 1-D convention: cumulative count of real tokens
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    generated = []
    with torch.no_grad():
        for _ in range(steps):
            batch, length = mask.shape
            cos, sin = lm.rotary_emb(embeds, positions)
            hidden = embeds
            rows = torch.arange(length).expand(batch, -1)
            for index, decoder_layer in enumerate(lm.layers):
                if index == layer:  # from here on: the kept prompt positions and every generated token
                    rows = torch.cat([keep, torch.arange(prompt_length, length).expand(batch, -1)], dim=1)
                    pick = lambda t: t[torch.arange(batch)[:, None], rows]  # noqa: E731
                    replaced = None if merge is None else merge(hidden[:, :prompt_length])
                    hidden, cos, sin = pick(hidden), pick(cos), pick(sin)
                    if replaced is not None:
                        hidden = torch.cat([replaced, hidden[:, keep.shape[1] :]], dim=1)
                # causal over the original positions, padding keys masked
                allowed = (rows[:, None, :] <= rows[:, :, None]) & torch.gather(mask.bool(), 1, rows)[:, None, :]
                additive = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)[:, None]
                hidden = decoder_layer(hidden, attention_mask=additive, position_embeddings=(cos, sin),
                                       position_ids=None, use_cache=False)
            next_token = model.lm_head(lm.norm(hidden))[:, -1].argmax(-1)
            generated.append(next_token)
            embeds = torch.cat([embeds, embed(next_token)[:, None]], dim=1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            positions = torch.cat([positions, positions[..., -1:] + 1], dim=-1)
    return torch.stack(generated, 1).tolist()


@pytest.mark.parametrize("family", ["qwen", "llava"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("batch", [1, 2])
def test_llm_stage_equals_layerwise_reference(family, attn, batch):
    model, processor = build(family, attn)
    frames = [np.random.RandomState(seed).randint(0, 255, (8, 112, 112, 3), dtype=np.uint8) for seed in range(batch)]
    questions = [QUESTION, "which shape flashed first ?"][:batch]  # different lengths: left padding in the batch
    adapter, llm_inputs = spliced(model, processor, list(zip(frames, questions)), retention=0.5)
    fastv = get_compressor("fastv", layer=1, drop_ratio=0.5)
    generated, report = adapter.generate(llm_inputs, llm_stage=fastv, max_new_tokens=STEPS, min_new_tokens=STEPS,
                                         do_sample=False)
    visual = int(llm_inputs.visual_mask[0].sum())
    assert report.visual_in == visual and report.visual_kept == round(visual * 0.5)
    assert report.keep.shape == (batch, llm_inputs.input_ids.shape[1] - (visual - report.visual_kept))
    expected = layerwise_reference(model, llm_inputs, report.keep, layer=1, steps=STEPS)
    assert generated.tolist() == expected


@pytest.mark.parametrize("family", ["qwen", "llava"])
def test_scores_are_the_eager_attention_of_the_last_token(family):
    """The hook's recomputed attention equals the weights eager attention returns at layer K - 1."""
    model, processor = build(family, "eager")
    frames = np.random.RandomState(0).randint(0, 255, (8, 112, 112, 3), dtype=np.uint8)
    adapter, llm_inputs = spliced(model, processor, [(frames, QUESTION)])

    class Recorder:
        llm_layer = 1  # scores come from layer 0 of the two
        llm_attention_query = "last"
        seen = None

        def reduce_in_llm(self, inputs):
            Recorder.seen = inputs.attention
            return LayerReduction(keep=torch.arange(inputs.hidden_states.shape[1])[None])

    recorder = Recorder()
    lm = model.model.language_model
    with torch.no_grad(), layer_reduction(lm, recorder, llm_inputs.visual_mask, llm_inputs.attention_mask.bool()):
        kwargs = {key: value for key, value in llm_inputs.as_kwargs().items() if key != "input_ids"}
        out = model(**kwargs, output_attentions=True, use_cache=False)
    eager = out.attentions[0][:, :, -1].mean(1)  # layer 0 = K - 1, last query, mean over heads
    assert torch.allclose(Recorder.seen, eager, atol=1e-5)
    assert torch.allclose(Recorder.seen.sum(-1), torch.ones(1), atol=1e-5)


def test_ask_reports_layer_averaged_retention(qwen):
    model, processor = qwen
    frames = np.random.RandomState(0).randint(0, 255, (8, 112, 112, 3), dtype=np.uint8)
    vlm = VideoLLM(model, processor, get_compressor("uniform+fastv", retention=0.5, layer=1, drop_ratio=0.75))
    stats = vlm.ask(frames, QUESTION, max_new_tokens=3).stats
    assert stats["visual_tokens_in"] == 64 and stats["visual_tokens_out"] == 32
    assert stats["llm_stage"]["visual_tokens_after_layer"] == 8  # round(32 * 0.25)
    # 2 layers: layer 0 sees 32 tokens, layer 1 sees 8 -> (32 + 8) / 2 / 64
    assert stats["llm_stage"]["layer_averaged_retention"] == pytest.approx(20 / 64)
    assert model.model.rope_deltas is None


def test_stage_may_only_remove_visual_tokens(qwen):
    model, processor = qwen
    frames = np.random.RandomState(0).randint(0, 255, (8, 112, 112, 3), dtype=np.uint8)
    adapter, llm_inputs = spliced(model, processor, [(frames, QUESTION)])

    class DropsText:
        llm_layer = 1
        llm_attention_query = "none"

        def reduce_in_llm(self, inputs):
            return LayerReduction(keep=torch.arange(1, inputs.hidden_states.shape[1])[None])  # drops position 0

    with pytest.raises(ValueError, match="only remove visual tokens"):
        adapter.generate(llm_inputs, llm_stage=DropsText(), max_new_tokens=2)

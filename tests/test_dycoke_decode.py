"""DyCoke's decode stage: the per-step keep decision, and the hooks checked against a cache-free, hook-free
layer-by-layer reference that masks the same visual keys in layers >= L at every decoding step."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

import vidcompress
from vidcompress import get_compressor, target_count
from vidcompress.models import adapter_for
from vidcompress.models.decode_stage import decode_pruning
from vidcompress.models.llm_stage import _query_attention
from vidcompress.models.tiny import tiny_llava_onevision, tiny_qwen2_5_vl
from vidcompress.video import load_video

QUESTION = "what happens in the video ?"
STEPS = 6

# -- the decision ---------------------------------------------------------------------------------------------------
VISUAL = torch.tensor([[False, True, True, True, True, False]])
FIRST = torch.tensor([[0.3, 0.4, 0.1, 0.05, 0.1, 0.05]])  # visual part (0.4, 0.1, 0.05, 0.1)
SIMILAR = torch.tensor([[0.1, 0.8, 0.2, 0.1, 0.2, 0.6]])  # visual part x2: cosine 1 with FIRST's
CHANGED = torch.tensor([[0.2, 0.0, 0.0, 0.3, 0.3, 0.2]])  # visual part (0, 0, 0.3, 0.3): cosine ~0.33 with SIMILAR's


def decide(reuse: str, sequence: list[torch.Tensor], visual: torch.Tensor = VISUAL) -> list[list[list[bool]]]:
    dycoke = get_compressor("dycoke", decode_prune_ratio=0.5, decode_reuse=reuse)  # keeps int(4 * 0.5) = 2
    previous_attention = previous_keep = None
    keeps = []
    for attention in sequence:
        previous_keep = dycoke.prune_in_decode(attention, visual, previous_attention, previous_keep)
        previous_attention = attention
        keeps.append(previous_keep.tolist())
    return keeps


def test_keep_set_is_recomputed_only_when_the_attention_changes():
    first = [[True, True, True, False, False, True]]  # 0.4 at 1, then the tie 0.1 at 2 / 4 goes to 2; text kept
    changed = [[True, False, False, True, True, True]]
    # reference: a similar step (cosine 1 >= 0.9) applies no selection, all visual keys attended
    assert decide("reference", [FIRST, SIMILAR, CHANGED]) == [first, [[True] * 6], changed]
    # paper: a similar step reuses the previous selection
    assert decide("previous", [FIRST, SIMILAR, CHANGED]) == [first, first, changed]
    # the comparison is with the previous step's attention, not with the one of the last re-selection
    assert decide("previous", [FIRST, SIMILAR, SIMILAR, CHANGED, CHANGED]) == [first, first, first, changed, changed]


def test_each_row_decides_for_itself():
    visual = VISUAL.expand(2, -1)
    keeps = decide("previous", [torch.cat([FIRST, FIRST]), torch.cat([SIMILAR, CHANGED])], visual)
    assert keeps[1] == [[True, True, True, False, False, True], [True, False, False, True, True, True]]


def test_keep_count_follows_the_reference_int():
    # int(5 * (1 - 0.8)) = int(0.9999999999999998) = 0 visual tokens; int(10 * 0.2...) = 1
    dycoke = get_compressor("dycoke")
    for visual_count, kept in [(5, 0), (10, 1), (11, 2)]:
        visual = torch.ones(1, visual_count, dtype=torch.bool)
        attention = torch.arange(visual_count, dtype=torch.float32)[None]
        assert int(dycoke.prune_in_decode(attention, visual, None, None).sum()) == kept


def test_decode_parameters_are_checked():
    for bad in ({"decode_layer": 0}, {"decode_layer": 1.5}, {"decode_prune_ratio": 1.0}, {"decode_prune_ratio": -0.1},
                {"decode_similarity": 1.5}, {"decode_reuse": "paper"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            get_compressor("dycoke", **bad)
    assert get_compressor("dycoke").stage("decode") is not None
    assert get_compressor("dycoke", decode_pruning=False).stage("decode") is None
    assert get_compressor("dycoke+ppe", decode_pruning=False).stage("decode") is None


# -- the hooks against a reference ----------------------------------------------------------------------------------
@functools.cache
def tiny(family: str):
    """This module's own tiny models (their attention implementation is switched per test)."""
    return tiny_qwen2_5_vl() if family == "qwen" else tiny_llava_onevision()


def spliced(family: str, attn: str, batch: int):
    model, processor = tiny(family)
    model.set_attn_implementation(attn)
    adapter = adapter_for(model, processor)
    questions = [QUESTION, "which shape flashed first ?"][:batch]  # different lengths: left padding in the batch
    samples = []
    for seed, question in enumerate(questions):
        frames = np.random.RandomState(seed).randint(0, 255, (8, 112, 112, 3), dtype=np.uint8)
        inputs = adapter.preprocess(load_video(frames), adapter.prompt(question))
        samples.append(adapter.encode(inputs, with_attention=False))
    outputs = [get_compressor("uniform", retention=0.5)(sample.tokens) for sample in samples]
    return model, adapter, adapter.splice(samples, outputs)


def layerwise_reference(model, llm_inputs, dycoke, steps: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Greedy decoding that runs the decoder layers one by one over the whole sequence at every step, with no cache
    and no hooks. Each generated query row of layers >= L sees only the prompt keys chosen at its own step (from its
    attention at layer L - 1, recomputed over the full sequence); prompt rows see every key (the prefill)."""
    lm = model.model.language_model
    embed = model.get_input_embeddings()
    layer = dycoke.decode_layer
    embeds, mask, positions = llm_inputs.inputs_embeds, llm_inputs.attention_mask, llm_inputs.position_ids
    prompt = embeds.shape[1]
    if positions is None:  # generate's 1-D convention: cumulative count of real tokens
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    logits, keeps = [], []
    previous_attention = previous_keep = None
    with torch.no_grad():
        for step in range(steps):
            batch, length = mask.shape
            cos, sin = lm.rotary_emb(embeds, positions)
            index = torch.arange(length)
            allowed = (index[None, :] <= index[:, None])[None] & mask.bool()[:, None, :]  # [B, query, key]
            pruned = allowed.clone()
            for row, keep in enumerate(keeps):  # the query row of decoding step row + 1
                pruned[:, prompt + row, :prompt] &= keep
            hidden = embeds
            for number, decoder_layer in enumerate(lm.layers):
                if number == layer - 1 and step > 0:
                    last = torch.zeros(batch, length, dtype=torch.bool)
                    last[:, -1] = True
                    normed = decoder_layer.input_layernorm(hidden)
                    attention = _query_attention(decoder_layer.self_attn, normed, cos, sin, last, mask.bool())
                    attention = attention[:, :prompt]
                    keep = dycoke.prune_in_decode(attention, llm_inputs.visual_mask, previous_attention, previous_keep)
                    previous_attention, previous_keep = attention, keep
                    keeps.append(keep)
                    pruned[:, -1, :prompt] &= keep
                rule = pruned if number >= layer else allowed
                additive = torch.zeros(rule.shape).masked_fill(~rule, torch.finfo(torch.float32).min)[:, None]
                hidden = decoder_layer(hidden, attention_mask=additive, position_embeddings=(cos, sin),
                                       position_ids=None, use_cache=False)
            logits.append(model.lm_head(lm.norm(hidden))[:, -1])
            next_token = logits[-1].argmax(-1)
            embeds = torch.cat([embeds, embed(next_token)[:, None]], dim=1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            positions = torch.cat([positions, positions[..., -1:] + 1], dim=-1)
    return torch.stack(logits, 1), keeps


@pytest.mark.parametrize("family", ["qwen", "llava"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("batch", [1, 2])
def test_decode_stage_equals_layerwise_reference(family, attn, batch):
    model, adapter, llm_inputs = spliced(family, attn, batch)
    # The tiny models' consecutive attentions have cosine ~0.9998: with the threshold 0.9 only the first step selects
    # and the later ones fall back to every visual key (reference quirk); with 1.0 every step selects anew.
    threshold = 0.9 if batch == 1 else 1.0
    dycoke = get_compressor("dycoke", decode_layer=1, decode_prune_ratio=0.5, decode_similarity=threshold)
    lm = model.model.language_model
    with torch.no_grad(), decode_pruning(lm, dycoke, llm_inputs.visual_mask) as report:
        output = model.generate(**llm_inputs.as_kwargs(), max_new_tokens=STEPS, min_new_tokens=STEPS, do_sample=False,
                                output_logits=True, return_dict_in_generate=True)
    adapter.reset_state()
    generated = output.sequences[:, llm_inputs.input_ids.shape[1] :].tolist()
    expected, keeps = layerwise_reference(model, llm_inputs, dycoke, STEPS)
    assert generated == expected.argmax(-1).tolist()
    assert torch.allclose(torch.stack(output.logits, 1), expected, atol=1e-4)
    assert len(report.keeps) == STEPS - 1  # every decoding step decides; the prefill does not
    for hooked, reference in zip(report.keeps, keeps):
        assert torch.equal(hooked, reference)
    visual = int(llm_inputs.visual_mask[0].sum())
    first_kept = int((report.keeps[0] & llm_inputs.visual_mask).sum(1)[0])
    assert first_kept == int(visual * 0.5) < visual  # the first step always selects
    later = [bool((keep & llm_inputs.visual_mask).sum(1).eq(visual).all()) for keep in report.keeps[1:]]
    if batch == 1:
        assert all(later)  # full visual span after the first step
    else:
        assert not any(later) and any(not torch.equal(keep, report.keeps[0]) for keep in report.keeps[1:])
    # the adapter installs the same hooks
    via_adapter, _ = adapter.generate(llm_inputs, decode_stage=dycoke, max_new_tokens=STEPS, min_new_tokens=STEPS,
                                      do_sample=False)
    assert via_adapter.tolist() == generated


def test_decode_stage_changes_the_answer_only_through_the_mask():
    """Without pruning (P = 0) the hooks leave generation unchanged, on the sdpa fast path (no incoming mask)."""
    model, adapter, llm_inputs = spliced("qwen", "sdpa", 1)
    assert model.model.language_model.config._attn_implementation == "sdpa"
    plain, _ = adapter.generate(llm_inputs, max_new_tokens=STEPS, min_new_tokens=STEPS, do_sample=False)
    noop = get_compressor("dycoke", decode_layer=1, decode_prune_ratio=0.0)
    hooked, _ = adapter.generate(llm_inputs, decode_stage=noop, max_new_tokens=STEPS, min_new_tokens=STEPS,
                                 do_sample=False)
    assert hooked.tolist() == plain.tolist()


# -- end to end -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_name", ["tiny-qwen2.5-vl", "tiny-llava-onevision"])
def test_end_to_end(model_name):
    frames = np.random.RandomState(0).randint(0, 255, (8, 112, 112, 3), dtype=np.uint8)
    vlm = vidcompress.wrap(model_name, method="dycoke", retention=0.25, decode_layer=1)
    answer = vlm.ask(frames, QUESTION, num_frames=8, max_new_tokens=3)
    assert answer.stats["visual_tokens_out"] == target_count(tuple(answer.stats["grid"]), 0.25)
    assert answer.stats["method"] == "dycoke"


def test_decode_layer_beyond_the_model_and_llm_stage_chains_are_refused():
    model, processor = tiny("qwen")
    model.set_attn_implementation("sdpa")
    frames = np.random.RandomState(0).randint(0, 255, (8, 112, 112, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"decode_layer 3 .* 2 decoder layers"):
        vidcompress.wrap(model, method="dycoke", retention=0.25, processor=processor).ask(frames, QUESTION,
                                                                                          max_new_tokens=2)
    chained = vidcompress.wrap(model, method="dycoke+fastv", retention=0.25, processor=processor, decode_layer=1,
                               layer=1)
    with pytest.raises(ValueError, match="'dycoke' .*cannot be chained with 'fastv'"):
        chained.ask(frames, QUESTION, max_new_tokens=2)
    unchained = vidcompress.wrap(model, method="dycoke+fastv", retention=0.25, processor=processor,
                                 decode_pruning=False, layer=1)
    assert unchained.ask(frames, QUESTION, max_new_tokens=2).stats["llm_stage"]["layer"] == 1

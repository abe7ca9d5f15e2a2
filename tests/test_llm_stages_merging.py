"""LLM stages of the merging methods: FlashVID's FastV-style pruning and HoliTom's inner similarity merge, checked
on hand-built layer inputs and, end to end, against the cache-free layer-by-layer reference of ``test_llm_stage``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_llm_stage import QUESTION, STEPS, build, layerwise_reference, spliced

import vidcompress
from vidcompress import get_compressor, method_info, target_count
from vidcompress.llm_stage import LayerInputs
from vidcompress.methods.holitom import running_average_weights


def layer_inputs(hidden: torch.Tensor, visual: list[bool], attention: list[float]) -> LayerInputs:
    mask = torch.tensor([visual])
    return LayerInputs(1, hidden[None], mask, torch.ones_like(mask), torch.tensor([attention]))


# -- FlashVID -----------------------------------------------------------------------------------------------------
def test_flashvid_llm_stage_keeps_ceil_of_the_ratio_by_last_token_attention():
    visual = [False] + [True] * 7 + [False]
    attention = [0.3, 0.01, 0.2, 0.02, 0.15, 0.03, 0.09, 0.05, 0.2]
    inputs = layer_inputs(torch.zeros(9, 4), visual, attention)
    decision = get_compressor("flashvid", retention=0.5).reduce_in_llm(inputs)
    # ceil(7 * 0.3) = 3 (FastV's round would keep 2): attention 0.2 (pos 2), 0.15 (pos 4), 0.09 (pos 6)
    assert decision.keep.tolist() == [[0, 2, 4, 6, 8]]
    assert decision.hidden_states is None


def test_flashvid_stages_and_switch():
    assert method_info("flashvid").stages == ("token", "llm")
    default = get_compressor("flashvid", retention=0.25)
    assert default.stage("llm") is default and (default.llm_layer, default.llm_retention_ratio) == (20, 0.3)
    off = get_compressor("flashvid", retention=0.25, llm_stage=False)
    assert off.stages == ("token",) and off.stage("llm") is None
    chain = get_compressor("flashvid+fastv", retention=0.25, llm_stage=False)
    assert chain.stage("llm").name == "fastv"
    with pytest.raises(ValueError, match="both provide a llm stage"):
        get_compressor("flashvid+fastv", retention=0.25)
    for bad in ({"llm_layer": 0}, {"llm_retention_ratio": 0.0}, {"llm_retention_ratio": 1.5}):
        with pytest.raises(ValueError):
            get_compressor("flashvid", retention=0.25, **bad)


def test_flashvid_layer_beyond_the_model_raises_naming_both(qwen, frames):
    model, processor = qwen
    vlm = vidcompress.wrap(model, method="flashvid", retention=0.25, processor=processor)
    with pytest.raises(ValueError, match=r"layer 20 .*2 decoder layers"):
        vlm.ask(frames, QUESTION, num_frames=8, max_new_tokens=2)


# -- HoliTom ------------------------------------------------------------------------------------------------------
def test_holitom_running_average_weights_by_hand():
    # members 0, 2, 3 join kept token 0; member 1 joins kept token 1
    target = torch.tensor([[0, 1, 0, 0]])
    kept, member = running_average_weights(target, 2, "reference")
    # kept 0: (((h0 + m0) / 2 + m2) / 2 + m3) / 2 = h0 / 8 + m0 / 8 + m2 / 4 + m3 / 2; kept 1: (h1 + m1) / 2
    assert kept.tolist() == [[0.125, 0.5]] and member.tolist() == [[0.125, 0.5, 0.25, 0.5]]
    kept, member = running_average_weights(target, 2, "mean")
    assert kept.tolist() == [[0.25, 0.5]] and member.tolist() == [[0.25, 0.5, 0.25, 0.25]]


def test_holitom_llm_merge_by_hand():
    # positions 1-4 visual; attention keeps round(4 * 0.5) = 2: positions 2 and 4
    hidden = torch.tensor(
        [[9.0, 9.0], [1.0, 0.1], [1.0, 0.0], [0.0, 1.0], [0.1, 1.0], [5.0, 5.0]]
    )  # 1 is closest to 2, 3 closest to 4
    inputs = layer_inputs(hidden, [False, True, True, True, True, False], [0.5, 0.1, 0.3, 0.0, 0.2, 0.5])
    comp = get_compressor("holitom", retention=0.5, llm_merge=True)
    decision = comp.reduce_in_llm(inputs)
    assert decision.keep.tolist() == [[0, 2, 4, 5]]
    expected = torch.tensor([[9.0, 9.0], [1.0, 0.05], [0.05, 1.0], [5.0, 5.0]])  # (kept + member) / 2
    torch.testing.assert_close(decision.hidden_states[0], expected)


def test_holitom_llm_merge_reference_order_and_mean():
    # one kept token (attention) and three members that all join it
    hidden = torch.tensor([[0.0, 1.0], [4.0, 0.0], [1.0, 0.5], [2.0, 0.0], [3.0, 0.5], [0.0, 1.0]])
    visual = [False, True, True, True, True, False]
    attention = [0.5, 0.9, 0.1, 0.1, 0.1, 0.5]
    inputs = layer_inputs(hidden, visual, attention)
    reference = get_compressor("holitom", retention=0.5, llm_merge=True, llm_merge_ratio=0.75).reduce_in_llm(inputs)
    assert reference.keep.tolist() == [[0, 1, 5]]
    # ((([4, 0] + [1, .5]) / 2 + [2, 0]) / 2 + [3, .5]) / 2 = [2.625, 0.3125]
    torch.testing.assert_close(reference.hidden_states[0, 1], torch.tensor([2.625, 0.3125]))
    mean = get_compressor("holitom", retention=0.5, llm_merge=True, llm_merge_ratio=0.75, inner_merge="mean")
    torch.testing.assert_close(mean.reduce_in_llm(inputs).hidden_states[0, 1], torch.tensor([2.5, 0.25]))


def test_holitom_stages_and_switch():
    assert method_info("holitom").stages == ("token", "llm")
    default = get_compressor("holitom", retention=0.25)
    assert default.stages == ("token",) and default.stage("llm") is None
    on = get_compressor("holitom", retention=0.25, llm_merge=True)
    assert on.stage("llm") is on and (on.llm_layer, on.llm_merge_ratio) == (18, 0.5)
    for bad in ({"llm_layer": 0}, {"llm_merge_ratio": 1.0}, {"inner_merge": "tree"}):
        with pytest.raises(ValueError):
            get_compressor("holitom", retention=0.25, **bad)


def loop_merge(keep: torch.Tensor, visual: torch.Tensor, mode: str):
    """HoliTom's inner merge written the reference's way: one kept token at a time, in sequence order."""

    def merge(hidden: torch.Tensor) -> torch.Tensor:
        rows = []
        for b in range(hidden.shape[0]):
            h = hidden[b].float().clone()
            kept = [p for p in keep[b].tolist() if visual[b, p]]
            members = [p for p in range(hidden.shape[1]) if visual[b, p] and p not in kept]
            targets = torch.nn.functional.normalize(hidden[b, kept].float(), dim=-1)
            counts = {p: 1 for p in kept}
            for p in members:
                similarity = targets @ torch.nn.functional.normalize(hidden[b, p].float(), dim=0)
                t = kept[int(similarity.argmax())]
                if mode == "reference":
                    h[t] = (h[t] + hidden[b, p].float()) / 2
                else:
                    h[t] = h[t] + hidden[b, p].float()
                    counts[t] += 1
            for t in kept:
                if mode == "mean":
                    h[t] = h[t] / counts[t]
            rows.append(h[keep[b]].to(hidden.dtype))
        return torch.stack(rows)

    return merge


@pytest.mark.parametrize(
    "family, attn, batch, mode",
    [("qwen", "sdpa", 2, "reference"), ("llava", "sdpa", 2, "mean"), ("llava", "eager", 1, "reference")],
)
def test_holitom_llm_merge_equals_layerwise_reference(family, attn, batch, mode):
    model, processor = build(family, attn)
    frames = [np.random.RandomState(seed).randint(0, 255, (8, 112, 112, 3), dtype=np.uint8) for seed in range(batch)]
    questions = [QUESTION, "which shape flashed first ?"][:batch]
    adapter, llm_inputs = spliced(model, processor, list(zip(frames, questions)), retention=0.5)
    holitom = get_compressor("holitom", llm_merge=True, llm_layer=1, inner_merge=mode)
    layers = model.model.language_model.layers
    prompt_length = llm_inputs.input_ids.shape[1]
    seen: dict[str, torch.Tensor] = {}

    def record_before(module, args, output) -> None:  # prefill output of layer K - 1
        seen.setdefault("before", output)

    def record_after(module, args, kwargs, output) -> None:  # prefill input of layer K, after the stage's hook
        seen.setdefault("after", args[0] if args else kwargs["hidden_states"])

    handles = [
        layers[0].register_forward_hook(record_before),
        layers[1].register_forward_hook(record_after, with_kwargs=True),
    ]
    try:
        generated, report = adapter.generate(llm_inputs, llm_stage=holitom, max_new_tokens=STEPS,
                                             min_new_tokens=STEPS, do_sample=False)
    finally:
        for handle in handles:
            handle.remove()
    visual = int(llm_inputs.visual_mask[0].sum())
    assert report.visual_in == visual and report.visual_kept == round(visual * 0.5)
    merge = loop_merge(report.keep, llm_inputs.visual_mask, mode)
    # layer K receives the merged states, which differ from the plain survivors
    assert seen["before"].shape[1] == prompt_length
    torch.testing.assert_close(seen["after"], merge(seen["before"]), rtol=1e-5, atol=1e-5)
    survivors = seen["before"][torch.arange(batch)[:, None], report.keep]
    assert not torch.allclose(seen["after"], survivors)
    assert generated.tolist() == layerwise_reference(model, llm_inputs, report.keep, layer=1, steps=STEPS, merge=merge)


@pytest.mark.parametrize("family, batch", [("qwen", 2), ("llava", 1)])
def test_flashvid_llm_stage_equals_layerwise_reference(family, batch):
    model, processor = build(family, "sdpa")
    frames = [np.random.RandomState(seed).randint(0, 255, (8, 112, 112, 3), dtype=np.uint8) for seed in range(batch)]
    questions = [QUESTION, "which shape flashed first ?"][:batch]
    adapter, llm_inputs = spliced(model, processor, list(zip(frames, questions)), retention=0.5)
    flashvid = get_compressor("flashvid", retention=0.5, llm_layer=1)
    generated, report = adapter.generate(llm_inputs, llm_stage=flashvid, max_new_tokens=STEPS, min_new_tokens=STEPS,
                                         do_sample=False)
    visual = int(llm_inputs.visual_mask[0].sum())
    assert report.visual_kept == math.ceil(visual * 0.3)
    assert generated.tolist() == layerwise_reference(model, llm_inputs, report.keep, layer=1, steps=STEPS)


# -- end to end ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, switch, kept",
    [
        ("flashvid", "llm_stage", lambda v: math.ceil(v * 0.3)),
        ("holitom", "llm_merge", lambda v: round(v * 0.5)),
    ],
)
def test_end_to_end_with_llm_stage(tiny, frames, name, switch, kept):
    _, model, processor = tiny
    vlm = vidcompress.wrap(model, method=name, retention=0.25, processor=processor, llm_layer=1, **{switch: True})
    stats = vlm.ask(frames, QUESTION, num_frames=8, max_new_tokens=3).stats
    out = stats["visual_tokens_out"]
    assert out == target_count(tuple(stats["grid"]), 0.25)
    assert stats["llm_stage"]["layer"] == 1 and stats["llm_stage"]["visual_tokens_after_layer"] == kept(out)
    # 2 layers: layer 0 sees every visual token at the LLM input, layer 1 the survivors
    averaged = (out + kept(out)) / 2 / stats["visual_tokens_in"]
    assert stats["llm_stage"]["layer_averaged_retention"] == pytest.approx(averaged)
    off = vidcompress.wrap(model, method=name, retention=0.25, processor=processor, llm_layer=1, **{switch: False})
    assert off.ask(frames, QUESTION, num_frames=8, max_new_tokens=3).stats["llm_stage"] is None

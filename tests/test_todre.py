"""ToDRE (reconstruction): greedy diversity after the encoder, then visual tokens removed at decoder layer K."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_llm_stage import build, layerwise_reference, spliced

import vidcompress
from vidcompress import VideoTokens, get_compressor, target_count
from vidcompress.llm_stage import LayerInputs

QUESTION = "what happens in the video ?"
STEPS = 4


def tokens_of(vectors: list[list[float]], **extra) -> VideoTokens:
    features = torch.tensor(vectors)[None]
    return VideoTokens(features=features, grid=(1, 1, features.shape[1]), **extra)


def kept(out) -> list[int]:
    return out.representatives.tolist()


def test_k_center_seeds_with_the_most_isolated_token_then_takes_the_farthest():
    """Cosine distances: v0 (1,0) and v1 (0.8,0.6) are 0.2 apart; v2 (0,1) is 0.4 from v1; v3 (-1,0) is 1 from v2.
    Seed: v3 (largest nearest-neighbour distance, 1). Then the farthest from v3: v0 (2). Then the largest
    min-distance to {v3, v0}: v2 (1) over v1 (0.2)."""
    tokens = tokens_of([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]])
    assert kept(get_compressor("todre", retention=0.5)(tokens)) == [0, 3]
    assert kept(get_compressor("todre", retention=0.75)(tokens)) == [0, 2, 3]


def test_max_sum_and_k_center_differ_on_a_token_close_to_one_pick():
    """Seed s0 by attention; s1 ≈ -s0 is farthest. Candidate a is near s1 (distance 0.08) and opposite s0 (1.96):
    min 0.08, sum 2.03. Candidate b is orthogonal to both: min 1, sum 2. k-center takes b, max-sum takes a."""
    vectors = [[1.0, 0.0, 0.0], [-1.0, 0.1, 0.0], [-1.0, -0.3, 0.0], [0.0, 0.0, 1.0]]
    tokens = tokens_of(vectors, attention=torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    k_center = get_compressor("todre", retention=0.75, seed="attention")
    max_sum = get_compressor("todre", retention=0.75, seed="attention", variant="max_sum")
    assert k_center.needs_attention
    assert kept(k_center(tokens)) == [0, 1, 3]
    assert kept(max_sum(tokens)) == [0, 1, 2]


def inputs_with(attention: torch.Tensor | None) -> LayerInputs:
    visual = torch.tensor([[False, True, True, True, True, False, False]])
    return LayerInputs(3, torch.zeros(1, 7, 4), visual, torch.ones_like(visual), attention)


def test_stage2_all_removes_every_visual_token():
    decision = get_compressor("todre", layer=3).reduce_in_llm(inputs_with(None))
    assert decision.keep.tolist() == [[0, 5, 6]] and decision.hidden_states is None


def test_stage2_attention_keeps_the_tokens_the_text_attends_to_most():
    attention = torch.tensor([[0.2, 0.05, 0.3, 0.01, 0.1, 0.2, 0.14]])
    todre = get_compressor("todre", layer=3, stage2="attention", llm_drop_ratio=0.5)
    assert todre.llm_attention_query == "text"
    # round(4 * 0.5) = 2 visual survivors: positions 2 (0.3) and 4 (0.1)
    assert todre.reduce_in_llm(inputs_with(attention)).keep.tolist() == [[0, 2, 4, 5, 6]]
    assert get_compressor("todre").llm_attention_query == "none"


def test_parameters_are_checked():
    for params, match in [({"variant": "max"}, "variant"), ({"seed": "x"}, "seed"), ({"layer": 0}, "layer"),
                          ({"stage2": "some"}, "stage2"), ({"llm_drop_ratio": 1.5}, "llm_drop_ratio")]:
        with pytest.raises(ValueError, match=match):
            get_compressor("todre", **params)


@pytest.mark.parametrize("retention", [0.1, 0.25, 0.5, 1.0])
def test_contract(retention):
    generator = torch.Generator().manual_seed(0)
    tokens = VideoTokens(features=torch.randn(4, 6, 8, generator=generator), grid=(4, 2, 3))
    out = get_compressor("todre", retention=retention)(tokens)
    again = get_compressor("todre", retention=retention)(tokens)
    assert out.num_tokens == target_count(tokens.grid, retention)
    out.validate(tokens)
    assert torch.equal(out.source, again.source)
    if retention == 1.0:
        assert torch.equal(out.features, tokens.flat_features)


@pytest.mark.parametrize("family", ["qwen", "llava"])
@pytest.mark.parametrize("stage2", ["all", "attention"])
def test_llm_stage_equals_layerwise_reference(family, stage2):
    model, processor = build(family, "sdpa")
    frames = [np.random.RandomState(seed).randint(0, 255, (8, 112, 112, 3), dtype=np.uint8) for seed in range(2)]
    adapter, llm_inputs = spliced(model, processor, list(zip(frames, [QUESTION, "which shape flashed first ?"])), 0.5)
    todre = get_compressor("todre", layer=1, stage2=stage2)
    generated, report = adapter.generate(llm_inputs, llm_stage=todre, max_new_tokens=STEPS, min_new_tokens=STEPS,
                                         do_sample=False)
    visual = int(llm_inputs.visual_mask[0].sum())
    assert report.visual_kept == (0 if stage2 == "all" else round(visual * 0.5))
    assert generated.tolist() == layerwise_reference(model, llm_inputs, report.keep, layer=1, steps=STEPS)


@pytest.mark.parametrize("model", ["tiny-qwen2.5-vl", "tiny-llava-onevision"])
def test_end_to_end(model, frames):
    stats = vidcompress.wrap(model, method="todre", retention=0.25, layer=1).ask(
        frames, QUESTION, num_frames=8, max_new_tokens=3
    ).stats
    assert stats["visual_tokens_out"] == target_count(tuple(stats["grid"]), 0.25)
    assert stats["llm_stage"]["visual_tokens_after_layer"] == 0
    # two layers: layer 0 sees the stage-1 tokens, layer 1 none
    averaged = stats["visual_tokens_out"] / 2 / stats["visual_tokens_in"]
    assert stats["llm_stage"]["layer_averaged_retention"] == pytest.approx(averaged)
    with pytest.raises(ValueError, match="2 decoder layers, got 18"):
        vidcompress.wrap(model, method="todre", retention=0.25).ask(frames, QUESTION, num_frames=8, max_new_tokens=2)

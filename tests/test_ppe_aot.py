"""AOT (anchors + optimal transport) and PPE (DPC-kNN merging with member positions, M-RoPE hook)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import numpy as np
import ot
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import vidcompress
from vidcompress import VideoTokens, get_compressor, target_count
from vidcompress.methods.aot import select_anchors
from vidcompress.methods.ppe import attach_position_sets
from vidcompress.models import Qwen2_5_VLAdapter, ppe_rotary, video_rows
from vidcompress.models.tiny import tiny_qwen2_5_vl
from vidcompress.ops.dpc_knn import dpc_knn
from vidcompress.ops.reconcile import Grouping, reconcile
from vidcompress.ops.sinkhorn import gibbs_kernel, sinkhorn
from vidcompress.tokens import CompressedTokens
from vidcompress.video import load_video

METHODS = ["aot", "ppe"]
FRAMES = np.random.RandomState(0).randint(0, 255, (8, 112, 112, 3), dtype=np.uint8)
QUESTION = "what happens in the video ?"


def random_tokens(grid=(4, 4, 4), dim=8, seed=0, dtype=torch.float32) -> VideoTokens:
    generator = torch.Generator().manual_seed(seed)
    t, h, w = grid
    features = torch.randn(t, h * w, dim, generator=generator).to(dtype)
    attention = torch.rand(t, h * w, generator=generator)
    return VideoTokens(features, grid, attention=attention)


# -- Sinkhorn ---------------------------------------------------------------------------------------------------------


def test_sinkhorn_constant_kernel_gives_the_product_plan():
    mu = torch.tensor([[0.2, 0.3, 0.5]])
    nu = torch.tensor([[0.6, 0.4]])
    plan = sinkhorn(torch.ones(1, 3, 2), mu, nu, max_iter=5, tol=0.0)
    expected = torch.tensor([[[0.12, 0.08], [0.18, 0.12], [0.30, 0.20]]])
    torch.testing.assert_close(plan, expected)


def test_sinkhorn_plan_has_the_prescribed_marginals_and_matches_pot():
    generator = torch.Generator().manual_seed(1)
    cost = torch.rand(2, 6, 4, generator=generator) * 2
    mu = torch.tensor([[0.0625, 0.125, 0.25, 0.0625, 0.25, 0.25], [0.125, 0.125, 0.25, 0.25, 0.125, 0.125]])
    nu = torch.tensor([[0.5, 0.25, 0.125, 0.125], [0.25] * 4])  # dyadic masses: both sum to 1 exactly
    plan = sinkhorn(gibbs_kernel(cost, 0.5), mu, nu, max_iter=5000, tol=0.0)
    torch.testing.assert_close(plan.sum(dim=2), mu, atol=1e-6, rtol=0)
    torch.testing.assert_close(plan.sum(dim=1), nu, atol=1e-6, rtol=0)
    for b in range(2):
        reference = ot.sinkhorn(
            mu[b].double().numpy(), nu[b].double().numpy(), cost[b].double().numpy(), 0.5,
            numItermax=5000, stopThr=1e-10,
        )
        np.testing.assert_allclose(plan[b].double().numpy(), reference, atol=1e-6)


def test_sinkhorn_separate_stopping_equals_separate_calls():
    generator = torch.Generator().manual_seed(2)
    kernel = gibbs_kernel(torch.rand(3, 5, 5, generator=generator) * torch.tensor([0.1, 1.0, 3.0])[:, None, None], 0.1)
    uniform = torch.full((3, 5), 0.2)
    together = sinkhorn(kernel, uniform, uniform, max_iter=100, tol=1e-2, joint_stop=False)
    for b in range(3):
        alone = sinkhorn(kernel[b : b + 1], uniform[b : b + 1], uniform[b : b + 1], max_iter=100, tol=1e-2)
        assert torch.equal(together[b : b + 1], alone)


def test_sinkhorn_rejects_bad_input():
    with pytest.raises(ValueError, match="epsilon"):
        gibbs_kernel(torch.zeros(1, 2, 2), 0.0)
    with pytest.raises(ValueError, match="marginals"):
        sinkhorn(torch.ones(1, 2, 3), torch.ones(1, 3), torch.ones(1, 3))


# -- AOT --------------------------------------------------------------------------------------------------------------


def test_global_anchors_are_the_top_attention_tokens_ties_by_index():
    attention = torch.zeros(2, 16)
    attention[0, [3, 9, 14]] = torch.tensor([0.5, 0.9, 0.7])
    anchors = select_anchors(attention, (2, 4, 4), num_anchors=3, global_ratio=1.0, windows=3)
    assert anchors[0].tolist() == [3, 9, 14]
    assert anchors[1].tolist() == [0, 1, 2]  # all equal: the lowest indices


def test_local_anchors_take_the_top_of_each_window():
    attention = torch.zeros(1, 16)  # 4x4 grid, 2x2 windows of 2x2 cells
    attention[0, [0, 6, 9, 15]] = 0.2  # one peak per window
    attention[0, 5] = 0.1
    anchors = select_anchors(attention, (1, 4, 4), num_anchors=5, global_ratio=0.2, windows=2)
    assert anchors[0].tolist() == [0, 5, 6, 9, 15]  # 4 local (one per window), then the best of the rest


def test_aot_anchors_are_the_representatives():
    tokens = random_tokens((3, 4, 4))
    method = get_compressor(
        "aot", retention=0.2, exact=False, visual_token_num=4, global_ratio=1.0, inter_compress=False
    )
    out = method(tokens)
    top = torch.sort(-tokens.attention, dim=1, stable=True).indices[:, :4]
    expected = torch.sort((top + torch.arange(3)[:, None] * 16).reshape(-1)).values
    assert torch.equal(out.representatives, expected)


def test_aot_single_anchor_frame_by_hand():
    # one anchor absorbs three tokens: OT plan 1/3 each, so ota = (a + mean) / 2, hard = (a + sum) / 4
    features = torch.tensor([[[4.0, 0.0], [0.0, 2.0], [2.0, 2.0], [0.0, -2.0]]])
    tokens = VideoTokens(features, (1, 2, 2), attention=torch.tensor([[0.9, 0.1, 0.1, 0.1]]))
    method = get_compressor("aot", retention=0.25, visual_token_num=1, global_ratio=1.0, inter_compress=False)
    out = method(tokens)
    torch.testing.assert_close(out.features, torch.tensor([[2.25, 0.35]]))
    assert out.source.tolist() == [0, 0, 0, 0]


def test_aot_keyframe_absorbs_the_next_frame_by_hand():
    features = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    tokens = VideoTokens(features, (2, 1, 1), attention=torch.ones(2, 1))
    out = get_compressor("aot", retention=0.5, exact=False, visual_token_num=1, clip_length=2)(tokens)
    torch.testing.assert_close(out.features, torch.tensor([[0.5, 0.5]]))
    assert out.source.tolist() == [0, 0] and out.positions.tolist() == [[0, 0, 0]]


def test_aot_keeps_the_quantile_share_of_each_later_frame():
    tokens = random_tokens((4, 1, 5))  # every token an anchor; clips of 2 frames
    out = get_compressor("aot", retention=0.5, exact=False, visual_token_num=5, keep_ratio=0.5, clip_length=2)(tokens)
    assert out.num_tokens == 2 * (5 + math.ceil(0.5 * 4))


def test_aot_per_anchor_mass_moves_anchors_further():
    tokens = random_tokens((2, 4, 4))
    common = dict(retention=0.25, exact=False, visual_token_num=4, inter_compress=False, hard_mix=0.0)
    anchors = tokens.flat_features[get_compressor("aot", **common)(tokens).representatives]
    reference = get_compressor("aot", **common)(tokens).features
    per_anchor = get_compressor("aot", ot_mass="per_anchor", **common)(tokens).features
    assert bool(((per_anchor - anchors).norm(dim=1) > (reference - anchors).norm(dim=1)).all())


@pytest.mark.parametrize(("inter_compress", "frames_per_block"), [(False, 1), (True, 2)])
def test_aot_rows_lie_in_the_range_of_their_frame_or_clip(inter_compress, frames_per_block):
    # OT and hard updates are convex mixes of one frame's tokens; phase II mixes the frames of a clip (2 of 4 here)
    tokens = random_tokens((4, 3, 3), seed=3)
    out = get_compressor("aot", retention=0.25, exact=False, inter_compress=inter_compress)(tokens)
    blocks = tokens.features.reshape(4 // frames_per_block, frames_per_block * 9, -1)
    block = out.representatives // (frames_per_block * 9)
    low, high = blocks.min(1).values[block] - 1e-5, blocks.max(1).values[block] + 1e-5
    assert bool(((out.features >= low) & (out.features <= high)).all())
    assert not torch.equal(out.features, tokens.flat_features[out.representatives])  # the anchors did move


@pytest.mark.parametrize(
    "params", [dict(keep_ratio=1.5), dict(global_ratio=-0.1), dict(epsilon=0.0), dict(clip_length=0), dict(ot_mass="x")]
)
def test_aot_rejects_bad_parameters(params):
    with pytest.raises(ValueError):
        get_compressor("aot", retention=0.5, **params)


def test_aot_rejects_too_many_anchors_and_missing_attention():
    with pytest.raises(ValueError, match="visual_token_num"):
        get_compressor("aot", retention=0.5, visual_token_num=17)(random_tokens((2, 4, 4)))
    tokens = VideoTokens(torch.randn(2, 16, 4), (2, 4, 4))
    with pytest.raises(ValueError, match="attention"):
        get_compressor("aot", retention=0.5)(tokens)


# -- exact-count reconcile --------------------------------------------------------------------------------------------


def test_reconcile_folds_the_lowest_priority_group_into_its_most_similar_same_frame_group():
    rows = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.2]])
    grouping = Grouping(torch.tensor([0, 0, 1, 2]), torch.tensor([0, 2, 3]), torch.ones(4), features=rows)
    priority = torch.tensor([0.9, 0.5, 0.1])  # group 2 (representative 3) has the lowest priority
    no_candidates = torch.empty(0, dtype=torch.long)
    out = reconcile(grouping, torch.zeros(4, 2), 4, 2, priority, no_candidates)
    assert out.group.tolist() == [0, 0, 1, 0]
    assert out.representative.tolist() == [0, 2]
    torch.testing.assert_close(out.features, torch.tensor([[1.0, 0.2 / 3], [0.0, 1.0]]))  # (2·f0 + 1·f2) / 3


def test_reconcile_adds_back_the_highest_priority_members_as_singletons():
    flat = torch.arange(8.0).view(4, 2)
    grouping = Grouping(torch.tensor([0, 0, 0, -1]), torch.tensor([1]), torch.ones(4), features=torch.tensor([[9.0, 9.0]]))
    candidates = torch.tensor([3, 0, 2])  # best first
    out = reconcile(grouping, flat, 4, 3, torch.zeros(1), candidates)
    assert out.group.tolist() == [2, 0, 0, 1]  # new groups appended in candidate order
    assert out.representative.tolist() == [1, 3, 0]
    torch.testing.assert_close(out.features, torch.tensor([[9.0, 9.0], [6.0, 7.0], [0.0, 1.0]]))


# -- PPE: DPC-kNN and position sets -----------------------------------------------------------------------------------


def test_dpc_knn_centre_is_the_densest_token_of_a_line():
    features = torch.tensor([[[0.0], [1.0], [2.0]]])
    is_centre, centre = dpc_knn(features, torch.tensor([1]), k=3)
    assert centre.tolist() == [[1, 1, 1]] and is_centre.tolist() == [[False, True, False]]


def test_ppe_merges_each_cluster_into_its_mean():
    features = torch.tensor([[[0.0, 0.0], [0.2, 0.0], [10.0, 10.0], [10.0, 10.4]]])
    tokens = VideoTokens(features, (1, 2, 2))
    out = get_compressor("ppe", retention=0.5, k=2)(tokens)
    assert out.source.tolist() == [0, 0, 1, 1]
    torch.testing.assert_close(out.features, torch.tensor([[0.1, 0.0], [10.0, 10.2]]))
    assert out.position_sets.shape == (2, 8, 3)


def test_ppe_keeps_ceil_of_the_ratio_per_frame_natively():
    tokens = random_tokens((3, 4, 5))
    out = get_compressor("ppe", retention=0.45, exact=False)(tokens)
    assert out.num_tokens == 3 * math.ceil(20 * 0.45)


def one_group_output(tokens: VideoTokens, members: list[int], representative: int) -> CompressedTokens:
    source = torch.full((tokens.num_tokens,), -1, dtype=torch.long)
    source[members] = 0
    reps = torch.tensor([representative])
    return CompressedTokens(tokens.flat_features[reps], tokens.flat_positions[reps], source, reps)


def test_position_sets_member_choices_by_hand():
    features = torch.tensor([[[0.0], [9.0], [1.0], [9.0], [9.0], [1.5], [9.0], [9.0]]])
    tokens = VideoTokens(features, (1, 2, 4))  # positions (0, row, col)
    out = one_group_output(tokens, [0, 2, 5], representative=2)

    def cells(choice: str) -> list[list[int]]:
        return attach_position_sets(tokens, out, max_members=4, member_choice=choice).position_sets[0].tolist()

    assert cells("reference") == [[0, 1, 1], [0, 0, 2], [0, 0, 0], [0, 1, 1]]  # 5, 2, 0, then cycle to 5
    assert cells("nearest") == [[0, 0, 2], [0, 1, 1], [0, 0, 0], [0, 0, 2]]  # 2 itself, 5 (0.5), 0 (1.0), pad 2
    assert cells("spread") == [[0, 0, 0], [0, 0, 2], [0, 1, 1], [0, 0, 2]]  # 0, 2, 5, pad 2


def test_position_sets_spread_picks_evenly_spaced_members():
    tokens = VideoTokens(torch.zeros(1, 8, 1), (1, 1, 8))
    out = one_group_output(tokens, list(range(8)), representative=0)
    sets = attach_position_sets(tokens, out, max_members=4, member_choice="spread").position_sets
    assert sets[0, :, 2].tolist() == [1, 3, 5, 7]


def test_position_sets_reject_bad_arguments():
    tokens = random_tokens((1, 2, 2))
    out = vidcompress.identity(tokens)
    with pytest.raises(ValueError, match="max_members"):
        attach_position_sets(tokens, out, max_members=0)
    with pytest.raises(ValueError, match="member_choice"):
        attach_position_sets(tokens, out, member_choice="random")


# -- PPE: rotary hook -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_qwen():
    return tiny_qwen2_5_vl()


def stock_rotary_inputs(length=6):
    hidden = torch.zeros(1, length, 64)
    position_ids = torch.tensor([[0, 1, 2, 3, 3, 5], [0, 1, 2, 3, 4, 5], [0, 1, 2, 4, 3, 5]])[:, None, :length]
    return hidden, position_ids


def test_single_member_sets_give_stock_mrope_exactly(tiny_qwen):
    rotary = tiny_qwen[0].model.language_model.rotary_emb
    hidden, position_ids = stock_rotary_inputs()
    stock_cos, stock_sin = rotary(hidden, position_ids)
    video = torch.tensor([3, 4])
    own = position_ids[:, 0, video].T  # [2, 3]
    for sets in (own[:, None, :], own[:, None, :].expand(2, 4, 3)):
        with ppe_rotary(tiny_qwen[0], [video], [sets]) as hook:
            cos, sin = rotary(hidden, position_ids)
        assert torch.equal(cos, stock_cos) and torch.equal(sin, stock_sin) and hook.prefill_calls == 1


def test_each_band_slice_is_rotated_by_its_member(tiny_qwen):
    rotary = tiny_qwen[0].model.language_model.rotary_emb  # mrope_section [2, 3, 3]: T, H, W bands of 8 pairs
    hidden, position_ids = stock_rotary_inputs()
    sets = torch.tensor([[[7, 11, 13], [17, 19, 23]]])  # token at index 4: two members
    with ppe_rotary(tiny_qwen[0], [torch.tensor([4])], [sets]):
        cos, sin = rotary(hidden, position_ids)
    stock_cos, _ = rotary(hidden, position_ids)
    # P = 2: T band pairs 0, 1 -> members 0, 1; H band pairs 2, 3, 4 -> 0, 0, 1; W band pairs 5, 6, 7 -> 0, 0, 1
    angles = torch.tensor([7, 17, 11, 11, 19, 13, 13, 23], dtype=torch.float32) * rotary.inv_freq
    expected_cos = torch.cat([angles.cos(), angles.cos()]) * rotary.attention_scaling
    expected_sin = torch.cat([angles.sin(), angles.sin()]) * rotary.attention_scaling
    torch.testing.assert_close(cos[0, 4], expected_cos)
    torch.testing.assert_close(sin[0, 4], expected_sin)
    other = torch.tensor([0, 1, 2, 3, 5])
    assert torch.equal(cos[0, other], stock_cos[0, other])


def test_decode_steps_are_untouched(tiny_qwen):
    rotary = tiny_qwen[0].model.language_model.rotary_emb
    hidden, position_ids = stock_rotary_inputs(length=1)
    stock = rotary(hidden, position_ids)
    with ppe_rotary(tiny_qwen[0], [torch.tensor([0])], [torch.tensor([[[5, 5, 5], [9, 9, 9]]])]) as hook:
        decoded = rotary(hidden, position_ids)
    assert torch.equal(decoded[0], stock[0]) and hook.prefill_calls == 0


def test_rotary_hook_rejects_bad_input(tiny_qwen):
    model = tiny_qwen[0]
    with pytest.raises(ValueError, match="same number of members"):
        with ppe_rotary(model, [torch.tensor([0]), torch.tensor([1])], [torch.zeros(1, 2, 3), torch.zeros(1, 4, 3)]):
            pass
    tokens = random_tokens((1, 2, 2))
    with pytest.raises(ValueError, match="position_sets"):
        video_rows(torch.zeros(1, 4, dtype=torch.long), 0, [vidcompress.identity(tokens)])
    rotary = model.model.language_model.rotary_emb
    hidden, position_ids = stock_rotary_inputs(length=3)
    with pytest.raises(ValueError, match="beyond the prefill length"):
        with ppe_rotary(model, [torch.tensor([5])], [torch.zeros(1, 2, 3, dtype=torch.long)]):
            rotary(hidden, position_ids)


def test_generate_with_single_member_hook_equals_plain_generate(tiny_qwen):
    model, processor = tiny_qwen
    adapter = Qwen2_5_VLAdapter(model, processor)
    sample = adapter.encode(adapter.preprocess(load_video(FRAMES, num_frames=8), adapter.prompt(QUESTION)), False)
    out = get_compressor("ppe", retention=0.5)(sample.tokens)
    llm = dataclasses.replace(adapter.splice([sample], [out]), position_sets=None)
    indices, sets = video_rows(llm.input_ids, adapter.video_token_id, [out])
    plain, _ = adapter.generate(llm, max_new_tokens=4, do_sample=False)
    with ppe_rotary(model, indices, [out.positions[:, None, :]]) as hook:
        hooked, _ = adapter.generate(llm, max_new_tokens=4, do_sample=False)
    assert torch.equal(plain, hooked) and hook.prefill_calls == 1
    with torch.no_grad():
        stock_logits = model(**llm.as_kwargs()).logits
        adapter.reset_state()
        with ppe_rotary(model, indices, sets):
            ppe_logits = model(**llm.as_kwargs()).logits
        adapter.reset_state()
    assert not torch.allclose(stock_logits, ppe_logits)  # several members do move the video tokens


# -- PPE through ask() ------------------------------------------------------------------------------------------------


@contextmanager
def prefill_rotary(model) -> Iterator[list[torch.Tensor]]:
    """Records the ``cos`` that the first decoder layer receives in each prefill (what the rotary hooks produced)."""
    seen: list[torch.Tensor] = []

    def record(module, args, kwargs):
        cos = kwargs["position_embeddings"][0]
        if cos.shape[1] > 1:
            seen.append(cos.clone())

    handle = model.model.language_model.layers[0].register_forward_pre_hook(record, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


def ask_ids(model, processor, method: str, **params) -> tuple[list[int], torch.Tensor]:
    vlm = vidcompress.wrap(model, method=method, retention=0.25, processor=processor, **params)
    with prefill_rotary(model) as seen:
        answer = vlm.ask(FRAMES, QUESTION, num_frames=8, max_new_tokens=3)
    return answer.token_ids, seen[0]


def manual_ids(model, processor, method: str, with_hook: bool, **params) -> tuple[list[int], torch.Tensor]:
    """Adapter steps by hand; the PPE hook (when asked for) installed here, not by ``generate``."""
    adapter = Qwen2_5_VLAdapter(model, processor)
    compressor = get_compressor(method, retention=0.25, **params)
    clip = load_video(FRAMES, num_frames=8)
    sample = adapter.encode(adapter.preprocess(clip, adapter.prompt(QUESTION)), compressor.needs_attention)
    out = compressor(sample.tokens)
    llm = dataclasses.replace(adapter.splice([sample], [out]), position_sets=None)
    hook = ppe_rotary(model, *video_rows(llm.input_ids, adapter.video_token_id, [out])) if with_hook else nullcontext()
    with prefill_rotary(model) as seen, hook:
        new, _ = adapter.generate(
            llm, compressor.stage("llm"), max_new_tokens=3, do_sample=False, pad_token_id=adapter.tokenizer.pad_token_id
        )
    ids = new[0].tolist()
    eos = adapter.tokenizer.eos_token_id
    return (ids[: ids.index(eos) + 1] if eos in ids else ids), seen[0]


@pytest.mark.parametrize(
    ("method", "params"),
    # flashvid's LLM stage defaults to layer 20 of 28; the tiny model has 2 layers. ppe+fastv: both hooks at once
    [("ppe", {}), ("flashvid+ppe", {"llm_layer": 1}), ("ppe+fastv", {"layer": 1})],
)
def test_ask_applies_the_ppe_rotary_hook(tiny_qwen, method, params):
    ids, cos = ask_ids(*tiny_qwen, method, **params)
    manual, manual_cos = manual_ids(*tiny_qwen, method, with_hook=True, **params)
    _, stock_cos = manual_ids(*tiny_qwen, method, with_hook=False, **params)
    assert ids == manual and torch.equal(cos, manual_cos)
    assert not torch.equal(cos, stock_cos)  # the hook did rotate the merged tokens by their members


@pytest.mark.parametrize(("with_ppe", "without"), [("uniform+ppe", "uniform"), ("flashvid+ppe", "flashvid")])
def test_single_member_sets_through_ask_equal_the_method_without_ppe(tiny_qwen, with_ppe, without):
    # uniform prunes: every row's only member is itself; flashvid with one slot, the representative ("nearest")
    params = {"ppe.max_members": 1, "ppe.member_choice": "nearest"} if with_ppe.startswith("flashvid") else {}
    base = {"llm_layer": 1} if without == "flashvid" else {}  # the tiny model has 2 decoder layers
    ids, cos = ask_ids(*tiny_qwen, with_ppe, **params, **base)
    plain_ids, plain_cos = ask_ids(*tiny_qwen, without, **base)
    assert ids == plain_ids and torch.equal(cos, plain_cos)


def test_ppe_chained_after_a_token_method_only_attaches_positions():
    tokens = random_tokens((4, 4, 6))
    plain = get_compressor("flashvid", retention=0.25)(tokens)
    chained = get_compressor("flashvid+ppe", retention=0.25)(tokens)
    assert torch.equal(chained.features, plain.features) and torch.equal(chained.source, plain.source)
    assert torch.equal(chained.position_sets, attach_position_sets(tokens, plain).position_sets)
    chained.validate(tokens)


@pytest.mark.parametrize("method", ["ppe", "flashvid+ppe"])
def test_ppe_on_llava_onevision_says_it_needs_mrope(method):
    vlm = vidcompress.wrap("tiny-llava-onevision", method=method, retention=0.25)
    with pytest.raises(ValueError, match="PPE needs Qwen2.5-VL's M-RoPE"):
        vlm.ask(FRAMES, QUESTION, num_frames=8, max_new_tokens=3)


# -- contract properties ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("retention", [0.05, 0.25, 0.5, 0.8])
def test_exact_count_valid_and_deterministic(name, retention):
    tokens = random_tokens((4, 4, 6))
    first = get_compressor(name, retention=retention)(tokens)
    second = get_compressor(name, retention=retention)(tokens)
    assert first.num_tokens == target_count(tokens.grid, retention)
    first.validate(tokens)
    assert torch.equal(first.features, second.features) and torch.equal(first.source, second.source)


@pytest.mark.parametrize("name", METHODS)
def test_identity_at_full_retention(name):
    tokens = random_tokens()
    out = get_compressor(name, retention=1.0)(tokens)
    assert torch.equal(out.features, tokens.flat_features) and torch.equal(out.positions, tokens.flat_positions)


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs(name, dtype):
    tokens = random_tokens(dtype=dtype)
    out = get_compressor(name, retention=0.3)(tokens)
    out.validate(tokens)
    assert out.features.dtype == dtype and bool(torch.isfinite(out.features.float()).all())


@settings(max_examples=8, deadline=None)
@given(
    name=st.sampled_from(METHODS),
    grid=st.tuples(st.integers(1, 5), st.integers(1, 4), st.integers(1, 4)),
    retention=st.floats(0.01, 1.0),
    seed=st.integers(0, 100),
)
def test_any_grid_gives_the_exact_count(name, grid, retention, seed):
    tokens = random_tokens(grid, dim=4, seed=seed)
    out = get_compressor(name, retention=retention)(tokens)
    assert out.num_tokens == target_count(grid, retention)
    out.validate(tokens)


# -- end to end -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("aot", "tiny-qwen2.5-vl"),
        ("aot", "tiny-llava-onevision"),
        ("ppe", "tiny-qwen2.5-vl"),  # on LLaVA-OneVision PPE raises (test above)
        ("flashvid+ppe", "tiny-qwen2.5-vl"),
        ("holitom+ppe", "tiny-qwen2.5-vl"),
    ],
)
def test_end_to_end(name, model):
    params = {"llm_layer": 1} if name.startswith("flashvid") else {}  # the tiny models have 2 decoder layers
    vlm = vidcompress.wrap(model, method=name, retention=0.25, **params)
    answer = vlm.ask(FRAMES, QUESTION, num_frames=8, max_new_tokens=3)
    assert answer.stats["visual_tokens_out"] == target_count(tuple(answer.stats["grid"]), 0.25)
    assert answer.stats["visual_tokens_out"] < answer.stats["visual_tokens_in"]

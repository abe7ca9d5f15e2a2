"""Methods II token stages: FlashVID, HoliTom, FastVID, DyCoke, VidCom2, PruneVid, and their shared ops."""

from __future__ import annotations

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest
import torch

import vidcompress
from vidcompress import VideoTokens, get_compressor, target_count
from vidcompress.methods.dycoke import reference_frames
from vidcompress.methods.holitom import static_windows
from vidcompress.methods.prunevid import contiguous_segments
from vidcompress.ops.dpc_knn import density_peaks, dpc_knn
from vidcompress.ops.reconcile import Grouping, reconcile
from vidcompress.ops.temporal import cuts_with_minimum, segment_bounds, segment_ids

METHODS = {
    "flashvid": {"llm_layer": 1},  # the tiny models have 2 decoder layers; the reference's layer 20 needs 21+
    "holitom": {},
    "fastvid": {},
    "dycoke": {"decode_layer": 1},  # the decode stage acts from layer L = 3 by default; the tiny models have 2
    "vidcom2": {},
    "prunevid": {},
}


def make_tokens(t: int = 4, h: int = 3, w: int = 4, d: int = 8, seed: int = 0, **extra) -> VideoTokens:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(t, h * w, d, generator=generator)
    attention = torch.rand(t, h * w, generator=generator)
    return VideoTokens(features=features, grid=(t, h, w), attention=attention, **extra)


def static_tokens(t: int, h: int, w: int, d: int = 8, seed: int = 0) -> VideoTokens:
    """Every frame identical (random per position), uniform attention."""
    generator = torch.Generator().manual_seed(seed)
    frame = torch.randn(h * w, d, generator=generator)
    return VideoTokens(
        features=frame.expand(t, -1, -1).clone(), grid=(t, h, w), attention=torch.full((t, h * w), 0.5)
    )


def members_of(out) -> list[list[int]]:
    return [torch.nonzero(out.source == row).squeeze(1).tolist() for row in range(out.num_tokens)]


def assert_rows_are_member_means(out, tokens: VideoTokens) -> None:
    flat = tokens.flat_features
    for row, members in enumerate(members_of(out)):
        torch.testing.assert_close(out.features[row], flat[members].mean(0), rtol=1e-5, atol=1e-5)


def assert_per_position_temporal_means(out, tokens: VideoTokens) -> None:
    """Each row holds the tokens of a single position over all frames, and equals their mean."""
    t, h, w = tokens.grid
    for members in members_of(out):
        positions = {m % (h * w) for m in members}
        if len(members) > 1:
            assert len(positions) == 1 and len(members) == t
    assert_rows_are_member_means(out, tokens)


# -- shared ops ---------------------------------------------------------------------------------------------------
def test_dpc_knn_finds_the_centres_of_two_separated_blobs():
    generator = torch.Generator().manual_seed(0)
    left = torch.randn(6, 4, generator=generator) * 0.1 + torch.tensor([5.0, 0, 0, 0])
    right = torch.randn(5, 4, generator=generator) * 0.1 - torch.tensor([5.0, 0, 0, 0])
    x = torch.cat([left, right])[None]
    centre, assignment = dpc_knn(x, 2, k=3)
    centres = torch.nonzero(centre[0]).squeeze(1).tolist()
    assert len(centres) == 2 and centres[0] < 6 <= centres[1]
    assert assignment[0].tolist() == [centres[0]] * 6 + [centres[1]] * 5


def test_density_peaks_by_hand_and_index_tie_break():
    # points 0, 1, 3 on a line, k = 2 (self included): rho = e^-0.5, e^-0.5, e^-2; the tie goes to index 0, which
    # is the densest (delta = largest distance 3); delta_1 = 1, delta_2 = 2.
    x = torch.tensor([[[0.0], [1.0], [3.0]]])
    peaks = density_peaks(x, k=2)
    expected_rho = torch.tensor([math.exp(-0.5), math.exp(-0.5), math.exp(-2.0)])
    torch.testing.assert_close(peaks.density[0], expected_rho)
    torch.testing.assert_close(peaks.score[0], expected_rho * torch.tensor([3.0, 1.0, 2.0]))


def test_dpc_knn_rows_have_their_own_valid_tokens_and_cluster_counts():
    x = torch.tensor([[[0.0], [0.1], [9.0], [9.1]], [[0.0], [5.0], [10.0], [7.0]]])
    valid = torch.tensor([[True, True, True, True], [True, True, True, False]])
    centre, assignment = dpc_knn(x, torch.tensor([2, 3]), 2, valid)
    assert centre.sum(1).tolist() == [2, 3]
    assert assignment[1].tolist() == [0, 1, 2, -1]
    assert assignment[0, 0] == assignment[0, 1] and assignment[0, 2] == assignment[0, 3]


def test_cuts_with_minimum_adds_the_least_similar_transitions():
    similarity = torch.tensor([0.95, 0.5, 0.97, 0.92, 0.99])
    assert cuts_with_minimum(similarity, 0.9, 1).tolist() == [False, True, False, False, False]
    assert cuts_with_minimum(similarity, 0.9, 3).tolist() == [False, True, False, True, False]
    ids = segment_ids(cuts_with_minimum(similarity, 0.9, 3))
    assert ids.tolist() == [0, 0, 1, 1, 2, 2]
    assert segment_bounds(ids) == [(0, 2), (2, 4), (4, 6)]


def test_reconcile_folds_the_lowest_priority_group_into_its_most_similar_group_of_the_frame():
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [1.0, 0.0]])  # frame size 2: frames {0,1}, {2,3}
    grouping = Grouping(group=torch.tensor([0, 1, 2, 3]), representative=torch.tensor([0, 1, 2, 3]),
                        weights=torch.ones(4))
    out = reconcile(grouping, features, 2, 3, torch.tensor([3.0, 2.0, 0.0, 1.0]), torch.empty(0, dtype=torch.long))
    assert out.representative.tolist() == [0, 1, 3] and out.group.tolist() == [0, 1, 2, 2]
    with pytest.raises(RuntimeError, match="1 more"):  # missing rows need candidates
        reconcile(grouping, features, 2, 5, torch.zeros(4), torch.tensor([]).long())
    dropped = Grouping(group=torch.tensor([0, -1, -1, 1]), representative=torch.tensor([0, 3]), weights=torch.ones(4))
    out = reconcile(dropped, features, 2, 3, torch.zeros(2), torch.tensor([2, 1]))
    assert out.representative.tolist() == [0, 3, 2] and out.group.tolist() == [0, -1, 2, 1]


# -- static videos collapse to per-position temporal means ---------------------------------------------------------
def test_flashvid_tstm_static_video_gives_per_position_temporal_means():
    # N = 9, T = 4: B = ceil(9 * 0.3) = 3, A = ceil(3 * 0.3) = 1 ADTS token, S = 2; the 8 other positions chain over
    # the 4 frames; 8 roots = S * T, so no spatial merge: 4 ADTS singletons + 8 temporal means.
    tokens = static_tokens(4, 3, 3)
    comp = get_compressor("flashvid", retention=0.3, alpha=0.3, min_segments=1, tstm_mean="subtree", exact=False)
    out = comp(tokens)
    out.validate(tokens)
    assert out.num_tokens == 12
    assert sorted(len(m) for m in members_of(out)) == [1] * 4 + [4] * 8
    assert_per_position_temporal_means(out, tokens)


def test_flashvid_reference_tree_mean_divides_by_direct_children():
    # chain over 3 identical frames a <- b <- c: the reference gives (a + b + c) / 2 = 1.5 x
    tokens = static_tokens(3, 1, 7)
    comp = get_compressor("flashvid", retention=0.4, alpha=0.3, min_segments=1, exact=False)
    out = comp(tokens)
    flat = tokens.flat_features
    chains = [(row, m) for row, m in enumerate(members_of(out)) if len(m) == 3]
    assert len(chains) == 6
    for row, members in chains:
        torch.testing.assert_close(out.features[row], 1.5 * flat[members[0]], rtol=1e-5, atol=1e-5)


def test_holitom_static_video_gives_per_position_temporal_means():
    tokens = static_tokens(4, 3, 3)
    out = get_compressor("holitom", retention=0.25)(tokens)  # r' = min(0.25 * 4, 1) = 1: one token per position
    out.validate(tokens)
    assert out.num_tokens == 9 == target_count(tokens.grid, 0.25)
    assert_per_position_temporal_means(out, tokens)
    assert out.positions[:, 0].tolist() == [0] * 9  # the window's first frame


def test_prunevid_static_video_gives_per_position_temporal_means():
    tokens = static_tokens(4, 3, 3)
    out = get_compressor("prunevid", retention=0.25)(tokens)
    out.validate(tokens)
    assert out.num_tokens == 9
    assert_per_position_temporal_means(out, tokens)


def test_merged_rows_are_the_mean_of_their_members():
    tokens = make_tokens(t=6, h=3, w=4)
    plain = [("prunevid", {}), ("flashvid", {"tstm_mean": "subtree"}), ("holitom", {"static_merge": "mean"})]
    for name, params in plain:
        out = get_compressor(name, retention=0.3, **params)(tokens)
        assert_rows_are_member_means(out, tokens)


def test_holitom_beta_weights_the_centre():
    # two identical frames: one window, 4 static positions, R = 4 removed, r' = 0.25 / (4 / 8) = 0.5
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(2, 4, 6, generator=generator)
    features[1] = features[0]
    tokens = VideoTokens(features=features, grid=(2, 2, 2), attention=torch.rand(2, 4, generator=generator))
    out = get_compressor("holitom", retention=0.25, exact=False)(tokens)  # r' = 0.5: C = round(4 * 0.5) = 2
    assert out.num_tokens == 2
    flat = tokens.flat_features
    for row, members in enumerate(members_of(out)):
        centre = int(out.representatives[row])
        others = [m for m in members if m % 4 != centre % 4]
        expected = flat[centre] if not others else 0.6 * flat[centre] + 0.4 * flat[others].mean(0)
        torch.testing.assert_close(out.features[row], expected, rtol=1e-5, atol=1e-5)


# -- a token seen in one frame only survives when salient -----------------------------------------------------------
def one_frame_token(attention_value: float) -> VideoTokens:
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(4, 6, 8, generator=generator)
    features[2, 4] = torch.randn(8, generator=generator) * 5.0  # the token of frame 2, position 4
    attention = torch.full((4, 6), 0.5)
    attention[2, 4] = attention_value
    return VideoTokens(features=features, grid=(4, 2, 3), attention=attention)


@pytest.mark.parametrize(
    "name, params",
    [("fastvid", {"min_segments": 4, "context_ratio": 0.0}), ("holitom", {"tau": 0.99})],
)
def test_one_frame_token_survives_only_when_salient(name, params):
    index = 2 * 6 + 4
    salient = one_frame_token(1.0)
    out = get_compressor(name, retention=1 / 3, **params)(salient)
    row = int(out.source[index])
    assert row >= 0 and members_of(out)[row] == [index]
    torch.testing.assert_close(out.features[row], salient.flat_features[index])
    dull = get_compressor(name, retention=1 / 3, **params)(one_frame_token(0.0))
    assert int(dull.source[index]) == -1


def test_flashvid_adts_keeps_a_salient_one_frame_token_alone():
    index = 2 * 6 + 4
    out = get_compressor("flashvid", retention=1 / 3, min_segments=1)(one_frame_token(1.0))
    row = int(out.source[index])
    assert members_of(out)[row] == [index] and int(out.representatives[row]) == index


# -- VidCom2 and DyCoke ---------------------------------------------------------------------------------------------
def test_vidcom2_gives_a_unique_frame_a_larger_budget():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(4, 9, 16, generator=generator)
    features[1] = features[0]
    features[2] = features[0]
    tokens = VideoTokens(features=features, grid=(4, 3, 3))
    comp = get_compressor("vidcom2", retention=0.5)
    budgets, _ = comp.frame_budgets(tokens)
    assert budgets[3] > budgets[0] == budgets[1] == budgets[2]
    kept = (comp(tokens).source.view(4, 9) >= 0).sum(1)
    assert kept[3] > kept[0]


def test_vidcom2_identical_frames_split_the_budget_evenly():
    tokens = static_tokens(4, 2, 5)
    out = get_compressor("vidcom2", retention=0.35, exact=False)(tokens)
    assert out.num_tokens == 4 * round(0.35 * 10)  # every frame: round(r * N) = 4 (native), target would be 14
    assert (out.source.view(4, 10) >= 0).sum(1).tolist() == [4, 4, 4, 4]


def test_dycoke_schedule():
    assert reference_frames(8) == [-1, 0, 0, 2, -1, 4, -1, 6]
    assert sum(ref < 0 for ref in reference_frames(32)) == 9  # frames 4j and frame 30 stay whole


def test_dycoke_drops_the_tokens_that_repeat_the_anchor():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 8, 6, generator=generator)
    features[1] = features[0]
    features[1, 2] = torch.randn(6, generator=generator)
    features[1, 5] = torch.randn(6, generator=generator)
    tokens = VideoTokens(features=features, grid=(2, 2, 4))
    out = get_compressor("dycoke", retention=0.5, prune_ratio=0.75, exact=False)(tokens)  # int(0.25 * 8) = 2
    kept = out.source.view(2, 8) >= 0
    assert kept[0].all() and torch.nonzero(kept[1]).squeeze(1).tolist() == [2, 5]
    exact = get_compressor("dycoke", retention=0.625)(tokens)  # 10 = 8 + the 2 changed tokens
    assert torch.equal(exact.source >= 0, out.source >= 0)


def test_dycoke_below_its_floor_drops_the_least_distinctive_anchor_tokens():
    # 8 frames of 2x2: anchor frames 0, 4, 6 stay whole (floor 12 tokens); retention 0.25 asks for 8
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(8, 4, 6, generator=generator)
    for anchor in (0, 4, 6):  # token 3 of each anchor frame is far from the rest: the most distinctive
        features[anchor, :3] = torch.tensor([1.0, 0, 0, 0, 0, 0]) + 0.01 * torch.randn(3, 6, generator=generator)
        features[anchor, 3] = torch.tensor([0.0, 0, 0, 0, 0, 1.0])
    tokens = VideoTokens(features=features, grid=(8, 2, 2))
    out = get_compressor("dycoke", retention=0.25)(tokens)
    kept = (out.source.view(8, 4) >= 0).sum(1).tolist()
    # pruned frames keep nothing; the 8 tokens split 3 / 2 / 3 over anchors 0 / 4 / 6
    assert [kept[a] for a in (0, 4, 6)] == [3, 2, 3] and sum(kept) == 8
    assert all(kept[f] == 0 for f in (1, 2, 3, 5, 7))
    for anchor in (0, 4, 6):
        assert bool(out.source.view(8, 4)[anchor, 3] >= 0)  # the distinctive token survives in every anchor
    spread = get_compressor("dycoke", retention=0.25, prune_anchor_frames=True)(tokens)
    assert (spread.source.view(8, 4) >= 0).sum(1).tolist() == [1] * 8
    native = get_compressor("dycoke", retention=0.25, exact=False)(tokens)  # 3 whole + 5 * int(0.3 * 4) = 17
    assert native.num_tokens == 3 * 4 + 5 * 1


def test_dycoke_single_token_video():
    tokens = VideoTokens(features=torch.randn(1, 1, 4), grid=(1, 1, 1))
    for retention in (0.1, 0.5, 1.0):
        out = get_compressor("dycoke", retention=retention)(tokens)
        assert out.num_tokens == 1
        out.validate(tokens)


# -- method-specific helpers ----------------------------------------------------------------------------------------
def test_holitom_dynamic_programme():
    # frames 0-1-2 static at both positions, 2 -> 3 changes: window [0, 2] removes 2 * 2 = 4 tokens
    similarity = torch.tensor([[0.9, 0.95], [0.85, 0.9], [0.1, 0.2]])
    for max_window, bounds, removed in ((1024, [(0, 3), (3, 4)], 4), (2, [(0, 2), (2, 3), (3, 4)], 2)):
        window_of, gain = static_windows(similarity, 0.8, max_window)
        assert segment_bounds(window_of) == bounds and int(gain) == removed


def test_prunevid_contiguous_segments():
    for labels, bounds in (([0, 0, 1, 0, 1, 1], [(0, 4), (4, 6)]), ([2, 2, 2], [(0, 3)]), ([0, 1, 0, 1], [(0, 4)])):
        assert segment_bounds(contiguous_segments(torch.tensor(labels))) == bounds


def test_flashvid_retention_mapping():
    comp = get_compressor("flashvid", retention_ratio=0.1)
    assert comp.retention == pytest.approx(0.125) and comp.retention_ratio == 0.1
    assert get_compressor("flashvid", retention=0.25).retention_ratio == pytest.approx(0.2)
    with pytest.raises(ValueError, match="disagree"):
        get_compressor("flashvid", retention=0.5, retention_ratio=0.1)
    with pytest.raises(ValueError, match="exceeds 1"):
        get_compressor("flashvid", retention_ratio=0.9)


@pytest.mark.parametrize(
    "name, params",
    [
        ("flashvid", {"alpha": 1.5}),
        ("flashvid", {"tstm_mean": "tree"}),
        ("holitom", {"beta": -0.1}),
        ("fastvid", {"dtm_assignment": "shared"}),
        ("dycoke", {"prune_ratio": 1.0}),
        ("vidcom2", {"temperature": 0.0}),
        ("prunevid", {"cluster_ratio": 0.0}),
    ],
)
def test_bad_parameters_raise(name, params):
    with pytest.raises(ValueError):
        get_compressor(name, retention=0.5, **params)


# -- contract properties --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(METHODS))
def test_contract_exact_count_validate_determinism_identity(name):
    tokens = make_tokens(t=6, h=3, w=4)
    for retention in (0.1, 0.3, 0.55):
        comp = get_compressor(name, retention=retention, **METHODS[name])
        out = comp(tokens)
        assert out.num_tokens == target_count(tokens.grid, retention)
        out.validate(tokens)
        again = comp(tokens)
        assert torch.equal(out.features, again.features) and torch.equal(out.source, again.source)
    full = get_compressor(name, retention=1.0, **METHODS[name])(tokens)
    assert torch.equal(full.features, tokens.flat_features)
    assert torch.equal(full.positions, tokens.flat_positions)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_contract_half_precision(name):
    tokens = make_tokens(t=4, h=2, w=3)
    half = VideoTokens(features=tokens.features.half(), grid=tokens.grid, attention=tokens.attention.half())
    out = get_compressor(name, retention=0.4, **METHODS[name])(half)
    assert out.features.dtype == torch.float16 and out.num_tokens == target_count(half.grid, 0.4)
    out.validate(half)


@pytest.mark.parametrize(
    "name, params, tokens, native",
    [
        # 4 ADTS singletons + 8 temporal chains (see the static FlashVID test); target 11
        ("flashvid", {"retention": 0.3, "alpha": 0.3, "min_segments": 1}, static_tokens(4, 3, 3), 12),
        # static video, r' = 1: one token per position; target 18
        ("holitom", {"retention": 0.5}, static_tokens(4, 3, 3), 9),
        # one-frame segments: T * int(10 * 0.35) = 12; target 14
        ("fastvid", {"retention": 0.35, "min_segments": 4}, make_tokens(t=4, h=2, w=5), 12),
        # frame 0 whole, frame 1 keeps int(0.3 * 8) = 2; target 8
        ("dycoke", {"retention": 0.5}, make_tokens(t=2, h=2, w=4), 10),
        # identical frames: round(0.35 * 10) = 4 per frame; target 14
        ("vidcom2", {"retention": 0.35}, static_tokens(4, 2, 5), 16),
        # static video, 16 > 14 static positions: int(16 * 0.5) = 8 clusters; target 16
        ("prunevid", {"retention": 0.25, "cluster_ratio": 0.5}, static_tokens(4, 4, 4), 8),
    ],
)
def test_exact_false_returns_the_native_count(name, params, tokens, native):
    out = get_compressor(name, exact=False, **params)(tokens)
    out.validate(tokens)
    assert out.num_tokens == native != target_count(tokens.grid, params["retention"])
    assert get_compressor(name, **params)(tokens).num_tokens == target_count(tokens.grid, params["retention"])


# -- end to end -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_models():
    from vidcompress.models.tiny import tiny_llava_onevision, tiny_qwen2_5_vl

    return {"tiny-qwen2.5-vl": tiny_qwen2_5_vl(), "tiny-llava-onevision": tiny_llava_onevision()}


@pytest.mark.parametrize("model_name", ["tiny-qwen2.5-vl", "tiny-llava-onevision"])
@pytest.mark.parametrize("name", sorted(METHODS))
def test_end_to_end(tiny_models, model_name, name):
    model, processor = tiny_models[model_name]
    frames = np.random.RandomState(0).randint(0, 255, (8, 112, 112, 3), dtype=np.uint8)
    vlm = vidcompress.wrap(model, method=name, retention=0.25, processor=processor, **METHODS[name])
    answer = vlm.ask(frames, "what happens in the video ?", num_frames=8, max_new_tokens=3)
    assert answer.stats["visual_tokens_out"] == target_count(tuple(answer.stats["grid"]), 0.25)
    assert answer.stats["method"] == name


# -- property tests -------------------------------------------------------------------------------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=12, deadline=None)
@given(
    name=st.sampled_from(sorted(METHODS)),
    t=st.integers(1, 5),
    h=st.integers(1, 3),
    w=st.integers(1, 4),
    retention=st.floats(0.05, 0.95),
    seed=st.integers(0, 1000),
    repeat=st.booleans(),
)
def test_property_exact_count_and_contract(name, t, h, w, retention, seed, repeat):
    tokens = make_tokens(t=t, h=h, w=w, d=5, seed=seed)
    if repeat:  # repeated frames exercise the merging paths
        tokens = VideoTokens(features=tokens.features[:1].expand(t, -1, -1).clone(), grid=tokens.grid,
                             attention=tokens.attention)
    out = get_compressor(name, retention=retention, **METHODS[name])(tokens)
    out.validate(tokens)
    assert out.num_tokens == target_count(tokens.grid, retention)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(2, 12), clusters=st.integers(1, 12), k=st.integers(1, 8), seed=st.integers(0, 1000))
def test_property_dpc_knn_joins_the_nearest_centre(n, clusters, k, seed):
    clusters = min(clusters, n)
    x = torch.randn(1, n, 3, generator=torch.Generator().manual_seed(seed))
    centre, assignment = dpc_knn(x, clusters, k)
    assert int(centre.sum()) == clusters
    centres = torch.nonzero(centre[0]).squeeze(1)
    assert torch.equal(assignment[0, centres], centres)
    distances = torch.cdist(x[0], x[0])
    chosen = distances[torch.arange(n), assignment[0]]
    torch.testing.assert_close(chosen, distances[:, centres].min(1).values)


def test_fastvid_context_rows_follow_the_dtm_rule():
    # one segment of 8 frames: anchor frames 3 and 7 (every 4th from the end) hold the context tokens
    tokens = make_tokens(t=8, h=2, w=5, seed=4)
    params = {"retention": 0.5, "min_segments": 1, "segment_threshold": -1.0, "exact": False}
    exclusive = get_compressor("fastvid", dtm_assignment="exclusive", **params)(tokens)
    reference = get_compressor("fastvid", **params)(tokens)
    assert torch.equal(exclusive.source, reference.source)
    flat = tokens.flat_features
    contexts = 0
    for row, members in enumerate(members_of(exclusive)):
        rep = int(exclusive.representatives[row])
        if len(members) > 1:
            contexts += 1
            assert rep // 10 in (3, 7)
            w = max(1 / (len(members) + 1), 0.6)
            expected = w * flat[rep] + (1 - w) * flat[members].mean(0)
            torch.testing.assert_close(exclusive.features[row], expected, rtol=1e-5, atol=1e-5)
    assert contexts > 0
    # the reference assigns every token once per anchor frame, so its context rows differ
    assert not torch.allclose(exclusive.features, reference.features)

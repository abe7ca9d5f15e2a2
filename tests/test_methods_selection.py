"""Methods I (token stage): mmr, divprune, flashvlm, visionzip, keyframe, and the ops they share.

Defining behaviours are pinned on small hand-built inputs whose answers are worked out by hand in the comments;
contract properties (exact count, validation, determinism, identity at 1.0, dtypes) run on every method.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import vidcompress
from vidcompress import VideoTokens, get_compressor, target_count
from vidcompress.ops.budgets import descending_rank, picks_to_flat, proportional_budgets
from vidcompress.ops.greedy import farthest_point_select, mmr_select
from vidcompress.ops.similarity import cosine_similarity, minmax, nearest_neighbor_distance

METHODS = ["mmr", "divprune", "flashvlm", "visionzip", "keyframe"]


def angles(*degrees: float) -> torch.Tensor:
    """Unit vectors in the plane at the given angles, ``[len(degrees), 2]``."""
    rad = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([rad.cos(), rad.sin()], dim=-1).to(torch.float32)


def random_tokens(grid=(4, 3, 4), dim=8, seed=0, dtype=torch.float32) -> VideoTokens:
    g = torch.Generator().manual_seed(seed)
    t, h, w = grid
    return VideoTokens(
        features=torch.randn(t, h * w, dim, generator=g).to(dtype),
        grid=grid,
        attention=torch.rand(t, h * w, generator=g).to(dtype),
        query=torch.randn(3, dim, generator=g).to(dtype),
    )


# --------------------------------------------------------------------------------------------------------------
# ops
# --------------------------------------------------------------------------------------------------------------
MMR_FEATURES = torch.tensor([[1.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]])
MMR_ATTENTION = torch.tensor([1.0, 0.9, 0.5, 0.2, 0.0])


def test_mmr_order_worked_by_hand():
    # Imp = minmax(attention) ≈ [1, .9, .5, .2, 0]; λ = 0.5; token 1 duplicates token 0, token 4 is at 45° to 0 and 2.
    # step 0: argmax Imp -> 0.                 maxsim = [1, 1, 0, 0, .707]
    # step 1: .5·Imp − .5·maxsim = [_, −.05, .25, .10, −.354] -> 2.   maxsim unchanged for 1, 3, 4
    # step 2: [_, −.05, _, .10, −.354] -> 3
    # step 3: [_, −.05, _, _, −.354] -> 1, then 4.
    picks = mmr_select(MMR_FEATURES[None], minmax(MMR_ATTENTION[None]), 5, mmr_lambda=0.5)
    assert picks.tolist() == [[0, 2, 3, 1, 4]]


def test_mmr_lambda_one_is_importance_topk():
    picks = mmr_select(MMR_FEATURES[None], minmax(MMR_ATTENTION[None]), 3, mmr_lambda=1.0)
    assert picks.tolist() == [[0, 1, 2]]


def test_mmr_method_skips_the_duplicate():
    tokens = VideoTokens(features=MMR_FEATURES[None], grid=(1, 1, 5), attention=MMR_ATTENTION[None])
    out = get_compressor("mmr", retention=0.6)(tokens)  # 3 tokens: {0, 2, 3} by the worked example
    assert out.representatives.tolist() == [0, 2, 3]
    assert out.source.tolist() == [0, -1, 1, 2, -1]


def test_max_min_picks_the_farthest_token():
    # seed 0 at 0°: distances 1 − cos to 10°, 90°, 180° are .015, 1, 2 -> 180°; then min over {0°, 180°}:
    # 10° -> .015, 90° -> 1 -> 90°; then 10°.
    picks = farthest_point_select(angles(0, 10, 90, 180)[None], 4, seed=torch.tensor([0]))
    assert picks.tolist() == [[0, 3, 2, 1]]


def test_max_sum_differs_from_max_min():
    # seed 0°; farthest is 150° (1.866). Then 10° has distances (.015, 1.766) and 90° has (1, .5):
    # max-sum prefers 10° (1.781 > 1.5), max-min prefers 90° (.5 > .015).
    features = angles(0, 10, 90, 150)[None]
    seed = torch.tensor([0])
    assert farthest_point_select(features, 3, seed=seed, aggregate="sum").tolist() == [[0, 3, 1]]
    assert farthest_point_select(features, 3, seed=seed, aggregate="min").tolist() == [[0, 3, 2]]


def test_farthest_neighbor_seed_and_candidates():
    # pairs at 0°/10° and 90°/95°, a loner at 225°: nearest-neighbour distance is largest for the loner -> seed 4.
    # from 225°: 10° is 145° away (farthest) -> 1; then 95° (min 1 − cos 85° = .913 beats 90°'s .826) -> 3.
    features = angles(0, 10, 90, 95, 225)[None]
    assert farthest_point_select(features, 3).tolist() == [[4, 1, 3]]
    candidates = torch.tensor([[True, True, True, True, False]])
    # without the loner, the isolation of 0°/10° is 1 − cos 10° > 1 − cos 5° of 90°/95° -> seed 0; from 0° the
    # farthest is 95°; then 10° (min .015) beats 90° (min 1 − cos 5° = .004); then 90°, then nothing is left.
    assert farthest_point_select(features, 5, candidates=candidates).tolist() == [[0, 3, 1, 2, -1]]


def test_scaled_selection_and_exhaustion():
    scale = torch.tensor([[1.0, 1.0, 0.0, 0.5]])
    # seed max_scale -> 0 (first of the tied 1.0); distances from 0°: [_, .015, 1, 2] scaled -> [_, .015, 0, 1] -> 3
    picks = farthest_point_select(angles(0, 10, 90, 180)[None], 5, scale=scale, seed="max_scale")
    assert picks[0, :2].tolist() == [0, 3]
    assert picks[0, 4].item() == -1  # only four candidates


def test_nearest_neighbor_distance_excludes_self():
    dist = nearest_neighbor_distance(angles(0, 90, 180)[None])
    assert torch.allclose(dist, torch.tensor([[1.0, 1.0, 1.0]]), atol=1e-6)
    lone = nearest_neighbor_distance(angles(0, 90)[None], torch.tensor([[True, False]]))
    assert lone[0, 0].item() == math.inf


def test_budget_helpers_by_hand():
    # base 1 each, 7 left in ratio 1:0:3 -> 1.75, 0, 5.25; row 2 capped at 5 (+4), the other 3 go to row 0.
    assert proportional_budgets(torch.tensor([1.0, 0.0, 3.0]), 10, floor=1, cap=5).tolist() == [4, 1, 5]
    # 5 over weights 1:1:1 -> 1.67 each -> largest remainder, ties to the lower index
    assert proportional_budgets(torch.tensor([1.0, 1.0, 1.0]), 5, floor=0, cap=5).tolist() == [2, 2, 1]
    with pytest.raises(ValueError):
        proportional_budgets(torch.tensor([1.0, 1.0]), 5, floor=3, cap=5)
    assert descending_rank(torch.tensor([[0.5, 0.9, 0.5]])).tolist() == [[1, 0, 2]]
    picks = torch.tensor([[2, 0, 1], [1, 2, 0]])
    assert picks_to_flat(picks, [1, 2], row_size=3).tolist() == [2, 4, 5]


def test_cosine_similarity_is_float32_and_batched():
    x = torch.randn(2, 5, 3, dtype=torch.bfloat16)
    sim = cosine_similarity(x)
    assert sim.dtype == torch.float32 and sim.shape == (2, 5, 5)
    assert torch.allclose(sim.diagonal(dim1=1, dim2=2), torch.ones(2, 5), atol=1e-5)


# --------------------------------------------------------------------------------------------------------------
# method-defining behaviours
# --------------------------------------------------------------------------------------------------------------
def test_divprune_global_matches_worked_example():
    tokens = VideoTokens(features=angles(0, 10, 90, 95, 225)[None], grid=(1, 1, 5))
    out = get_compressor("divprune", retention=0.6)(tokens)  # 3 tokens: {4, 1, 3}
    assert out.representatives.tolist() == [1, 3, 4]


def test_divprune_per_frame_covers_every_frame():
    # frame 0 holds all the diversity, frame 1 four identical tokens: the global pool skips frame 1 entirely,
    # per-frame pools give each frame half of the 4-token budget.
    frame0 = angles(0, 90, 180, 270)
    frame1 = angles(45, 45, 45, 45)
    tokens = VideoTokens(features=torch.stack([frame0, frame1]), grid=(2, 2, 2))
    per_frame = get_compressor("divprune", retention=0.5, pool="per_frame")(tokens)
    assert (per_frame.representatives // 4).tolist() == [0, 0, 1, 1]
    global_pool = get_compressor("divprune", retention=0.5)(tokens)
    assert (global_pool.representatives // 4).tolist() == [0, 0, 0, 0]


def query_tokens(attention: torch.Tensor) -> VideoTokens:
    # cos to the query (along x): token 5 -> .99, token 2 -> .95, token 6 -> .90; the others ≤ .5
    cosines = torch.tensor([0.1, -0.5, 0.95, 0.3, 0.5, 0.99, 0.9, 0.0])
    features = torch.stack([cosines, (1 - cosines**2).sqrt(), torch.zeros(8), torch.zeros(8)], dim=-1)
    return VideoTokens(
        features=features[None], grid=(1, 2, 4), attention=attention[None], query=torch.tensor([[2.0, 0, 0, 0]])
    )


def test_flashvlm_keeps_query_tokens_when_saliency_is_flat():
    tokens = query_tokens(torch.full((8,), 0.3))
    only_important = get_compressor("flashvlm", retention=0.25, important_ratio=1.0)(tokens)
    assert only_important.representatives.tolist() == [2, 5]
    # default α = 0.5 at 4 tokens: the 2 most query-similar are kept, the other 2 come from the diversity partition
    default = get_compressor("flashvlm", retention=0.5)(tokens)
    assert {2, 5} <= set(default.representatives.tolist())


def test_flashvlm_saliency_counts_when_text_is_neutral():
    # a query orthogonal to every token: relevance is flat, so the fused score follows the attention
    tokens = query_tokens(torch.tensor([0.0, 0.1, 0.2, 0.9, 0.3, 0.1, 0.2, 0.8]))
    tokens = VideoTokens(
        features=tokens.features, grid=tokens.grid, attention=tokens.attention, query=torch.tensor([[0.0, 0, 1, 0]])
    )
    out = get_compressor("flashvlm", retention=0.25, important_ratio=1.0)(tokens)
    assert out.representatives.tolist() == [3, 7]


def visionzip_tokens() -> VideoTokens:
    # attention: tokens 6 and 1 dominate. Remaining in raster order: 0 2 3 4 5 7 (R = 6), 2 contextual -> stride 3:
    # targets are slots 0 and 3 = tokens 0 and 4. Tokens 2, 3 point like token 0 (x), tokens 5, 7 like token 4 (z).
    features = torch.tensor(
        [
            [1.0, 0, 0, 0],  # 0 target
            [0, 1, 0, 0],  # 1 dominant
            [2, 0.1, 0, 0],  # 2 -> 0
            [1, 0, 0.2, 0],  # 3 -> 0
            [0, 0, 1, 0],  # 4 target
            [0, 0, 3, 0.5],  # 5 -> 4
            [0, 0, 0, 1],  # 6 dominant
            [0.1, 0, 1, 0],  # 7 -> 4
        ]
    )
    attention = torch.tensor([0.1, 0.8, 0.2, 0.1, 0.3, 0.2, 0.9, 0.0])
    return VideoTokens(features=features[None], grid=(1, 2, 4), attention=attention[None])


def test_visionzip_dominant_and_mean_contextual():
    tokens = visionzip_tokens()
    f = tokens.features[0]
    out = get_compressor("visionzip", retention=0.5, contextual_ratio=0.5, contextual_merge="mean")(tokens)
    assert out.representatives.tolist() == [0, 1, 4, 6]  # dominant {1, 6} + targets {0, 4}
    assert out.source.tolist() == [0, 1, 0, 0, 2, 2, 3, 2]
    assert torch.allclose(out.features[0], (f[0] + f[2] + f[3]) / 3)
    assert torch.allclose(out.features[2], (f[4] + f[5] + f[7]) / 3)
    assert torch.equal(out.features[1], f[1]) and torch.equal(out.features[3], f[6])


def test_visionzip_reference_merge_is_target_plus_mean():
    tokens = visionzip_tokens()
    f = tokens.features[0]
    out = get_compressor("visionzip", retention=0.5, contextual_ratio=0.5)(tokens)
    assert torch.allclose(out.features[0], f[0] + (f[2] + f[3]) / 2)
    assert torch.allclose(out.features[2], f[4] + (f[5] + f[7]) / 2)
    assert torch.equal(out.features[1], f[1])


def test_visionzip_default_split_keeps_top_attention():
    # 64 tokens per frame at retention 1/4 -> 16 = 13 dominant + round(16·10/64 = 2.5) = 3 contextual
    tokens = random_tokens(grid=(2, 8, 8))
    out = get_compressor("visionzip", retention=0.25)(tokens)
    for frame in range(2):
        top = set((torch.argsort(tokens.attention[frame], descending=True)[:13] + 64 * frame).tolist())
        reps = set(out.representatives.tolist())
        assert top <= reps
        assert sum(1 for r in reps if r // 64 == frame) == 16


def keyframe_tokens() -> VideoTokens:
    # frames A, A, B, B, A and B on disjoint dimensions: novelty [1, 0, 1, 0]; the 75th percentile is 1 -> keyframes
    # 0 and 2.
    g = torch.Generator().manual_seed(1)
    a = torch.cat([torch.rand(8, 3, generator=g), torch.zeros(8, 3)], dim=1)
    b = torch.cat([torch.zeros(8, 3), torch.rand(8, 3, generator=g)], dim=1)
    return VideoTokens(features=torch.stack([a, a, b, b]), grid=(4, 2, 4))


def test_keyframe_gives_changed_frames_more_tokens():
    # count 16; floor ⌊0.25·16/4⌋ = 1 each; the other 12 split by weights [2·1, 0, 2·1, 0] -> budgets [7, 1, 7, 1]
    out = get_compressor("keyframe", retention=0.5)(keyframe_tokens())
    per_frame = torch.bincount(out.representatives // 8, minlength=4).tolist()
    assert per_frame == [7, 1, 7, 1]


def test_keyframe_keeps_changed_tokens_within_a_frame():
    # frame 1 repeats frame 0 except tokens 3 and 6: with 2 tokens for frame 1, novelty keeps exactly those two
    base = torch.eye(8)
    changed = base.clone()
    changed[3] = torch.tensor([0.0, 1, 0, 0, 0, 0, 0, 0])
    changed[6] = torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 0])
    tokens = VideoTokens(features=torch.stack([base, changed]), grid=(2, 2, 4))
    comp = get_compressor("keyframe", retention=0.25, min_share=1.0)  # min_share 1: even budgets [2, 2]
    out = comp(tokens)
    assert [r - 8 for r in out.representatives.tolist() if r >= 8] == [3, 6]


# --------------------------------------------------------------------------------------------------------------
# contract properties
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("retention", [0.02, 0.1, 0.25, 0.5, 0.97])
def test_contract_exact_count_and_valid(method, retention):
    tokens = random_tokens()
    out = get_compressor(method, retention=retention)(tokens)
    assert out.num_tokens == target_count(tokens.grid, retention)
    out.validate(tokens)


@pytest.mark.parametrize("method", METHODS)
def test_contract_deterministic_and_identity(method):
    tokens = random_tokens(seed=3)
    first = get_compressor(method, retention=0.3)(tokens)
    second = get_compressor(method, retention=0.3)(random_tokens(seed=3))
    assert torch.equal(first.features, second.features) and torch.equal(first.source, second.source)
    full = get_compressor(method, retention=1.0)(tokens)
    assert torch.equal(full.features, tokens.flat_features)
    assert torch.equal(full.positions, tokens.flat_positions)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_contract_low_precision_inputs(method, dtype):
    tokens = random_tokens(dtype=dtype)
    out = get_compressor(method, retention=0.25)(tokens)
    out.validate(tokens)
    assert out.features.dtype == dtype and out.num_tokens == target_count(tokens.grid, 0.25)


@pytest.mark.parametrize(
    "method, option",
    [
        ("mmr", {"pool": "per_frame"}),
        ("mmr", {"importance": "norm"}),
        ("mmr", {"importance": "query"}),
        ("divprune", {"pool": "per_frame"}),
        ("flashvlm", {"norm_gating": True}),
        ("keyframe", {"token_score": "attention"}),
        ("keyframe", {"token_score": "novelty"}),
    ],
)
def test_options_keep_the_contract(method, option):
    tokens = random_tokens(seed=5)
    out = get_compressor(method, retention=0.3, **option)(tokens)
    assert out.num_tokens == target_count(tokens.grid, 0.3)
    out.validate(tokens)


@settings(max_examples=8, deadline=None)
@given(
    method=st.sampled_from(METHODS),
    grid=st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4)),
    retention=st.floats(0.01, 1.0),
    seed=st.integers(0, 100),
)
def test_property_exact_count_any_grid(method, grid, retention, seed):
    tokens = random_tokens(grid=grid, dim=4, seed=seed)
    out = get_compressor(method, retention=retention)(tokens)
    assert out.num_tokens == target_count(grid, retention)
    out.validate(tokens)


def test_needs_follow_the_chosen_options():
    assert get_compressor("mmr").needs_attention and not get_compressor("mmr").needs_query
    by_query = get_compressor("mmr", importance="query")
    assert by_query.needs_query and not by_query.needs_attention
    assert not get_compressor("mmr", importance="norm").needs_attention
    assert get_compressor("flashvlm").needs_attention and get_compressor("flashvlm").needs_query
    assert get_compressor("keyframe", token_score="attention").needs_attention
    assert not get_compressor("keyframe").needs_attention and not get_compressor("divprune").needs_attention


def test_missing_inputs_and_bad_parameters_raise():
    no_query = VideoTokens(features=torch.randn(2, 4, 3), grid=(2, 2, 2), attention=torch.rand(2, 4))
    with pytest.raises(ValueError, match="question"):
        get_compressor("mmr", retention=0.5, importance="query")(no_query)
    with pytest.raises(ValueError, match="question"):
        get_compressor("flashvlm", retention=0.5)(no_query)
    no_attention = VideoTokens(features=torch.randn(2, 4, 3), grid=(2, 2, 2))
    with pytest.raises(ValueError, match="attention"):
        get_compressor("visionzip", retention=0.5)(no_attention)
    bad = [
        ("mmr", {"importance": "selector"}), ("mmr", {"mmr_lambda": 1.5}), ("mmr", {"pool": "frames"}),
        ("divprune", {"pool": "local"}), ("flashvlm", {"eta": -0.1}), ("flashvlm", {"partition_step": 0}),
        ("flashvlm", {"sharpen_temperature": 0.0}), ("visionzip", {"contextual_ratio": 1.2}),
        ("visionzip", {"contextual_merge": "sum"}), ("keyframe", {"keyframe_percentile": 120}),
        ("keyframe", {"keyframe_boost": 0.5}), ("keyframe", {"token_score": "random"}),
    ]
    for method, params in bad:
        with pytest.raises(ValueError):
            get_compressor(method, retention=0.5, **params)


# --------------------------------------------------------------------------------------------------------------
# end to end on the tiny models
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["tiny-qwen2.5-vl", "tiny-llava-onevision"])
@pytest.mark.parametrize("method", METHODS)
def test_end_to_end_tiny_models(model, method):
    frames = np.random.RandomState(0).randint(0, 255, (8, 112, 112, 3), dtype=np.uint8)
    answer = vidcompress.wrap(model, method=method, retention=0.25).ask(
        frames, "what happens in the video ?", num_frames=8, max_new_tokens=3
    )
    grid = tuple(answer.stats["grid"])
    assert answer.stats["visual_tokens_out"] == target_count(grid, 0.25)
    assert answer.stats["visual_tokens_in"] == grid[0] * grid[1] * grid[2]


def test_end_to_end_query_importance_gets_the_question():
    frames = np.random.RandomState(0).randint(0, 255, (8, 112, 112, 3), dtype=np.uint8)
    answer = vidcompress.wrap("tiny-qwen2.5-vl", method="mmr", retention=0.25, importance="query").ask(
        frames, "what happens in the video ?", num_frames=8, max_new_tokens=3
    )
    assert answer.stats["visual_tokens_out"] == target_count(tuple(answer.stats["grid"]), 0.25)

"""The token contracts: validation of every bad input, target_count, and the assembly helpers."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import random_tokens
from vidcompress import CompressedTokens, VideoTokens, merge_tokens, select_tokens, target_count
from vidcompress.tokens import grid_positions


class TestTargetCount:
    def test_hand_values(self):
        assert target_count((32, 14, 14), 0.1) == 627  # 627.2
        assert target_count((32, 14, 14), 0.25) == 1568
        assert target_count((16, 16, 16), 1.0) == 4096
        assert target_count((1, 2, 2), 0.01) == 1  # never zero tokens
        assert target_count((1, 1, 10), 0.35) == 4  # 3.5 rounds half up despite 0.35 * 10 = 3.4999999999999996
        assert target_count((1, 1, 10), 0.25) == 3  # 2.5 -> 3

    @pytest.mark.parametrize("retention", [0, -0.1, 1.0001, 2, float("nan"), float("inf"), True, "0.5", None])
    def test_bad_retention(self, retention):
        with pytest.raises(ValueError, match="retention"):
            target_count((2, 2, 2), retention)

    @pytest.mark.parametrize("grid", [(0, 2, 2), (2, -1, 2), (2, 2), (2, 2.0, 2), "abc", (2, 2, 2, 2)])
    def test_bad_grid(self, grid):
        with pytest.raises(ValueError, match="grid"):
            target_count(grid, 0.5)

    @given(
        t=st.integers(1, 64), h=st.integers(1, 30), w=st.integers(1, 30), r=st.floats(0.001, 1.0, allow_nan=False)
    )
    @settings(max_examples=200, deadline=None)
    def test_is_rounded_fraction(self, t, h, w, r):
        total = t * h * w
        count = target_count((t, h, w), r)
        assert 1 <= count <= total
        assert abs(count - total * r) <= 0.5 + 1e-6 or count == 1
        assert target_count((t, h, w), 1.0) == total


class TestVideoTokensValidation:
    def test_default_positions_are_grid_coordinates(self):
        tokens = random_tokens(t=2, h=2, w=3)
        assert tokens.positions.shape == (2, 6, 3)
        assert tokens.positions[1, 4].tolist() == [1, 1, 1]  # frame 1, raster index 4 = row 1, col 1
        assert tokens.positions.dtype == torch.long

    @pytest.mark.parametrize(
        "kwargs, message",
        [
            (dict(features=torch.zeros(4, 6)), "3 dimensions"),
            (dict(features=torch.zeros(2, 6, 4, dtype=torch.long)), "floating-point"),
            (dict(features=[[0.0]]), "torch.Tensor"),
            (dict(grid=(2, 2, 2)), "does not match"),
            (dict(grid=(3, 2, 3)), "does not match"),
            (dict(features=torch.zeros(0, 6, 4), grid=(1, 2, 3)), "non-empty"),
            (dict(grid=(2, 0, 3)), "positive"),
            (dict(attention=torch.zeros(2, 5)), "attention must have shape"),
            (dict(attention=torch.zeros(2, 6, 1)), "2 dimensions"),
            (dict(positions=torch.zeros(2, 6, 2, dtype=torch.long)), "positions must have shape"),
            (dict(positions=torch.zeros(2, 6, 3)), "integer"),
            (dict(timestamps=torch.zeros(3)), "timestamps"),
            (dict(query=torch.zeros(3, 5)), "query"),
            (dict(query=torch.zeros(0, 4)), "query"),
        ],
    )
    def test_bad_input_names_the_problem(self, kwargs, message):
        base = dict(features=torch.zeros(2, 6, 4), grid=(2, 2, 3))
        base.update(kwargs)
        with pytest.raises(ValueError, match=message):
            VideoTokens(**base)

    @pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
    def test_non_finite_features_and_attention(self, bad):
        features = torch.zeros(2, 6, 4)
        features[1, 2, 3] = bad
        with pytest.raises(ValueError, match="features contains 1 NaN or infinite"):
            VideoTokens(features=features, grid=(2, 2, 3))
        attention = torch.zeros(2, 6)
        attention[0, 0] = bad
        with pytest.raises(ValueError, match="attention contains"):
            VideoTokens(features=torch.zeros(2, 6, 4), grid=(2, 2, 3), attention=attention)

    def test_finite_check_can_be_skipped_for_the_hot_path(self):
        features = torch.full((1, 4, 2), float("nan"))
        tokens = VideoTokens(features=features, grid=(1, 2, 2), check_finite=False)
        assert tokens.num_tokens == 4


class TestCompressedTokens:
    def test_rejects_inconsistent_shapes(self):
        with pytest.raises(ValueError, match="positions"):
            CompressedTokens(torch.zeros(3, 4), torch.zeros(2, 3, dtype=torch.long), torch.zeros(5, dtype=torch.long),
                             torch.arange(3))
        with pytest.raises(ValueError, match="at least one"):
            CompressedTokens(torch.zeros(0, 4), torch.zeros(0, 3, dtype=torch.long), torch.zeros(5, dtype=torch.long),
                             torch.zeros(0, dtype=torch.long))
        with pytest.raises(ValueError, match="int64"):
            CompressedTokens(torch.zeros(1, 4), torch.zeros(1, 3, dtype=torch.long), torch.zeros(5, dtype=torch.int32),
                             torch.zeros(1, dtype=torch.long))

    def test_validate_catches_each_violation(self):
        tokens = random_tokens(t=1, h=2, w=2)
        good = select_tokens(tokens, torch.tensor([1, 3]))
        good.validate(tokens)
        reordered = CompressedTokens(good.features.flip(0), good.positions.flip(0), good.source,
                                     good.representatives.flip(0))
        with pytest.raises(ValueError, match="order"):
            reordered.validate(tokens)
        wrong_position = CompressedTokens(good.features, good.positions + 1, good.source, good.representatives)
        with pytest.raises(ValueError, match="positions"):
            wrong_position.validate(tokens)
        unused_row = CompressedTokens(good.features, good.positions, torch.tensor([-1, 0, -1, -1]),
                                      good.representatives)
        with pytest.raises(ValueError, match="receive no input|own output row"):
            unused_row.validate(tokens)


class TestAssembly:
    def test_select_sorts_and_maps_source(self):
        tokens = random_tokens(t=2, h=2, w=2)
        out = select_tokens(tokens, torch.tensor([6, 1, 3]))
        assert out.representatives.tolist() == [1, 3, 6]
        assert out.source.tolist() == [-1, 0, -1, 1, -1, -1, 2, -1]
        assert torch.equal(out.features, tokens.flat_features[[1, 3, 6]])
        assert out.positions.tolist() == [[0, 0, 1], [0, 1, 1], [1, 1, 0]]

    def test_merge_rows_are_member_means_in_representative_order(self):
        tokens = random_tokens(t=1, h=2, w=3)
        # group 0 = tokens {4, 5} represented by 5; group 1 = {0, 2} represented by 0; token 1 and 3 dropped
        group = torch.tensor([1, -1, 1, -1, 0, 0])
        out = merge_tokens(tokens, group, representative=torch.tensor([5, 0]))
        x = tokens.flat_features
        assert torch.allclose(out.features[0], (x[0] + x[2]) / 2)
        assert torch.allclose(out.features[1], (x[4] + x[5]) / 2)
        assert out.source.tolist() == [0, -1, 0, -1, 1, 1]
        assert out.representatives.tolist() == [0, 5]
        out.validate(tokens)

    def test_weighted_merge(self):
        tokens = random_tokens(t=1, h=1, w=2)
        out = merge_tokens(tokens, torch.tensor([0, 0]), torch.tensor([0]), weights=torch.tensor([0.6, 0.4]))
        x = tokens.flat_features
        assert torch.allclose(out.features[0], 0.6 * x[0] + 0.4 * x[1])

    def test_given_rows_are_placed_in_representative_order(self):
        tokens = VideoTokens(features=torch.randn(1, 4, 3).bfloat16(), grid=(1, 2, 2))
        rows = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])  # group 0 (rep 3), group 1 (rep 0)
        out = merge_tokens(tokens, torch.tensor([1, 1, 0, 0]), torch.tensor([3, 0]), rows=rows)
        assert out.features.dtype == torch.bfloat16
        assert out.features.float().tolist() == [[4.0, 5.0, 6.0], [1.0, 2.0, 3.0]]
        assert out.source.tolist() == [0, 0, 1, 1] and out.representatives.tolist() == [0, 3]
        with pytest.raises(ValueError, match=r"rows must be \[G, D\]"):
            merge_tokens(tokens, torch.tensor([1, 1, 0, 0]), torch.tensor([3, 0]), rows=rows[:1])

    def test_merge_keeps_bf16(self):
        tokens = VideoTokens(features=torch.randn(1, 4, 8).bfloat16(), grid=(1, 2, 2))
        out = merge_tokens(tokens, torch.tensor([0, 0, 1, 1]), torch.tensor([0, 2]))
        assert out.features.dtype == torch.bfloat16


def test_grid_positions_cover_each_cell_once():
    positions = grid_positions((3, 4, 5)).reshape(-1, 3)
    assert len({tuple(p) for p in positions.tolist()}) == 60
    assert math.prod(positions.max(0).values.add(1).tolist()) == 60


def test_side_inputs_are_validated_when_added():
    tokens = random_tokens(t=2, h=2, w=2, d=4)
    extended = tokens.with_side_inputs(timestamps=torch.tensor([0.0, 1.0]), query=torch.ones(3, 4))
    assert torch.equal(extended.features, tokens.features) and extended.query.shape == (3, 4)
    with pytest.raises(ValueError, match="query contains 1 NaN"):
        tokens.with_side_inputs(query=torch.tensor([[0.0, float("nan"), 0.0, 0.0]]))
    with pytest.raises(ValueError, match="timestamps must have shape"):
        tokens.with_side_inputs(timestamps=torch.zeros(3))

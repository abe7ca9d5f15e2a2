"""Contract properties that every registered token-stage method must satisfy (design.md, "Token-stage contract").

Parametrised over the registry, so each new method is checked as soon as it registers.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vidcompress import VideoTokens, available_methods, get_compressor, method_info, target_count

TOKEN_METHODS = [name for name in available_methods() if "token" in method_info(name).stages and name != "none"]
# Rows that are not means of their ``source`` members, with where their own property is pinned instead.
SOFT_ROWS = {"aot": "optimal-transport rows mix tokens of the frame / clip beyond the members (tests/test_ppe_aot.py)"}


def make_tokens(t: int, h: int, w: int, d: int, seed: int, dtype=torch.float32) -> VideoTokens:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(t, h * w, d, generator=generator)
    # make some frames near-duplicates so temporal methods have something to merge
    if t > 1:
        features[1] = features[0] + 0.01 * torch.randn(h * w, d, generator=generator)
    positions = torch.stack(
        torch.meshgrid(torch.arange(t) * 2 + 5, torch.arange(h) + 5, torch.arange(w) + 5, indexing="ij"), -1
    ).reshape(t, h * w, 3)
    return VideoTokens(
        features=features.to(dtype),
        grid=(t, h, w),
        attention=torch.rand(t, h * w, generator=generator),
        positions=positions,
        timestamps=torch.arange(t, dtype=torch.float32),
        query=torch.randn(3, d, generator=generator).to(dtype),
    )


@pytest.mark.parametrize("name", TOKEN_METHODS)
@given(
    t=st.integers(1, 6),
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    retention=st.sampled_from([0.05, 0.1, 0.25, 0.5, 0.9]),
    seed=st.integers(0, 1000),
)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_exact_count_valid_source_and_positions(name, t, h, w, retention, seed):
    tokens = make_tokens(t, h, w, 8, seed)
    out = get_compressor(name, retention=retention)(tokens)
    assert out.num_tokens == target_count(tokens.grid, retention)
    out.validate(tokens)  # source consistent, order, kept positions unchanged


@pytest.mark.parametrize("name", TOKEN_METHODS)
def test_deterministic(name):
    tokens = make_tokens(4, 4, 4, 16, seed=1)
    first = get_compressor(name, retention=0.25)(tokens)
    second = get_compressor(name, retention=0.25)(make_tokens(4, 4, 4, 16, seed=1))
    assert torch.equal(first.features, second.features)
    assert torch.equal(first.source, second.source)
    assert torch.equal(first.positions, second.positions)


@pytest.mark.parametrize("name", available_methods())
def test_identity_at_full_retention(name):
    tokens = make_tokens(3, 2, 4, 8, seed=2)
    out = get_compressor(name, retention=1.0)(tokens)
    assert torch.equal(out.features, tokens.flat_features)
    assert torch.equal(out.positions, tokens.flat_positions)
    assert torch.equal(out.source, torch.arange(tokens.num_tokens))


@pytest.mark.parametrize("name", [name for name in TOKEN_METHODS if name not in SOFT_ROWS])
def test_selected_rows_are_input_rows_or_member_means(name):
    """A kept row equals its input token; a merged row equals the (weighted) mean of its members within tolerance of
    the convex hull: every output lies inside the per-dimension range of its members."""
    tokens = make_tokens(4, 3, 3, 8, seed=3)
    out = get_compressor(name, retention=0.25)(tokens)
    x = tokens.flat_features
    for row in range(out.num_tokens):
        members = x[out.source == row]
        low, high = members.min(0).values - 1e-5, members.max(0).values + 1e-5
        assert bool(((out.features[row] >= low) & (out.features[row] <= high)).all()), f"row {row} outside its members"


@pytest.mark.parametrize("name", TOKEN_METHODS)
def test_bf16_input_keeps_dtype(name):
    tokens = make_tokens(2, 4, 4, 8, seed=4, dtype=torch.bfloat16)
    out = get_compressor(name, retention=0.25)(tokens)
    assert out.features.dtype == torch.bfloat16


def test_methods_needing_inputs_say_so():
    for name in TOKEN_METHODS:
        compressor = get_compressor(name)
        tokens = VideoTokens(features=torch.randn(2, 4, 8), grid=(2, 2, 2))
        lossy = get_compressor(name, retention=0.5)
        if lossy.needs_attention or lossy.needs_query:
            with pytest.raises(ValueError, match="needs"):
                lossy(tokens)
        else:
            assert lossy(tokens).num_tokens == 4
        assert compressor(tokens).num_tokens == 8

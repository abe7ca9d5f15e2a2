"""Baselines: uniform keeps a known lattice, random is seeded, none is the identity."""

from __future__ import annotations

import torch

from conftest import random_tokens
from vidcompress import get_compressor
from vidcompress.methods.uniform import frame_budgets, lattice


def kept_cells(out, t, h, w):
    kept = out.source.view(t, h, w) >= 0
    return [sorted((int(r), int(c)) for r, c in kept[frame].nonzero().tolist()) for frame in range(t)]


def test_uniform_quarter_keeps_the_2x2_lattice_of_cell_centres():
    # 4x4 frame, 25 %: a 2x2 lattice at the centres of the 2x2 cells -> rows/cols 1 and 3
    tokens = random_tokens(t=2, h=4, w=4)
    out = get_compressor("uniform", retention=0.25)(tokens)
    assert kept_cells(out, 2, 4, 4) == [[(1, 1), (1, 3), (3, 1), (3, 3)]] * 2


def test_uniform_spreads_the_budget_evenly_over_frames():
    assert frame_budgets(4, 6) == [1, 2, 1, 2]
    assert frame_budgets(5, 2) == [0, 1, 0, 1, 0]
    assert sum(frame_budgets(32, 627)) == 627
    # 14x14 frame at 1/4: a 7x7 lattice on every other row and column
    assert lattice(14, 14, 49) == [r * 14 + c for r in range(1, 14, 2) for c in range(1, 14, 2)]
    # one token per frame sits at the centre
    assert lattice(5, 5, 1) == [12]


def test_uniform_with_fewer_tokens_than_frames_picks_evenly_spaced_frames():
    tokens = random_tokens(t=8, h=1, w=1)
    out = get_compressor("uniform", retention=0.25)(tokens)
    assert out.representatives.tolist() == [2, 6]  # 2 tokens: centres of the two halves


def test_random_is_seeded_and_seed_matters():
    tokens = random_tokens(t=4, h=4, w=4)
    a = get_compressor("random", retention=0.25, seed=1)(tokens)
    b = get_compressor("random", retention=0.25, seed=1)(tokens)
    c = get_compressor("random", retention=0.25, seed=2)(tokens)
    assert torch.equal(a.representatives, b.representatives)
    assert not torch.equal(a.representatives, c.representatives)
    # the draw is the same as an independent seeded permutation
    expected = torch.randperm(64, generator=torch.Generator().manual_seed(1))[:16].sort().values
    assert torch.equal(a.representatives, expected)


def test_none_is_identity():
    tokens = random_tokens()
    out = get_compressor("none")(tokens)
    assert torch.equal(out.features, tokens.flat_features)

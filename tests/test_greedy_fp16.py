"""Greedy kernels on the fp16 similarity matrix: the normalisation without a float32 copy of the input, the fp16
seed scores, and the Triton k-center / MMR loops (in-kernel ``indices``) against the
float32 reference paths.

The Triton kernels run in Triton's interpreter (``TRITON_INTERPRET=1``, set before the kernel modules are imported;
modules imported earlier by another test are reloaded), as in ``test_kernels.py``.
"""

from __future__ import annotations

import importlib
import os
import sys

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from vidcompress.kernels import DISABLE_ENV, GreedySelection, frame_cosine, greedy_kcenter, greedy_mmr  # noqa: E402
from vidcompress.kernels.greedy import EPS, _cosine, kcenter_reference, seed_distance  # noqa: E402

for _name in [name for name in sys.modules if name.startswith("vidcompress.kernels._triton.")]:
    importlib.reload(sys.modules[_name])

HALF = [torch.float16, torch.bfloat16]


@pytest.fixture(autouse=True)
def _triton_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.delenv(DISABLE_ENV, raising=False)


def _features(seed: int, frames: int, tokens: int, dim: int, dtype: torch.dtype) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(frames, tokens, dim, generator=generator) * 3.0 + torch.randn(dim, generator=generator)
    x[:, 1] = 0.0  # a zero token: the norm clamp
    x[:, 2] = x[:, 3]  # a duplicated token: equal distances
    return x.to(dtype)


def _previous_cosine(x: torch.Tensor) -> torch.Tensor:
    """The matrix as computed before the fp16 path: a float32 copy of ``x``, then the fp16 unit vectors."""
    unit = x.float()
    unit = unit / torch.linalg.vector_norm(unit, dim=-1, keepdim=True).clamp(min=EPS)
    if x.dtype in HALF:
        unit = unit.to(torch.float16)
    return torch.bmm(unit, unit.transpose(1, 2))


@pytest.mark.parametrize("dtype", [*HALF, torch.float32, torch.float64])
def test_cosine_matches_the_float32_copy_bit_for_bit(dtype: torch.dtype) -> None:
    x = _features(0, 3, 40, 3584, dtype)
    expected = _previous_cosine(x)
    similarity = _cosine(x)
    assert similarity.dtype == (torch.float16 if dtype in HALF else torch.float32)
    assert torch.equal(similarity, expected)
    assert torch.equal(frame_cosine(x), expected.float())


@pytest.mark.parametrize("dtype", HALF)
def test_unit_vectors_match_the_float32_copy_bit_for_bit(dtype: torch.dtype) -> None:
    # the rounding step itself, on values spread over many binades: one float32 division, one rounding to fp16
    x = (_features(1, 2, 64, 256, torch.float32) * torch.logspace(-3, 2, 256)).to(dtype)
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=torch.float32).clamp_(min=EPS)
    unit = torch.div(x, norm, out=torch.empty(x.shape, dtype=torch.float16))
    reference_norm = torch.linalg.vector_norm(x.float(), dim=-1, keepdim=True).clamp(min=EPS)
    assert torch.equal(norm, reference_norm)
    assert torch.equal(unit, (x.float() / reference_norm).to(torch.float16))


@pytest.mark.parametrize("tokens", [1, 2, 33])
def test_seed_distance_on_fp16_equals_float32_and_restores_the_diagonal(tokens: int) -> None:
    similarity = _cosine(_features(2, 3, tokens, 24, torch.bfloat16) if tokens > 3 else torch.randn(3, tokens, 8))
    similarity = similarity.half()
    before = similarity.clone()
    nearest = seed_distance(similarity)
    assert nearest.dtype == torch.float32
    assert torch.equal(similarity, before)
    assert torch.equal(nearest, seed_distance(similarity.float()))


def _launch_kcenter(similarity, budgets, max_budget, scale=None, **options) -> GreedySelection:  # type: ignore[no-untyped-def]
    from vidcompress.kernels._triton.greedy import launch_kcenter

    frames = similarity.shape[0]
    out = GreedySelection(torch.full((frames, max_budget), -7), torch.full((frames, max_budget), -7))
    launch_kcenter(similarity, seed_distance(similarity), scale, budgets, out.order, out.indices, **options)
    return out


@pytest.mark.parametrize("num_warps", [4, 8])
@pytest.mark.parametrize("with_scale", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_kcenter_fp16_matrix_matches_the_reference(num_warps: int, with_scale: bool, seed: int) -> None:
    x = _features(seed, 3, 150, 32, torch.bfloat16)
    budgets = torch.tensor([0, 75, 150])  # none, some, all
    generator = torch.Generator().manual_seed(seed)
    scale = torch.rand(3, 150, generator=generator) if with_scale else None
    similarity = _cosine(x)
    assert similarity.dtype == torch.float16
    result = _launch_kcenter(similarity, budgets, 150, scale, num_warps=num_warps)
    expected = kcenter_reference(similarity.float(), budgets, 150, scale)
    assert torch.equal(result.order, expected)
    for frame, budget in enumerate(budgets.tolist()):
        assert result.indices[frame, :budget].tolist() == sorted(expected[frame, :budget].tolist())
        assert (result.indices[frame, budget:] == -1).all()


def test_kcenter_ties_go_to_the_lowest_index() -> None:
    # 8 orthogonal directions repeated: every distance is exactly 0 or 1, so most arg-maxes are ties
    generator = torch.Generator().manual_seed(7)
    x = torch.eye(8)[torch.randint(0, 8, (2, 64), generator=generator)].half()
    similarity = _cosine(x)
    budgets = torch.tensor([64, 33])
    result = _launch_kcenter(similarity, budgets, 64)
    assert torch.equal(result.order, kcenter_reference(similarity.float(), budgets, 64))


@pytest.mark.parametrize("dtype", [*HALF, torch.float32])
@pytest.mark.parametrize("budget", [1, 6, 7])
def test_global_pool_matches_the_reference_path(dtype: torch.dtype, budget: int) -> None:
    # DivPrune's call: one pool, an int budget, no validation
    pool = _features(3, 1, 70, 40, dtype)
    result = greedy_kcenter(pool, budget, budget, validate=False, use_triton=True)
    expected = greedy_kcenter(pool, budget, budget, validate=False, use_triton=False)
    assert torch.equal(result.order, expected.order)
    assert torch.equal(result.indices, expected.indices)


@pytest.mark.parametrize("use_triton", [False, True])
def test_out_receives_both_tensors(use_triton: bool) -> None:
    x = _features(4, 2, 20, 12, torch.float16)
    importance = torch.rand(2, 20, generator=torch.Generator().manual_seed(4))
    budgets = torch.tensor([3, 5])
    for run in (
        lambda **kw: greedy_kcenter(x, budgets, 6, **kw),
        lambda **kw: greedy_mmr(x, importance, budgets, 6, 0.4, **kw),
    ):
        out = GreedySelection(torch.full((2, 6), -7), torch.full((2, 6), -7))
        assert run(out=out, use_triton=use_triton) is out
        expected = run(use_triton=False)
        assert torch.equal(out.order, expected.order) and torch.equal(out.indices, expected.indices)


@pytest.mark.parametrize("dtype", HALF)
def test_mmr_fp16_matrix_matches_the_reference(dtype: torch.dtype) -> None:
    x = _features(6, 2, 90, 24, dtype)
    importance = torch.rand(2, 90, generator=torch.Generator().manual_seed(6))
    budgets = torch.tensor([45, 90])
    result = greedy_mmr(x, importance, budgets, 90, 0.3, use_triton=True)
    expected = greedy_mmr(x, importance, budgets, 90, 0.3, use_triton=False)
    assert torch.equal(result.order, expected.order)
    assert torch.equal(result.indices, expected.indices)

"""Kernels of ``vidcompress.kernels``: hand-checked cases of the PyTorch paths, and Triton == PyTorch agreement.

Without a GPU the Triton kernels run in Triton's interpreter: ``TRITON_INTERPRET=1`` is set here before the kernel
modules are imported (they are imported lazily on the first Triton call; if another test imported them already,
they are reloaded so their ``triton.jit`` decorations pick up the interpreter).
"""

from __future__ import annotations

import importlib
import math
import os
import sys

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from vidcompress.kernels import (  # noqa: E402
    DISABLE_ENV,
    BestMatch,
    GreedySelection,
    aligned_above,
    aligned_cosine,
    best_match,
    calibrated_kcenter,
    diversity_partition,
    greedy_kcenter,
    greedy_mmr,
    segment_mean,
    segment_mean_csr,
    refine_runs,
    segment_offsets,
    sinkhorn_scalings,
)

for _name in [name for name in sys.modules if name.startswith("vidcompress.kernels._triton.")]:
    importlib.reload(sys.modules[_name])

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
FAST = settings(max_examples=8, deadline=None, derandomize=False)


@pytest.fixture(autouse=True)
def _triton_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.delenv(DISABLE_ENV, raising=False)


def _random(seed: int, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _poisoned_like(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    return torch.full(shape, float("nan"), dtype=dtype)


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    tol = TOLERANCE[dtype]
    torch.testing.assert_close(actual.float(), expected.float(), rtol=tol, atol=tol)


# --------------------------------------------------------------------------------------------- segment mean, by hand


X4 = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])


@pytest.mark.parametrize("use_triton", [False, True])
def test_segment_mean_by_hand(use_triton: bool) -> None:
    source = torch.tensor([0, -1, 0, 2])
    out = segment_mean(X4, source, 4, use_triton=use_triton)
    assert torch.equal(out, torch.tensor([[3.0, 4.0], [0.0, 0.0], [7.0, 8.0], [0.0, 0.0]]))


@pytest.mark.parametrize("use_triton", [False, True])
def test_segment_mean_weighted_by_hand(use_triton: bool) -> None:
    source = torch.tensor([0, -1, 0, 1])
    weights = torch.tensor([1.0, 5.0, 3.0, 0.0])  # the dropped token's weight is ignored; segment 1 weighs 0
    out = segment_mean(X4, source, 2, weights, use_triton=use_triton)
    assert torch.equal(out, torch.tensor([[4.0, 5.0], [0.0, 0.0]]))


@pytest.mark.parametrize("use_triton", [False, True])
def test_segment_mean_row_scale_by_hand(use_triton: bool) -> None:
    source = torch.tensor([0, -1, 0, 2])
    out = segment_mean(X4, source, 3, row_scale=torch.tensor([2.0, 7.0, -0.5]), dtype=torch.float32,
                       use_triton=use_triton)
    assert torch.equal(out, torch.tensor([[6.0, 8.0], [0.0, 0.0], [-3.5, -4.0]]))
    with pytest.raises(ValueError, match="row_scale must be"):
        segment_mean(X4, source, 3, row_scale=torch.ones(4), use_triton=use_triton)


@pytest.mark.parametrize("use_triton", [False, True])
def test_segment_mean_dropped_rows_never_leak(use_triton: bool) -> None:
    features = X4.clone()
    features[1] = float("inf")
    out = segment_mean(features, torch.tensor([0, -1, 1, 1]), 2, use_triton=use_triton)
    assert torch.equal(out, torch.tensor([[1.0, 2.0], [6.0, 7.0]]))


def test_segment_offsets_by_hand() -> None:
    members, offsets = segment_offsets(torch.tensor([2, -1, 0, 2, 0]), 4)
    assert members.tolist() == [1, 2, 4, 0, 3]
    assert offsets.tolist() == [1, 3, 3, 5, 5]


@pytest.mark.parametrize("use_triton", [False, True])
def test_segment_mean_csr_matches_source_form(use_triton: bool) -> None:
    features = _random(1, 9, 5)
    source = torch.tensor([3, 0, -1, 3, 1, 1, -1, 0, 3])
    members, offsets = segment_offsets(source, 5)
    expected = segment_mean(features, source, 5, use_triton=False)
    _assert_close(segment_mean_csr(features, members, offsets, use_triton=use_triton), expected, torch.float32)


# ------------------------------------------------------------------------------------------- segment mean, agreement


@pytest.mark.parametrize("dtype", DTYPES)
@FAST
@given(
    rows=st.integers(0, 40),
    dim=st.sampled_from([1, 7, 45, 100, 520]),
    segments=st.integers(0, 12),
    drop=st.sampled_from([0.0, 0.3, 1.0]),
    weighted=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_segment_mean_triton_agrees(
    dtype: torch.dtype, rows: int, dim: int, segments: int, drop: float, weighted: bool, seed: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(rows, dim, generator=generator).to(dtype)
    source = torch.randint(0, max(segments, 1), (rows,), generator=generator)
    dropped = torch.rand(rows, generator=generator) < drop
    source = torch.where(dropped | (segments == 0), torch.full_like(source, -1), source)
    weights = torch.rand(rows, generator=generator) if weighted else None
    out = _poisoned_like((segments, dim), dtype)
    result = segment_mean(features, source, segments, weights, out=out, use_triton=True)
    assert result is out and out.dtype == dtype
    _assert_close(out, segment_mean(features, source, segments, weights, use_triton=False), dtype)


@pytest.mark.parametrize("use_triton", [False, True])
def test_segment_mean_float32_output_of_bf16_features(use_triton: bool) -> None:
    """``dtype=torch.float32`` returns the float32 accumulation itself, not its bf16 rounding."""
    features = _random(4, 60, 24, dtype=torch.bfloat16)
    source = torch.randint(-1, 7, (60,), generator=torch.Generator().manual_seed(5))
    weights = torch.rand(60, generator=torch.Generator().manual_seed(6))
    exact = segment_mean(features.double(), source, 7, weights.double(), use_triton=False)
    out = _poisoned_like((7, 24), torch.float32)
    result = segment_mean(features, source, 7, weights, out=out, dtype=torch.float32, use_triton=use_triton)
    assert result is out
    torch.testing.assert_close(out.double(), exact, rtol=1e-5, atol=1e-5)  # bf16 rounding would be ~4e-3
    rounded = segment_mean(features, source, 7, weights, use_triton=use_triton)
    assert rounded.dtype == torch.bfloat16 and not torch.equal(rounded.float(), out)
    with pytest.raises(ValueError, match="out must be"):
        segment_mean(features, source, 7, out=torch.empty(7, 24, dtype=torch.bfloat16), dtype=torch.float32)
    with pytest.raises(ValueError, match="dtype must be"):
        segment_mean(features, source, 7, dtype=torch.long)


def test_segment_mean_long_segment_and_block_sizes() -> None:
    features = _random(2, 300, 37)
    source = torch.zeros(300, dtype=torch.long)
    source[::7] = 1
    out = segment_mean(features, source, 3, out=_poisoned_like((3, 37), torch.float32), use_triton=True)
    _assert_close(out, segment_mean(features, source, 3, use_triton=False), torch.float32)
    assert torch.equal(out[2], torch.zeros(37))


@pytest.mark.parametrize("config", [(1, 16, 1, 1), (2, 16, 2, 2), (4, 32, 4, 1), (16, 64, 4, 2), (8, 16, 1, 4)])
def test_segment_mean_launch_configs_agree(config: tuple[int, int, int, int]) -> None:
    """Every (BLOCK_L, BLOCK_D, warps, BLOCK_K) of the tuning sweep gives the same rows: uneven and empty segments
    (a 30-member one spans several tiles), a segment pair running past K, columns running past D, weights."""
    features = _random(3, 90, 40)
    lengths = [0, 1, 7, 0, 2, 30, 1, 1, 3, 0, 5]  # 50 members, 11 segments; the rest dropped
    source = torch.full((90,), -1, dtype=torch.long)
    members = torch.randperm(90, generator=torch.Generator().manual_seed(1))[: sum(lengths)]
    source[members] = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    weights = torch.rand(90, generator=torch.Generator().manual_seed(2))
    csr_members, offsets = segment_offsets(source, len(lengths))
    for w in (None, weights):
        out = _poisoned_like((len(lengths), 40), torch.float32)
        segment_mean_csr(features, csr_members, offsets, w, out=out, use_triton=True, config=config)
        _assert_close(out, segment_mean(features, source, len(lengths), w, use_triton=False), torch.float32)
        assert torch.equal(out[[0, 3, 9]], torch.zeros(3, 40))


def test_segment_mean_default_config() -> None:
    from vidcompress.kernels._triton.segment_mean import default_config

    # (BLOCK_L, BLOCK_D, warps, BLOCK_K): BLOCK_L is the mean segment length rounded up to a power of two
    assert default_config(627, 6272, 3584, 2) == (16, 1024, 4, 2)  # LLaVA-OV 32 frames -> 10 %: ~10 members each
    assert default_config(1568, 6272, 3584, 2) == (4, 1024, 4, 2)  # -> 25 %: 4 members each
    assert default_config(627, 6272, 3584, 4) == (16, 512, 4, 2)  # fp32: 2 KiB of a row per program
    assert default_config(6272, 6272, 3584, 2) == (2, 1024, 4, 2)  # FlashVID's tree sums: mostly empty segments
    assert default_config(30, 300, 3584, 2) == (16, 256, 4, 1)  # few segments: BLOCK_D, then BLOCK_K shrink
    assert default_config(3, 40, 40, 4) == (16, 64, 4, 1)  # a small D is covered by one block


# ----------------------------------------------------------------------------------------------- diversity partition


def _symmetric(size: int, entries: dict[tuple[int, int], float]) -> torch.Tensor:
    matrix = torch.eye(size)
    for (i, j), value in entries.items():
        matrix[i, j] = matrix[j, i] = value
    return matrix


@pytest.mark.parametrize("use_triton", [False, True])
def test_partition_by_hand(use_triton: bool) -> None:
    # round 1 (drop 1): evens 0, 2, 4 score 0.1, 0.9, 0.5 against odds 1, 3 -> drop 2 -> [4, 0] + [1, 3]
    # round 2 (drop 1): evens 4, 1 score max(S40, S43) = 0.3, max(S10, S13) = 0.8 against odds 0, 3 -> drop 1
    similarity = _symmetric(5, {(0, 1): 0.1, (1, 2): 0.9, (1, 4): 0.5, (3, 4): 0.2, (0, 4): 0.3, (1, 3): 0.8})[None]
    residual = torch.tensor([[0, 1, 2, 3, 4]])
    out = diversity_partition(similarity, residual, keep=3, step=1, use_triton=use_triton)
    assert out.tolist() == [[4, 0, 3]]


@given(
    frames=st.integers(1, 3),
    tokens=st.integers(2, 30),
    keep_share=st.floats(0.0, 1.0),
    step=st.integers(1, 9),
    tied=st.booleans(),
    seed=st.integers(0, 2**16),
)
@FAST
def test_partition_triton_agrees(frames: int, tokens: int, keep_share: float, step: int, tied: bool, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    unit = torch.nn.functional.normalize(torch.randn(frames, tokens, 6, generator=generator), dim=-1)
    if tied:  # coarse vectors: many exactly equal cosines, so the stable tie rules are exercised
        unit = torch.round(unit * 2) / 2
    similarity = torch.bmm(unit, unit.transpose(1, 2))
    length = max(1, tokens - seed % tokens)
    residual = torch.stack([torch.randperm(tokens, generator=generator)[:length] for _ in range(frames)])
    keep = round(keep_share * length)
    expected = diversity_partition(similarity, residual, keep, step, use_triton=False)
    assert torch.equal(diversity_partition(similarity, residual, keep, step, use_triton=True), expected)


# ---------------------------------------------------------------------------------------- adjacent similarity, by hand


VIDEO = torch.tensor(
    [
        [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]],
        [[1.0, 0.0], [1.0, 1.0], [3.0, 4.0]],
        [[0.0, 2.0], [1.0, 0.0], [-3.0, -4.0]],
    ]
)


@pytest.mark.parametrize("use_triton", [False, True])
def test_aligned_cosine_by_hand(use_triton: bool) -> None:
    cosine = aligned_cosine(VIDEO, use_triton=use_triton)
    expected = torch.tensor([[1.0, 1 / math.sqrt(2), 0.0], [0.0, 1 / math.sqrt(2), -1.0]])
    torch.testing.assert_close(cosine, expected)
    torch.testing.assert_close(aligned_cosine(VIDEO, lag=2, use_triton=use_triton), torch.tensor([[0.0, 0.0, 0.0]]))


@pytest.mark.parametrize("use_triton", [False, True])
def test_aligned_above_by_hand(use_triton: bool) -> None:
    above = aligned_above(VIDEO, 0.5, use_triton=use_triton)
    assert above.tolist() == [[True, True, False], [False, True, False]]


@pytest.mark.parametrize("use_triton", [False, True])
def test_best_match_by_hand(use_triton: bool) -> None:
    # frame 1 token 2 = (3, 4): closest in frame 0 is (0, 1) (cos 0.8) over (1, 0) (0.6); the zero vector scores 0
    match = best_match(VIDEO, use_triton=use_triton)
    # frame 1 token 1 = (1, 1) ties between (1, 0) and (0, 1): the lower index wins
    # frame 2: (0, 2) -> (3, 4) 0.8 over (1, 1) 0.707; (-3, -4) -> (1, 0) at -0.6 is the least negative
    assert match.index.tolist() == [[0, 0, 1], [2, 0, 0]]
    torch.testing.assert_close(match.value, torch.tensor([[1.0, 1 / math.sqrt(2), 0.8], [0.8, 1.0, -0.6]]))


@pytest.mark.parametrize("use_triton", [False, True])
def test_best_match_ties_and_allowed(use_triton: bool) -> None:
    video = torch.tensor([[[2.0, 0.0], [1.0, 0.0], [0.0, 1.0]], [[5.0, 0.0], [0.0, 3.0], [1.0, 1.0]]])
    match = best_match(video, use_triton=use_triton)
    assert match.index.tolist() == [[0, 2, 0]]  # tokens 0 and 1 of frame 0 tie for (5, 0): the lower index wins
    allowed = torch.tensor([[False, True, False], [True, True, True]])
    match = best_match(video, allowed=allowed, use_triton=use_triton)
    assert match.index.tolist() == [[1, 1, 1]]
    torch.testing.assert_close(match.value, torch.tensor([[1.0, 0.0, 1 / math.sqrt(2)]]))
    nothing = torch.zeros(2, 3, dtype=torch.bool)
    match = best_match(video, allowed=nothing, use_triton=use_triton)
    assert match.index.tolist() == [[-1, -1, -1]]
    assert torch.isneginf(match.value).all()


# ------------------------------------------------------------------------------------ adjacent similarity, agreement


@pytest.mark.parametrize("dtype", DTYPES)
@FAST
@given(
    frames=st.integers(2, 5),
    tokens=st.sampled_from([1, 13, 70]),
    dim=st.sampled_from([3, 33, 130]),
    lag=st.integers(1, 2),
    seed=st.integers(0, 2**31 - 1),
)
def test_adjacent_similarity_triton_agrees(
    dtype: torch.dtype, frames: int, tokens: int, dim: int, lag: int, seed: int
) -> None:
    lag = min(lag, frames - 1)
    x = _random(seed, frames, tokens, dim, dtype=dtype)
    reference = aligned_cosine(x, lag, use_triton=False)
    out = _poisoned_like((frames - lag, tokens), torch.float32)
    aligned_cosine(x, lag, out=out, use_triton=True)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)

    threshold = 0.05
    decided = (reference - threshold).abs() > 1e-4
    expected = aligned_above(x, threshold, lag, use_triton=False)
    flags = ~expected  # poison: every entry starts wrong
    aligned_above(x, threshold, lag, out=flags, use_triton=True)
    assert torch.equal(flags[decided], expected[decided])

    allowed = torch.rand(frames, tokens, generator=torch.Generator().manual_seed(seed)) < 0.7
    for candidates in (None, allowed):
        shape = (frames - lag, tokens)
        poisoned = BestMatch(torch.full(shape, 12345), _poisoned_like(shape, torch.float32))
        match = best_match(x, lag, candidates, out=poisoned, use_triton=True)
        ref = best_match(x, lag, candidates, use_triton=False)
        torch.testing.assert_close(match.value, ref.value, rtol=1e-5, atol=1e-5)
        # the kernel's choice must be a maximiser (near-ties may resolve either way at rounding level)
        full = _cosine_matrix(x, lag, candidates)
        chosen = torch.where(match.index < 0, 0, match.index)
        at_choice = full.gather(2, chosen[..., None])[..., 0]
        assert ((match.index == ref.index) | ((at_choice - ref.value).abs() <= 1e-5)).all()


def _cosine_matrix(x: torch.Tensor, lag: int, allowed: torch.Tensor | None) -> torch.Tensor:
    later = torch.nn.functional.normalize(x[lag:].double(), dim=-1)
    earlier = torch.nn.functional.normalize(x[:-lag].double(), dim=-1)
    full = (later @ earlier.transpose(1, 2)).float()
    return full if allowed is None else full.masked_fill(~allowed[:-lag, None, :], float("-inf"))


# ---------------------------------------------------------------------------------------------------- greedy, by hand


def _frame(*vectors: tuple[float, float]) -> torch.Tensor:
    return torch.tensor([vectors])


@pytest.mark.parametrize("use_triton", [False, True])
def test_kcenter_three_tokens_by_hand(use_triton: bool) -> None:
    # a = (0.6, 0.8), b = (0, 1), c = (1, 0): distances a-b 0.2, a-c 0.4, b-c 1.0
    x = _frame((0.6, 0.8), (0.0, 1.0), (1.0, 0.0))
    # seed: nearest-neighbour distances a 0.2, b 0.2, c 0.4 -> c; then the farthest from c is b (1.0), then a
    selection = greedy_kcenter(x, 3, use_triton=use_triton)
    assert selection.order.tolist() == [[2, 1, 0]]
    assert selection.indices.tolist() == [[0, 1, 2]]
    assert greedy_kcenter(x, torch.tensor([2]), 3, use_triton=use_triton).order.tolist() == [[2, 1, -1]]
    # FlashVID calibration: weight b by 0.1 -> after c, a (0.4 * 1) beats b (1.0 * 0.1)
    scale = torch.tensor([[1.0, 0.1, 1.0]])
    assert greedy_kcenter(x, 3, scale=scale, use_triton=use_triton).order.tolist() == [[2, 0, 1]]


@pytest.mark.parametrize("use_triton", [False, True])
def test_mmr_three_tokens_by_hand(use_triton: bool) -> None:
    # a = (1, 0), b = (0.8, 0.6), c = (0, 1): cos a-b 0.8, a-c 0, b-c 0.6; importance a 1.0, b 0.9, c 0.2
    x = _frame((1.0, 0.0), (0.8, 0.6), (0.0, 1.0))
    importance = torch.tensor([[1.0, 0.9, 0.2]])
    # lambda 0.5: a first; then b: 0.45 - 0.4 = 0.05 < c: 0.1 - 0 = 0.1 -> c; then b
    assert greedy_mmr(x, importance, 3, use_triton=use_triton).order.tolist() == [[0, 2, 1]]
    assert greedy_mmr(x, importance, 3, mmr_lambda=1.0, use_triton=use_triton).order.tolist() == [[0, 1, 2]]
    assert greedy_mmr(x, importance, 2, mmr_lambda=0.0, use_triton=use_triton).indices.tolist() == [[0, 2]]


@pytest.mark.parametrize("use_triton", [False, True])
def test_greedy_per_frame_budgets_and_padding(use_triton: bool) -> None:
    x = _random(3, 4, 9, 6)
    budgets = torch.tensor([0, 1, 9, 4])
    selection = greedy_kcenter(x, budgets, 9, use_triton=use_triton)
    for frame, budget in enumerate(budgets.tolist()):
        chosen = selection.order[frame, :budget]
        assert len(set(chosen.tolist())) == budget and (chosen >= 0).all()
        assert (selection.order[frame, budget:] == -1).all()
        assert selection.indices[frame, :budget].tolist() == sorted(chosen.tolist())
    assert selection.indices[2].tolist() == list(range(9))


# -------------------------------------------------------------------------------------------------- greedy, agreement


@pytest.mark.parametrize("dtype", DTYPES)
@FAST
@given(
    frames=st.integers(1, 4),
    tokens=st.sampled_from([1, 2, 17, 70]),
    dim=st.sampled_from([5, 48]),
    seed=st.integers(0, 2**31 - 1),
)
def test_greedy_triton_agrees(dtype: torch.dtype, frames: int, tokens: int, dim: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(frames, tokens, dim, generator=generator).to(dtype)
    max_budget = max(1, tokens // 2)
    budgets = torch.randint(0, max_budget + 1, (frames,), generator=generator)
    scale = torch.rand(frames, tokens, generator=generator)
    importance = torch.rand(frames, tokens, generator=generator)
    cases = [
        lambda **kw: greedy_kcenter(x, budgets, max_budget, **kw),
        lambda **kw: greedy_kcenter(x, budgets, max_budget, scale, **kw),
        lambda **kw: greedy_mmr(x, importance, budgets, max_budget, 0.3, **kw),
    ]
    for run in cases:
        poisoned = GreedySelection(torch.full((frames, max_budget), -7), torch.full((frames, max_budget), -7))
        result = run(out=poisoned, use_triton=True)
        expected = run(use_triton=False)
        assert torch.equal(result.order, expected.order)
        assert torch.equal(result.indices, expected.indices)


# --------------------------------------------------------------------------------------- dispatch and validation


def test_dispatch_default_on_cpu_and_disable_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from vidcompress.kernels._triton import segment_mean as triton_module

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the Triton path ran")

    monkeypatch.setattr(triton_module, "launch_segment_mean", refuse)
    source = torch.tensor([0, 0, 1, -1])
    segment_mean(X4, source, 2)  # CPU tensors: the PyTorch path
    monkeypatch.setenv(DISABLE_ENV, "1")
    segment_mean(X4, source, 2, use_triton=True)  # the variable wins over the caller
    monkeypatch.delenv(DISABLE_ENV)
    with pytest.raises(AssertionError, match="Triton path ran"):
        segment_mean(X4, source, 2, use_triton=True)


def test_use_triton_on_cpu_needs_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(ValueError, match="CUDA tensors"):
        aligned_cosine(VIDEO, use_triton=True)
    with pytest.raises(ValueError, match="use_triton must be"):
        aligned_cosine(VIDEO, use_triton="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: segment_mean(X4, torch.tensor([0, 1, 2, 0]), 2), r"source values must lie in \[-1, 2\)"),
        (lambda: segment_mean(X4, torch.tensor([0, -2, 1, 0]), 2), "source values"),
        (lambda: segment_mean(X4, torch.tensor([0, 1]), 2), "4 entries"),
        (lambda: segment_mean(X4, torch.tensor([0, 1, 1, 0]), 2, torch.tensor([1.0, -1.0, 1.0, 1.0])), "non-negative"),
        (lambda: segment_mean(X4, torch.tensor([0, 1, 1, 0]), -1), "num_segments"),
        (lambda: segment_mean(X4, torch.tensor([0, 1, 1, 0]), 2, out=torch.empty(3, 2)), "out must be"),
        (lambda: aligned_cosine(VIDEO, lag=3), "more than lag=3 frames"),
        (lambda: aligned_cosine(VIDEO[0]), r"\[T, N, D\]"),
        (lambda: aligned_above(VIDEO, 1.5), r"threshold must be a number in \[-1, 1\]"),
        (lambda: best_match(VIDEO, allowed=torch.ones(3, 3)), "allowed must be a bool"),
        (lambda: greedy_kcenter(VIDEO, torch.tensor([1, 4, 0]), 3), "every budget"),
        (lambda: greedy_kcenter(VIDEO, 4), r"max_budget must be an int in \[0, N=3\]"),
        (lambda: greedy_kcenter(VIDEO, 2, scale=-torch.ones(3, 3)), "scale must be finite and non-negative"),
        (lambda: greedy_mmr(VIDEO, torch.ones(3, 3), 2, mmr_lambda=1.5), r"mmr_lambda must be a number in \[0, 1\]"),
        (lambda: greedy_mmr(VIDEO, torch.ones(3, 2), 2), "importance must be"),
    ],
)
def test_bad_input_raises(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        call()


def test_triton_paths_are_deterministic() -> None:
    x = _random(4, 3, 20, 24, dtype=torch.bfloat16)
    source = torch.randint(-1, 7, (60,), generator=torch.Generator().manual_seed(4))
    flat = x.reshape(60, 24)
    assert torch.equal(segment_mean(flat, source, 7, use_triton=True), segment_mean(flat, source, 7, use_triton=True))
    first, second = best_match(x, use_triton=True), best_match(x, use_triton=True)
    assert torch.equal(first.index, second.index) and torch.equal(first.value, second.value)


# ------------------------------------------------------------------------------------------------------- sinkhorn


def _sinkhorn_loop(kernel: torch.Tensor, mu: torch.Tensor, nu: torch.Tensor, max_iter: int, tol: float):
    """One problem, the reference's loop: update, then stop on the host once the mean change is below ``tol``."""
    r, c = torch.ones_like(mu), torch.ones_like(nu)
    for _ in range(max_iter):
        r_new = mu / (kernel @ c)
        c = nu / (kernel.T @ r_new)
        change, r = (r_new - r).abs().mean(), r_new
        if change < tol:
            break
    return r, c


@given(batch=st.integers(1, 4), rows=st.integers(1, 40), cols=st.integers(1, 20),
       tol=st.sampled_from([0.0, 1e-3, 1e-2]), max_iter=st.integers(1, 60), seed=st.integers(0, 1000))
@FAST
def test_sinkhorn_triton_and_torch_stop_like_separate_loops(batch: int, rows: int, cols: int, tol: float,
                                                             max_iter: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    kernel = torch.exp(-torch.rand(batch, rows, cols, generator=generator) / 0.1)
    mu, nu = torch.full((batch, rows), 1.0 / rows), torch.full((batch, cols), 1.0 / cols)
    expected = [_sinkhorn_loop(kernel[b], mu[b], nu[b], max_iter, tol) for b in range(batch)]
    for use_triton in (False, True):
        r, c = sinkhorn_scalings(kernel, mu, nu, max_iter, tol, joint_stop=False, use_triton=use_triton)
        for b, (r_b, c_b) in enumerate(expected):
            torch.testing.assert_close(r[b], r_b, rtol=1e-4, atol=0.0)
            torch.testing.assert_close(c[b], c_b, rtol=1e-4, atol=0.0)
    joint = [sinkhorn_scalings(kernel, mu, nu, max_iter, tol, joint_stop=True, use_triton=flag)
             for flag in (False, True)]
    torch.testing.assert_close(joint[1], joint[0], rtol=1e-4, atol=0.0)


# ----------------------------------------------------------------------------------------------------- run refinement


@given(labels=st.lists(st.integers(0, 5), min_size=1, max_size=40))
@settings(max_examples=40, deadline=None)
def test_refine_runs_triton_agrees(labels: list[int]) -> None:
    """The PyTorch path is checked against PruneVid's host loop in ``test_sync_free_rewrites``."""
    tensor = torch.tensor(labels)
    assert torch.equal(refine_runs(tensor, use_triton=True), refine_runs(tensor, use_triton=False))
# ---------------------------------------------------------------------------------------------- calibrated k-center


def _calibrated_oracle(distance: torch.Tensor, weight: torch.Tensor, count: int) -> torch.Tensor:
    """One frame at a time, one pick at a time, straight from the definition (products of every pair)."""
    frames, n, _ = distance.shape
    order = torch.full((frames, n), n, dtype=torch.long)
    for frame in range(frames):
        selected: list[int] = []
        for step in range(count):
            best, pick = float("-inf"), -1
            for j in range(n):
                if j in selected:
                    continue
                pool = [i for i in range(n) if i != j] if not selected else selected
                products = [float(distance[frame, i, j] * weight[frame, j]) for i in pool]
                value = min(products) if products else 0.0
                if value > best or pick < 0:
                    best, pick = value, j
            selected.append(pick)
            order[frame, pick] = step
    return order


@pytest.mark.parametrize("use_triton", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_calibrated_kcenter_matches_the_definition(use_triton: bool, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    frames, n = 3, 7
    x = torch.randint(-1, 2, (frames, n, 4), generator=generator).float()  # duplicated tokens: exact ties
    normed = torch.nn.functional.normalize(x, dim=-1)
    distance = 1.0 - normed @ normed.transpose(1, 2)
    weight = torch.randint(-2, 3, (frames, n), generator=generator).float()  # signed, zeros included
    for count in (0, 1, 4, n):
        expected = _calibrated_oracle(distance, weight, count)
        assert torch.equal(calibrated_kcenter(distance, weight, count, use_triton=use_triton), expected)


@pytest.mark.parametrize("use_triton", [False, True])
def test_calibrated_kcenter_one_token_frames(use_triton: bool) -> None:
    distance = torch.zeros(2, 1, 1)
    order = calibrated_kcenter(distance, torch.tensor([[0.0], [-1.0]]), 1, use_triton=use_triton)
    assert order.tolist() == [[0], [0]]

"""Pairwise matrices and DPC-kNN density scores: hand-computed cases, Triton (interpreter) against PyTorch."""

from __future__ import annotations

import math

import pytest
import torch

from vidcompress.kernels import density_scores, matmul_float32, pairwise, squared_norms
from vidcompress.kernels.density_peaks import density_scores_reference
from vidcompress.kernels.pairwise import pairwise_reference
from vidcompress.ops.dpc_knn import dpc_knn

PATHS = [False, True]


@pytest.mark.parametrize("use_triton", PATHS)
def test_pairwise_by_hand(use_triton: bool) -> None:
    x = torch.tensor([[[3.0, 4.0], [0.0, 0.0]]])
    y = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [-3.0, -4.0]]])
    dot = pairwise(x, y, use_triton=use_triton)
    assert torch.allclose(dot, torch.tensor([[[3.0, 8.0, -25.0], [0.0, 0.0, 0.0]]]))
    cosine = pairwise(x, y, kind="cosine", use_triton=use_triton)
    assert torch.allclose(cosine, torch.tensor([[[0.6, 0.8, -1.0], [0.0, 0.0, 0.0]]]), atol=1e-6)
    distance = pairwise(x, y, kind="cosine_distance", use_triton=use_triton)
    assert torch.allclose(distance, 1.0 - cosine, atol=1e-6)
    euclidean = pairwise(x, y, kind="euclidean", divide_by=2.0, use_triton=use_triton)
    expected = torch.tensor([[[math.sqrt(20.0), math.sqrt(13.0), 10.0], [1.0, 2.0, 5.0]]]) / 2.0
    assert torch.allclose(euclidean, expected, atol=1e-5)


def _close(kind: str, got: torch.Tensor, want: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> None:
    """float32 rounding for 16-bit inputs (exact products); for float32 inputs, whose hi + lo bf16 split keeps 16
    mantissa bits of each factor, 2^-14 of ``|x| |y|`` (which bounds the sum of the products' magnitudes)."""
    tolerance = 6e-5 if torch.float32 in (x.dtype, y.dtype) else 1e-6
    if kind == "euclidean":  # compare squares: the sqrt amplifies the rounding of |x|^2 + |y|^2 - 2<x, y> near 0
        scale = x.float().square().sum(-1)[:, :, None] + y.float().square().sum(-1)[:, None, :]
        assert ((got.square() - want.square()).abs() <= tolerance * scale + 1e-6).all()
    elif kind == "dot":
        scale = x.float().norm(dim=-1)[:, :, None] * y.float().norm(dim=-1)[:, None, :]
        assert ((got - want).abs() <= tolerance * scale + 1e-6).all()
    else:
        assert (got - want).abs().max() <= tolerance + 1e-6


@pytest.mark.parametrize("kind", ["dot", "cosine", "cosine_distance", "euclidean"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(2, 37, 21, 70), (1, 150, 130, 33), (3, 1, 5, 8)])
def test_pairwise_triton_agrees(kind: str, dtype: torch.dtype, shape: tuple[int, int, int, int]) -> None:
    batch, rows, cols, dim = shape
    generator = torch.Generator().manual_seed(rows * cols + dim)
    x = torch.randn(batch, rows, dim, generator=generator).to(dtype)
    y = torch.randn(batch, cols, dim, generator=generator).to(dtype)
    out = torch.full((batch, rows, cols), float("nan"))  # poisoned: every element must be written
    got = pairwise(x, y, kind=kind, out=out, use_triton=True)
    assert got.data_ptr() == out.data_ptr() and not got.isnan().any()
    _close(kind, got, pairwise_reference(x, y, kind), x, y)
    same = pairwise(x, kind=kind, use_triton=True)  # y = x
    _close(kind, same, pairwise_reference(x, None, kind), x, x)


def test_pairwise_reads_views_and_mixed_dtypes() -> None:
    generator = torch.Generator().manual_seed(3)
    video = torch.randn(5, 12, 40, generator=generator).to(torch.bfloat16)
    later, earlier = video[1:], video[:-1]  # frame t+1 against frame t, no copies
    got = pairwise(later, earlier, kind="cosine", use_triton=True)
    assert (got - pairwise_reference(later, earlier, "cosine")).abs().max() <= 2e-6
    centre = torch.randn(5, 1, 40, generator=generator)  # float32 against bf16 tokens
    got = pairwise(video, centre, use_triton=True)
    want = video.double() @ centre.double().transpose(1, 2)
    scale = video.double().norm(dim=-1)[..., None] * centre.double().norm(dim=-1)[:, None]
    assert ((got.double() - want).abs() <= 6e-5 * scale).all()
    strided = torch.randn(2, 9, 64, generator=generator).to(torch.bfloat16)[:, :, ::2]  # D not contiguous
    want = strided.double() @ strided.double().transpose(1, 2)
    assert torch.allclose(pairwise(strided, use_triton=True).double(), want, atol=1e-4)


def test_pairwise_zero_vectors_have_zero_cosine() -> None:
    x = torch.zeros(1, 3, 16)
    x[0, 1] = 1.0
    for use_triton in PATHS:
        assert torch.equal(pairwise(x, kind="cosine", use_triton=use_triton)[0, 0], torch.zeros(3))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: pairwise(torch.randn(3, 4)), "B, rows, D"),
        (lambda: pairwise(torch.randn(2, 3, 4), torch.randn(3, 3, 4)), "batch size and the width"),
        (lambda: pairwise(torch.randn(2, 3, 4), kind="manhattan"), "kind must be one of"),
        (lambda: pairwise(torch.randn(2, 3, 4), divide_by=0.0), "divide_by must be positive"),
        (lambda: pairwise(torch.randn(2, 3, 4), out=torch.empty(2, 3, 4)), "out must be"),
        (lambda: pairwise(torch.randn(2, 3, 4), x_square=torch.ones(2, 4)), "x_square must be"),
        (lambda: pairwise(torch.randn(2, 3, 4), torch.randn(2, 5, 4), y_square=torch.ones(2, 5).double()),
         "y_square must be"),
    ],
)
def test_pairwise_bad_input(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        call()


def test_matmul_float32_matches_upcast_product() -> None:
    a = (torch.rand(6, 50) < 0.3).to(torch.bfloat16)
    b = torch.randn(50, 7).to(torch.bfloat16)
    got = matmul_float32(a, b)
    assert got.dtype == torch.float32
    assert torch.allclose(got.double(), a.double() @ b.double(), atol=1e-5)


@pytest.mark.parametrize("use_triton", PATHS)
def test_density_scores_by_hand(use_triton: bool) -> None:
    # points 0, 1, 3 on a line; k = 2 (the point itself and its nearest other point)
    points = torch.tensor([0.0, 1.0, 3.0])
    distances = (points[:, None] - points[None, :]).abs()[None]
    density, score = density_scores(distances, torch.tensor([2]), 2, torch.ones(1, 3, dtype=torch.bool),
                                    use_triton=use_triton)
    expected_density = torch.tensor([math.exp(-0.5), math.exp(-0.5), math.exp(-2.0)])
    assert torch.allclose(density[0], expected_density)
    # 0 and 1 tie in density: 0 counts as denser (lower index) and takes the largest distance, 3
    expected_delta = torch.tensor([3.0, 1.0, 2.0])
    assert torch.allclose(score[0], expected_density * expected_delta)


@pytest.mark.parametrize("use_triton", PATHS)
def test_density_scores_invalid_tokens_are_ignored(use_triton: bool) -> None:
    points = torch.tensor([0.0, 1.0, 50.0, 3.0])
    distances = (points[:, None] - points[None, :]).abs()[None]
    valid = torch.tensor([[True, True, False, True]])
    density, score = density_scores(distances, torch.tensor([2]), 2, valid, use_triton=use_triton)
    kept = torch.tensor([0, 1, 3])
    ref_density, ref_score = density_scores(distances[:, kept][:, :, kept], torch.tensor([2]), 2,
                                            torch.ones(1, 3, dtype=torch.bool), use_triton=False)
    assert torch.allclose(density[0, kept], ref_density[0]) and density[0, 2] == 0.0
    assert torch.allclose(score[0, kept], ref_score[0]) and score[0, 2] == float("-inf")


@pytest.mark.parametrize("shape", [(3, 37, 7), (2, 5, 7), (4, 130, 3), (2, 300, 9), (3, 64, 64), (2, 1, 1)])
@pytest.mark.parametrize("elements", [4096, 256])
def test_density_scores_triton_agrees(shape: tuple[int, int, int], elements: int) -> None:
    batch, n, k_max = shape
    generator = torch.Generator().manual_seed(n * k_max + elements)
    distances = torch.rand(batch, n, n, generator=generator)
    distances = (distances + distances.transpose(1, 2)) / 2
    distances.diagonal(dim1=1, dim2=2).zero_()
    valid = torch.rand(batch, n, generator=generator) < 0.7
    valid[0] = False  # an entry without valid tokens
    k = torch.randint(1, k_max + 1, (batch,), generator=generator)
    from vidcompress.kernels._triton.density_peaks import launch_density_scores

    density, score = launch_density_scores(distances, k, min(k_max, n), valid, elements=elements)
    ref_density, ref_score = density_scores_reference(distances, k, k_max, valid)
    assert (density - ref_density).abs().max() <= 2e-7
    assert torch.equal(torch.isinf(score), torch.isinf(ref_score))
    finite = torch.isfinite(ref_score)
    assert torch.allclose(score[finite], ref_score[finite], rtol=0.0, atol=2e-7)


def test_density_scores_empty_batch() -> None:
    density, score = density_scores(torch.empty(0, 5, 5), torch.empty(0, dtype=torch.long), 3,
                                    torch.empty(0, 5, dtype=torch.bool), use_triton=True)
    assert density.shape == score.shape == (0, 5)


def test_density_scores_large_k_takes_the_reference_path() -> None:
    distances = torch.rand(1, 80, 80)
    distances = (distances + distances.transpose(1, 2)) / 2
    valid = torch.ones(1, 80, dtype=torch.bool)
    got = density_scores(distances, torch.tensor([70]), 70, valid, use_triton=True)  # k beyond MAX_K
    want = density_scores_reference(distances, torch.tensor([70]), 70, valid)
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_dpc_knn_separates_two_blobs() -> None:
    generator = torch.Generator().manual_seed(0)
    blob_a = torch.randn(10, 8, generator=generator) * 0.05
    blob_b = torch.randn(10, 8, generator=generator) * 0.05 + 5.0
    x = torch.cat([blob_a, blob_b])[None]
    centre, assignment = dpc_knn(x, 2, 3)
    assert int(centre.sum()) == 2
    assert assignment[0, :10].unique().numel() == 1 and assignment[0, 10:].unique().numel() == 1
    assert assignment[0, 0] != assignment[0, 10]


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("config", [(64, 64, 64, 1), (32, 16, 32, 3), (16, 64, 16, 8)])
@pytest.mark.parametrize("dtypes", [(torch.bfloat16, torch.bfloat16), (torch.float32, torch.float32),
                                    (torch.float16, torch.float32)])
def test_pairwise_launch_configs_agree(
    config: tuple[int, int, int, int], dtypes: tuple[torch.dtype, torch.dtype], fused: bool
) -> None:
    """Tiles, slices of D and the hi / lo terms cover every product exactly once, whatever the configuration, with
    the slices summed in one program (fused) or by the second pass."""
    from vidcompress.kernels._triton.pairwise import pairwise_dots, prepare_operand, slice_plan

    block_m, block_n, block_d, slices = config
    chunks = -(-100 // block_d)
    per_slice = -(-chunks // min(slices, chunks))
    planned, width = slice_plan(100, block_d, slices)
    assert planned == -(-chunks // per_slice) and (planned - 1) * width < 100  # non-empty slices
    generator = torch.Generator().manual_seed(sum(config))
    x = torch.randn(2, 23, 100, generator=generator).to(dtypes[0])
    y = torch.randn(2, 19, 100, generator=generator).to(dtypes[1])
    x_split, y_split = x.dtype != torch.bfloat16, y.dtype != torch.bfloat16
    x_operand, x_square = prepare_operand(x, x_split, True)
    y_operand, y_square = prepare_operand(y, y_split, True)
    for kind in ("euclidean", "cosine", "dot"):
        out = torch.full((2, 23, 19), float("nan"))
        pairwise_dots(x_operand, y_operand, 100, x_split, y_split, out, x_square, y_square, kind, 1e-12, 2.0,
                      block_m, block_n, block_d, slices, fused)
        assert not out.isnan().any()  # every entry written
        _close(kind, out, pairwise_reference(x, y, kind, divide_by=2.0), x, y)


@pytest.mark.parametrize("use_triton", PATHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_squared_norms_by_hand(use_triton: bool, dtype: torch.dtype) -> None:
    x = torch.tensor([[[3.0, 4.0, 0.0], [1.0, -2.0, 2.0]], [[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]]]).to(dtype)
    got = squared_norms(x, use_triton=use_triton)
    assert got.dtype == torch.float32
    assert torch.equal(got, torch.tensor([[25.0, 9.0], [0.0, 0.75]]))


@pytest.mark.parametrize("kind", ["cosine", "cosine_distance", "euclidean"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_pairwise_uses_given_squared_norms(kind: str, dtype: torch.dtype) -> None:
    """Norms passed in (views of one [T, N] tensor, as FlashVID's TSTM passes them) give the same matrices; norms
    that are wrong on purpose change the Triton result, so they are really used there."""
    generator = torch.Generator().manual_seed(5)
    video = torch.randn(4, 9, 40, generator=generator).to(dtype)
    square = squared_norms(video, use_triton=True)
    x, y = video[1:], video[:-1]
    want = pairwise(x, y, kind=kind, use_triton=True)
    got = pairwise(x, y, kind=kind, x_square=square[1:], y_square=square[:-1], use_triton=True)
    assert torch.equal(got, want)
    assert torch.equal(pairwise(video, kind=kind, x_square=square, use_triton=True),
                       pairwise(video, kind=kind, use_triton=True))
    wrong = pairwise(x, y, kind=kind, x_square=4.0 * square[1:], y_square=square[:-1], use_triton=True)
    assert not torch.allclose(wrong, want)

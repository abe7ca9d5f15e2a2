"""Pairwise products, cosines and distances between the tokens of two batches: ``[B, M, D] x [B, N, D] -> [B, M, N]``.

Every similarity matrix of the token stage (ADTS and TSTM cosines, the DPC-kNN distances of FlashVID / HoliTom /
FastVID / PruneVid, FastVID's context affinity) is one of:

* ``"dot"`` — ``<x_i, y_j>``;
* ``"cosine"`` — ``<x_i, y_j> / (max(|x_i|, eps) max(|y_j|, eps))``, i.e. ``F.normalize(x) @ F.normalize(y).T``;
* ``"cosine_distance"`` — ``1 - cosine``;
* ``"euclidean"`` — ``sqrt(max(|x_i|^2 + |y_j|^2 - 2 <x_i, y_j>, 0))``, the formula ``torch.cdist`` uses for more
  than 25 rows (its ``use_mm_for_euclid_dist_if_necessary`` mode), so the rounding is of the same kind.

``divide_by`` divides the result (DPC-kNN's ``/ sqrt(D)``). The result is float32 whatever the input dtype.

The references compute these matrices in float32 on the CUDA cores (~0.35 ms for 32 frames x 196 x 3584 on an
H100). The CUDA path multiplies on the tensor cores instead, without rounding the inputs: a bf16 / fp16 operand goes
in as it is (the product of two such numbers is exact in float32, and the accumulation is float32), a float32
operand is split into two bf16 parts ``hi + lo`` (16 of its 24 mantissa bits) and the product is
``hi hi' + hi lo' + lo hi'``. Launches (``_triton/pairwise.py``): the squared norms (float32 accumulation of the
input) and the split in one pass over each operand (none for 16-bit operands whose norms are given), then a Triton
GEMM over slices of ``D`` (at most 1024 wide, so no float32 accumulation runs over more than 1024 products; the
slices are summed in a fixed order, so the result is deterministic) that writes the cosine or distance itself when
the output tiles fill the GPU, or partial products and a pass that sums and finishes them when they do not. On an H100 at 32 x 196 x 3584
(``benchmarks/results/probes/pairwise_probe_h100.txt``), against float64: bf16 inputs give cosines within 2.0e-6
(the float32 PyTorch path: 5.5e-6) and squared distances within 4.0e-6 of the norms (1.3e-5); float32 inputs,
limited by the 16-bit split, 8.9e-6 and 1.8e-5 (PyTorch: 2.9e-6 and 6.9e-6). Time: 0.07-0.09 ms for bf16 and
0.2 ms for float32 inputs against 0.5-0.75 ms.

Why not simpler: a single Triton GEMM with the norms accumulated in its loop lost or double-counted a whole
``BLOCK_D`` slice of the dot in 2 of 8 launch configurations on the H100 (Triton 3.6; pipelined loads consumed by
both ``tl.dot`` and the norm sums, the symptom ``best_match`` documents) and ran at ~100 TFLOP/s; cuBLAS
(``torch.bmm(..., out_dtype=torch.float32)``) chose an sm80 kernel at ~125 TFLOP/s for these shapes (too few output
tiles for a 3584-long reduction), and one unsliced accumulation over 3584 products lands ~1e-5 from float64.

The PyTorch path is what the methods used before (``F.normalize`` then ``matmul``; ``torch.cdist``), so CPU results
do not change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._dispatch import resolve_use_triton

__all__ = ["KINDS", "matmul_float32", "pairwise", "pairwise_reference", "squared_norms"]

KINDS = ("dot", "cosine", "cosine_distance", "euclidean")
NORM_EPS = 1e-12  # F.normalize's default


def pairwise_reference(
    x: torch.Tensor, y: torch.Tensor | None = None, kind: str = "dot", eps: float = NORM_EPS, divide_by: float = 1.0
) -> torch.Tensor:
    """PyTorch path of :func:`pairwise`, in float32."""
    x = x.float()
    y = x if y is None else y.float()
    if kind == "euclidean":
        result = torch.cdist(x, y)
    elif kind == "dot":
        result = x @ y.transpose(-1, -2)
    else:
        unit_x = F.normalize(x, dim=-1, eps=eps)
        unit_y = unit_x if y is x else F.normalize(y, dim=-1, eps=eps)
        result = unit_x @ unit_y.transpose(-1, -2)
        if kind == "cosine_distance":
            result = 1.0 - result
    return result if divide_by == 1.0 else result / divide_by


def _check(x: torch.Tensor, y: torch.Tensor | None, kind: str, eps: float, divide_by: float) -> None:
    for name, value in (("x", x), ("y", y)):
        if value is None:
            continue
        if not isinstance(value, torch.Tensor) or value.ndim != 3 or not value.is_floating_point():
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"{name} must be a floating-point [B, rows, D] tensor, got {shape}")
    if y is not None:
        if y.shape[0] != x.shape[0] or y.shape[2] != x.shape[2]:
            raise ValueError(f"x {tuple(x.shape)} and y {tuple(y.shape)} must share the batch size and the width D")
        if y.device != x.device:
            raise ValueError(f"x is on {x.device} but y is on {y.device}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps!r}")
    if not divide_by > 0:
        raise ValueError(f"divide_by must be positive, got {divide_by!r}")


def squared_norms(x: torch.Tensor, use_triton: bool | None = None) -> torch.Tensor:
    """``[B, M]`` float32 squared norms of the rows of ``x`` ``[B, M, D]`` (float32 accumulation), the norms
    :func:`pairwise` computes: pass them as ``x_square`` / ``y_square`` when one video enters several matrices
    (FlashVID's ADTS and TSTM cosines) so that it is read once for them. One Triton pass on CUDA."""
    _check(x, None, "dot", NORM_EPS, 1.0)
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16) or 0 in x.shape or not resolve_use_triton(
        x, use_triton
    ):
        return x.float().square().sum(-1)
    from ._triton.pairwise import prepare_operand

    return prepare_operand(x if x.stride(2) == 1 else x.contiguous(), False, True)[1]


def _check_square(name: str, square: torch.Tensor | None, operand: torch.Tensor) -> None:
    if square is not None and (
        not isinstance(square, torch.Tensor) or tuple(square.shape) != tuple(operand.shape[:2])
        or square.dtype != torch.float32 or square.device != operand.device
    ):
        raise ValueError(f"{name} must be the float32 [B, rows] squared norms ({tuple(operand.shape[:2])}) on "
                         f"{operand.device}")


def pairwise(
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    kind: str = "dot",
    eps: float = NORM_EPS,
    divide_by: float = 1.0,
    out: torch.Tensor | None = None,
    x_square: torch.Tensor | None = None,
    y_square: torch.Tensor | None = None,
    use_triton: bool | None = None,
) -> torch.Tensor:
    """``[B, M, N]`` float32 matrix of ``kind`` between the rows of ``x`` ``[B, M, D]`` and of ``y`` ``[B, N, D]``.

    Args:
        x, y: float tensors on one device (``y = x`` when omitted). Views are read in place (e.g. ``x[1:]`` and
            ``x[:-1]`` to compare every frame with the previous one) as long as ``D`` is contiguous. When the dtypes
            differ (bf16 tokens against a float32 mean, say), both are converted to float32 in registers.
        kind: ``"dot"``, ``"cosine"``, ``"cosine_distance"`` or ``"euclidean"`` (see the module docstring).
        eps: lower bound of a norm in the cosines.
        divide_by: positive divisor of the result.
        out: optional contiguous float32 ``[B, M, N]`` tensor to write into.
        x_square, y_square: optional float32 ``[B, M]`` / ``[B, N]`` squared norms of the rows of ``x`` / ``y``
            (:func:`squared_norms`; views are fine), used instead of computing them again (Triton path; the PyTorch
            path normalises as it always does). ``y_square`` defaults to ``x_square`` when ``y`` is omitted.
        use_triton: ``None`` chooses (Triton on CUDA), ``True`` / ``False`` force; dtypes other than float32, bf16
            and fp16 (float64) always take the PyTorch path.
    """
    _check(x, y, kind, eps, divide_by)
    _check_square("x_square", x_square, x)
    _check_square("y_square", y_square, x if y is None else y)
    shape = (x.shape[0], x.shape[1], (x if y is None else y).shape[1])
    if out is not None and (
        not isinstance(out, torch.Tensor) or tuple(out.shape) != shape or out.dtype != torch.float32
        or out.device != x.device or not out.is_contiguous()
    ):
        raise ValueError(f"out must be a contiguous float32 tensor of shape {shape} on {x.device}")
    half_or_single = (torch.float32, torch.bfloat16, torch.float16)
    empty = 0 in x.shape or (y is not None and 0 in y.shape)
    if x.dtype not in half_or_single or (y is not None and y.dtype not in half_or_single) or empty or (
        not resolve_use_triton(x, use_triton)
    ):
        result = pairwise_reference(x, y, kind, eps, divide_by)
        return result if out is None else out.copy_(result)
    from ._triton.pairwise import pairwise_dots, prepare_operand

    x = x if x.stride(2) == 1 else x.contiguous()
    y = y if y is None or y.stride(2) == 1 else y.contiguous()
    other = x if y is None else y
    # 16-bit operands of one dtype multiply as they are; otherwise every operand that is not bf16 is split into bf16
    # hi + lo (exact for fp16, 16 of 24 mantissa bits for float32)
    same_half = x.dtype == other.dtype and x.dtype in (torch.bfloat16, torch.float16)
    x_split = not same_half and x.dtype != torch.bfloat16
    y_split = not same_half and other.dtype != torch.bfloat16
    needs_norms = kind != "dot"
    x_operand, x_computed = prepare_operand(x, x_split, needs_norms and x_square is None)
    x_square = x_computed if x_square is None else x_square.contiguous()
    if y is None:
        y_operand, y_square = x_operand, x_square if y_square is None else y_square.contiguous()
    else:
        y_operand, y_computed = prepare_operand(y, y_split, needs_norms and y_square is None)
        y_square = y_computed if y_square is None else y_square.contiguous()
    out = torch.empty(shape, dtype=torch.float32, device=x.device) if out is None else out
    return pairwise_dots(x_operand, y_operand, x.shape[2], x_split, y_split, out, x_square, y_square, kind,
                         float(eps), float(divide_by))


def matmul_float32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` in float32 for ``[M, K] x [K, N]`` or batched ``[B, M, K] x [B, K, N]`` operands.

    On CUDA, with ``b`` in bf16 / fp16 the product runs on the tensor cores with a float32 result
    (``torch.mm`` / ``torch.bmm(..., out_dtype=torch.float32)``) instead of upcasting ``b`` first: a 16-bit ``a`` of
    the same dtype goes in as it is (exact products), a float32 ``a`` against bf16 ``b`` as two bf16 parts
    ``hi + lo`` (16 of its 24 mantissa bits: ``a`` holds weights such as transport plans). Elsewhere (CPU, other
    dtypes) both operands are upcast: the same values up to summation order and the split.
    """
    product = torch.bmm if a.ndim == 3 else torch.mm
    if a.is_cuda and b.dtype in (torch.bfloat16, torch.float16):
        if a.dtype == b.dtype:
            return product(a, b, out_dtype=torch.float32)
        if a.dtype == torch.float32 and b.dtype == torch.bfloat16:
            hi = a.to(torch.bfloat16)
            lo = (a - hi.float()).to(torch.bfloat16)
            return product(hi, b, out_dtype=torch.float32).add_(product(lo, b, out_dtype=torch.float32))
    return product(a.float(), b.float())

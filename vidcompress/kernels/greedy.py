"""Greedy per-frame token selection, every frame at once: k-center (farthest point) and MMR.

Both work on the per-frame cosine matrix ``S = x̂ x̂ᵀ`` (``[T, N, N]``, see :func:`frame_cosine`, from one batched
matmul; never a matrix over the whole video) and pick, per frame ``t``, ``budgets[t]`` distinct tokens one at a time:

* **k-center / max-min** (DivPrune, FlashVID ADTS, ToDRE; ``methods.md`` §0.6), with ``D = 1 - S``: the seed is the
  token farthest from its nearest neighbour, ``argmax_j min_{i != j} D[i, j]``; then ``argmax_j min_{i in Sel}
  D[i, j]``. With ``scale`` (FlashVID's calibration ``w_j``, non-negative) the score of candidate ``j`` is
  ``w_j`` times its distance, which equals the reference's ``min_i D[i, j] w_j`` exactly when ``w_j >= 0``.
* **MMR** (IDPruner, ``methods.md`` §10): the first pick maximises ``importance``; then
  ``argmax_j lambda * importance_j - (1 - lambda) * max_{i in Sel} S[i, j]``.

Differences from the references, all at tie / rounding level: already chosen tokens are never chosen again (the
DivPrune loop does not mask them, which only matters for duplicated tokens); the seed masks the diagonal instead of
taking the second-smallest value of the column (the same unless ``1 - cos(x, x)`` is not the column minimum); a
zero feature vector has cosine 0 to everything instead of NaN. Ties go to the lowest index.

The Triton path runs one program per frame with the running score vector on chip (the k-center seed scores come
from one parallel reduction beforehand) and writes ``indices`` as well as ``order``; it keeps the matrix in fp16
for half-precision inputs (the kernels widen rows in registers, exactly). The PyTorch path loops over the
``max_budget`` steps on the host, batched over frames, on the float32 matrix. A "frame" can be a whole video
(``x`` of shape ``[1, T*N, D]``, DivPrune's global pool): one program then walks ``N`` up to :data:`MAX_TOKENS`
tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from ._dispatch import resolve_use_triton

__all__ = [
    "MAX_TOKENS",
    "calibrated_kcenter",
    "GreedySelection",
    "frame_cosine",
    "greedy_kcenter",
    "greedy_mmr",
    "kcenter_reference",
    "seed_distance",
    "mmr_reference",
]

EPS = 1e-8
#: Most tokens per frame the Triton path holds in one program (the score vector lives in registers, 16 per thread
#: at 32 warps); the PyTorch path has no limit.
MAX_TOKENS = 16384


class GreedySelection(NamedTuple):
    """Per-frame selection, both ``[T, max_budget]`` int64 padded with ``-1`` after ``budgets[t]`` entries.

    ``indices``: the chosen token indices within each frame, ascending. ``order``: the same in the order they were
    picked (``order[t, 0]`` is the seed).
    """

    indices: torch.Tensor
    order: torch.Tensor


def frame_cosine(x: torch.Tensor) -> torch.Tensor:
    """``[T, N, N]`` float32 cosine similarity of the tokens of each frame of ``x`` ``[T, N, D]``.

    Norms are taken in float32. For half-precision inputs (fp16 / bf16) the unit vectors are rounded to fp16 and
    multiplied on the tensor cores (fp32 accumulation, fp16 result: ~5e-4 resolution near 1), as the references do
    in the model dtype (DivPrune's ``torch.mm`` on bf16 features rounds to ~4e-3); float32 inputs stay float32.
    """
    return _cosine(x).float()


def _cosine(x: torch.Tensor) -> torch.Tensor:
    """:func:`frame_cosine` before its float32 cast: fp16 for half-precision inputs (the Triton path keeps it so).

    The unit vectors are ``(x.float() / max(||x||, EPS))`` rounded to fp16 without a float32 copy of ``x``: the
    norm reduction reads ``x`` and accumulates in float32 (the same reduction as on ``x.float()``), and one
    division kernel computes in float32 and writes fp16.
    """
    half = x.dtype in (torch.float16, torch.bfloat16)
    source = x if half else x.float()
    norm = torch.linalg.vector_norm(source, dim=-1, keepdim=True, dtype=torch.float32).clamp_(min=EPS)
    if half:
        unit = torch.div(x, norm, out=torch.empty(x.shape, dtype=torch.float16, device=x.device))
    else:
        unit = source / norm
    return torch.bmm(unit, unit.transpose(1, 2))


def seed_distance(similarity: torch.Tensor) -> torch.Tensor:
    """``[T, N]`` float32 k-center seed score: the cosine distance of each token to its nearest other token of its
    frame, ``min_{i != j} (1 - S[i, j])`` over the column, ``0`` for a frame of one token. One parallel reduction
    (the diagonal is set aside in place and restored), so the serial selection loop starts from it. ``similarity``
    may be fp16: the maximum is taken in its dtype (exact) and widened before the subtraction."""
    diagonal = similarity.diagonal(dim1=1, dim2=2)
    saved = diagonal.clone()
    diagonal.fill_(float("-inf"))
    nearest = 1.0 - similarity.amax(dim=1).float()
    diagonal.copy_(saved)
    return torch.where(nearest == float("inf"), torch.zeros_like(nearest), nearest)


def _ascending(order: torch.Tensor, num_tokens: int) -> torch.Tensor:
    padded = torch.where(order < 0, torch.full_like(order, num_tokens), order)
    ascending = torch.sort(padded, dim=1).values
    return torch.where(ascending == num_tokens, torch.full_like(ascending, -1), ascending)


def kcenter_reference(
    similarity: torch.Tensor, budgets: torch.Tensor, max_budget: int, scale: torch.Tensor | None = None
) -> torch.Tensor:
    """PyTorch path of :func:`greedy_kcenter` on a float32 ``similarity`` ``[T, N, N]``; returns ``order``."""
    frames, num_tokens, _ = similarity.shape
    device = similarity.device
    nearest = seed_distance(similarity)
    distance = 1.0 - similarity
    min_distance = torch.full_like(nearest, float("inf"))
    return _greedy_loop(
        frames,
        num_tokens,
        budgets,
        max_budget,
        first_score=lambda: nearest if scale is None else nearest * scale,
        score=lambda: min_distance if scale is None else min_distance * scale,
        update=lambda rows: min_distance.copy_(torch.minimum(min_distance, distance[rows])),
        device=device,
    )


def mmr_reference(
    similarity: torch.Tensor, importance: torch.Tensor, budgets: torch.Tensor, max_budget: int, mmr_lambda: float
) -> torch.Tensor:
    """PyTorch path of :func:`greedy_mmr` on a float32 ``similarity`` ``[T, N, N]``; returns ``order``."""
    frames, num_tokens, _ = similarity.shape
    importance = importance.float()
    weighted_importance = float(mmr_lambda) * importance
    max_similarity = torch.full_like(importance, -2.0)
    return _greedy_loop(
        frames,
        num_tokens,
        budgets,
        max_budget,
        first_score=lambda: importance,
        score=lambda: weighted_importance - float(1.0 - mmr_lambda) * max_similarity,
        update=lambda rows: max_similarity.copy_(torch.maximum(max_similarity, similarity[rows])),
        device=similarity.device,
    )


def _greedy_loop(
    frames: int,
    num_tokens: int,
    budgets: torch.Tensor,
    max_budget: int,
    first_score: Callable[[], torch.Tensor],
    score: Callable[[], torch.Tensor],
    update: Callable[[tuple[torch.Tensor, torch.Tensor]], object],
    device: torch.device,
) -> torch.Tensor:
    """Shared step loop of the reference paths: mask chosen tokens, arg-max (first maximum), update."""
    order = torch.full((frames, max_budget), -1, dtype=torch.long, device=device)
    chosen = torch.zeros(frames, num_tokens, dtype=torch.bool, device=device)
    frame_index = torch.arange(frames, device=device)
    for step in range(max_budget):
        current = (first_score() if step == 0 else score()).masked_fill(chosen, float("-inf"))
        pick = current.argmax(dim=1)
        active = step < budgets
        order[:, step] = torch.where(active, pick, torch.full_like(pick, -1))
        chosen[frame_index, pick] |= active
        update((frame_index, pick))
    return order


def _check_inputs(
    x: torch.Tensor, budgets: torch.Tensor | int, max_budget: int | None, validate: bool
) -> tuple[torch.Tensor, int]:
    if not isinstance(x, torch.Tensor) or x.ndim != 3 or not x.is_floating_point() or 0 in x.shape:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a non-empty floating-point [T, N, D] tensor, got {shape}")
    frames, num_tokens, _ = x.shape
    if isinstance(budgets, bool):
        raise ValueError("budgets must be an int or an integer tensor [T], got a bool")
    if isinstance(budgets, int):
        if max_budget is None:
            max_budget = budgets
        budgets = torch.full((frames,), budgets, dtype=torch.long, device=x.device)
    elif (
        not isinstance(budgets, torch.Tensor)
        or budgets.shape != (frames,)
        or budgets.is_floating_point()
        or budgets.dtype == torch.bool
    ):
        raise ValueError(f"budgets must be an int or an integer tensor of shape ({frames},)")
    elif budgets.device != x.device:
        raise ValueError(f"budgets is on {budgets.device} but x is on {x.device}")
    if max_budget is None:
        max_budget = int(budgets.max())  # host sync; pass max_budget on the hot path
    if isinstance(max_budget, bool) or not isinstance(max_budget, int) or not 0 <= max_budget <= num_tokens:
        raise ValueError(f"max_budget must be an int in [0, N={num_tokens}], got {max_budget!r}")
    if validate and not bool(((budgets >= 0) & (budgets <= max_budget)).all()):
        raise ValueError(f"every budget must lie in [0, max_budget={max_budget}]")
    return budgets.long().contiguous(), max_budget


def _check_per_token(name: str, value: torch.Tensor, x: torch.Tensor, validate: bool, non_negative: bool) -> None:
    if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(x.shape[:2]) or not value.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor of shape {tuple(x.shape[:2])}")
    if value.device != x.device:
        raise ValueError(f"{name} is on {value.device} but x is on {x.device}")
    if validate:
        bad = ~torch.isfinite(value) | (value < 0) if non_negative else ~torch.isfinite(value)
        if bool(bad.any()):
            raise ValueError(f"{name} must be finite{' and non-negative' if non_negative else ''}")


def _check_out(out: GreedySelection | None, frames: int, max_budget: int, device: torch.device) -> None:
    if out is None:
        return
    for name, tensor in zip(("indices", "order"), out):
        if tuple(tensor.shape) != (frames, max_budget) or tensor.dtype != torch.long or tensor.device != device:
            raise ValueError(f"out.{name} must be an int64 tensor of shape {(frames, max_budget)} on {device}")
        if not tensor.is_contiguous():
            raise ValueError(f"out.{name} must be contiguous")


def _finish(order: torch.Tensor, num_tokens: int, out: GreedySelection | None) -> GreedySelection:
    """The reference paths' result from ``order`` (``indices`` by a sort), written into ``out`` if given."""
    indices = _ascending(order, num_tokens)
    if out is None:
        return GreedySelection(indices=indices, order=order)
    out.indices.copy_(indices)
    out.order.copy_(order)
    return out


def _selection(out: GreedySelection | None, frames: int, max_budget: int, device: torch.device) -> GreedySelection:
    """``out``, or new uninitialised ``[T, max_budget]`` int64 tensors for the Triton path to fill."""
    if out is not None:
        return out
    return GreedySelection(*(torch.empty(frames, max_budget, dtype=torch.long, device=device) for _ in range(2)))


def greedy_kcenter(
    x: torch.Tensor,
    budgets: torch.Tensor | int,
    max_budget: int | None = None,
    scale: torch.Tensor | None = None,
    *,
    out: GreedySelection | None = None,
    use_triton: bool | None = None,
    validate: bool = True,
) -> GreedySelection:
    """Farthest-point (max-min cosine distance) selection of ``budgets[t]`` tokens in each frame of ``x``.

    Args:
        x: ``[T, N, D]`` float tokens.
        budgets: ``[T]`` integer tensor (per-frame counts) or one int for every frame.
        max_budget: width of the output, at least every budget; known to the host (``None``: the largest budget,
            which reads ``budgets`` back to the host).
        scale: optional ``[T, N]`` non-negative per-candidate weight multiplying the distance (FlashVID ADTS).
        out: optional :class:`GreedySelection` of int64 ``[T, max_budget]`` tensors to write into.
        use_triton: ``None`` chooses (Triton on CUDA), ``True`` / ``False`` force.
        validate: check budget and ``scale`` values (host sync); shapes are always checked.
    """
    budgets, max_budget = _check_inputs(x, budgets, max_budget, validate)
    if scale is not None:
        _check_per_token("scale", scale, x, validate, non_negative=True)
        scale = scale.float().contiguous()
    _check_out(out, x.shape[0], max_budget, x.device)
    if not resolve_use_triton(x, use_triton):
        return _finish(kcenter_reference(frame_cosine(x), budgets, max_budget, scale), x.shape[1], out)
    from ._triton.greedy import launch_kcenter

    selection = _selection(out, x.shape[0], max_budget, x.device)
    similarity = _cosine(x)
    launch_kcenter(similarity, seed_distance(similarity), scale, budgets, selection.order, selection.indices)
    return selection


def greedy_mmr(
    x: torch.Tensor,
    importance: torch.Tensor,
    budgets: torch.Tensor | int,
    max_budget: int | None = None,
    mmr_lambda: float = 0.5,
    *,
    out: GreedySelection | None = None,
    use_triton: bool | None = None,
    validate: bool = True,
) -> GreedySelection:
    """Maximal-marginal-relevance selection of ``budgets[t]`` tokens in each frame of ``x``.

    Args:
        x: ``[T, N, D]`` float tokens.
        importance: ``[T, N]`` float importance (IDPruner min-max normalises it over its pool first).
        budgets, max_budget, out, use_triton, validate: as in :func:`greedy_kcenter`.
        mmr_lambda: weight of importance against redundancy, in [0, 1] (IDPruner default 0.5).
    """
    budgets, max_budget = _check_inputs(x, budgets, max_budget, validate)
    _check_per_token("importance", importance, x, validate, non_negative=False)
    if isinstance(mmr_lambda, bool) or not isinstance(mmr_lambda, (int, float)) or not 0.0 <= mmr_lambda <= 1.0:
        raise ValueError(f"mmr_lambda must be a number in [0, 1], got {mmr_lambda!r}")
    _check_out(out, x.shape[0], max_budget, x.device)
    importance = importance.float().contiguous()
    if not resolve_use_triton(x, use_triton):
        return _finish(mmr_reference(frame_cosine(x), importance, budgets, max_budget, mmr_lambda), x.shape[1], out)
    from ._triton.greedy import launch_mmr

    selection = _selection(out, x.shape[0], max_budget, x.device)
    launch_mmr(_cosine(x), importance, budgets, float(mmr_lambda), selection.order, selection.indices)
    return selection


def calibrated_kcenter(
    distance: torch.Tensor, weight: torch.Tensor, count: int, *, use_triton: bool | None = None
) -> torch.Tensor:
    """FlashVID's ADTS max-min with signed column weights, ``count`` picks in every frame (all frames at once).

    With the distance ``D`` ``[T, N, N]`` (float32, symmetric) and weight ``w`` ``[T, N]``, the first pick is
    ``argmax_j min_{i != j} D_ij * w_j`` and each next one ``argmax_j min_{i in S} D_ij * w_j`` over unselected ``j``;
    for ``w_j < 0`` the minimum of the products is ``w_j`` times the maximum distance. Products go through
    ``nan_to_num(nan=0)``; ties go to the lower index. Returns the ``[T, N]`` int64 selection order, ``N`` for
    tokens not selected. The Triton path runs every step of a frame in one program; the PyTorch path loops over the
    ``count`` steps, batched over frames.
    """
    frames, num_tokens, _ = distance.shape
    eye = torch.eye(num_tokens, dtype=torch.bool, device=distance.device)
    nearest = distance.masked_fill(eye, float("inf")).amin(1)
    farthest = distance.masked_fill(eye, float("-inf")).amax(1)
    weight = weight.float()
    if count > 0 and resolve_use_triton(distance, use_triton):
        from ._triton.greedy import launch_calibrated

        return launch_calibrated(distance.contiguous(), nearest, farthest, weight.contiguous(), count)
    order = torch.full((frames, num_tokens), num_tokens, dtype=torch.long, device=distance.device)
    chosen = torch.zeros(frames, num_tokens, dtype=torch.bool, device=distance.device)
    rows = torch.arange(frames, device=distance.device)
    for step in range(count):
        value = torch.where(weight >= 0, weight * nearest, weight * farthest).nan_to_num(nan=0.0)
        pick = value.masked_fill(chosen, float("-inf")).argmax(1)
        chosen[rows, pick] = True
        order[rows, pick] = step
        row = distance[rows, pick]  # [T, N] distances to the new token
        if step == 0:
            nearest, farthest = row, row
        else:
            nearest, farthest = torch.minimum(nearest, row), torch.maximum(farthest, row)
    return order

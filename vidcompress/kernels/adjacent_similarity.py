"""Cosine similarity between frames ``lag`` apart of a video ``[T, N, D]``, every frame pair in one launch.

Row ``r`` of every output compares frame ``r + lag`` (the later frame) with frame ``r`` (the earlier one), so the
outputs have ``T - lag`` rows; ``lag = 1`` gives adjacent frames.

* :func:`aligned_cosine` — position-aligned ``cos(x[r + lag, n], x[r, n])`` (HoliTom, DySeg, DyCoke).
* :func:`aligned_above` — the same thresholded: ``cos > threshold`` as a bool mask, without storing the cosines.
* :func:`best_match` — for each token of frame ``r + lag``, the arg-max and max of its cosine over the tokens of
  frame ``r`` (TSTM parents; not position-aligned), optionally over allowed candidates only.

Cosine: ``<a, b> / max(|a| |b|, eps)`` accumulated in float32 (a zero vector has cosine 0 to everything). Ties of
the arg-max go to the lowest index. The Triton paths never build the ``N x N`` matrices in memory.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ._dispatch import resolve_use_triton

__all__ = [
    "BestMatch",
    "aligned_cosine",
    "aligned_above",
    "best_match",
    "aligned_cosine_reference",
    "best_match_reference",
]

EPS = 1e-8


class BestMatch(NamedTuple):
    """``index`` ``[T - lag, N]`` int64 token of frame ``r`` (``-1`` if no candidate is allowed) and ``value``
    ``[T - lag, N]`` float32 cosine (``-inf`` if none)."""

    index: torch.Tensor
    value: torch.Tensor


def aligned_cosine_reference(x: torch.Tensor, lag: int = 1) -> torch.Tensor:
    """PyTorch path of :func:`aligned_cosine`."""
    later, earlier = x[lag:].float(), x[:-lag].float()
    dot = (later * earlier).sum(-1)
    norms = (later * later).sum(-1).sqrt() * (earlier * earlier).sum(-1).sqrt()
    return dot / norms.clamp(min=EPS)


def best_match_reference(x: torch.Tensor, lag: int = 1, allowed: torch.Tensor | None = None) -> BestMatch:
    """PyTorch path of :func:`best_match`: one batched matmul of all frame pairs."""
    later, earlier = x[lag:].float(), x[:-lag].float()
    dots = torch.bmm(later, earlier.transpose(1, 2))
    norms = (later * later).sum(-1).sqrt()[:, :, None] * (earlier * earlier).sum(-1).sqrt()[:, None, :]
    cosine = dots / norms.clamp(min=EPS)
    if allowed is not None:
        cosine = cosine.masked_fill(~allowed[:-lag, None, :], float("-inf"))
    value, index = cosine.max(dim=-1)
    index = torch.where(value == float("-inf"), torch.full_like(index, -1), index)
    return BestMatch(index=index, value=value)


def _check_video(x: torch.Tensor, lag: int) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 3 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a floating-point [T, N, D] tensor, got {shape}")
    if isinstance(lag, bool) or not isinstance(lag, int) or lag < 1:
        raise ValueError(f"lag must be a positive int, got {lag!r}")
    if x.shape[0] <= lag:
        raise ValueError(f"need more than lag={lag} frames, got T={x.shape[0]}")
    if x.shape[1] == 0 or x.shape[2] == 0:
        raise ValueError(f"x must have at least one token and one channel, got shape {tuple(x.shape)}")


def _check_out(
    name: str, out: torch.Tensor | None, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
) -> None:
    if out is None:
        return
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != shape or out.dtype != dtype or out.device != device:
        raise ValueError(f"{name} must be a contiguous {shape} {dtype} tensor on {device}")
    if not out.is_contiguous():
        raise ValueError(f"{name} must be contiguous")


def _inner_contiguous(x: torch.Tensor) -> torch.Tensor:
    return x if x.shape[2] == 1 or x.stride(2) == 1 else x.contiguous()


def aligned_cosine(
    x: torch.Tensor, lag: int = 1, *, out: torch.Tensor | None = None, use_triton: bool | None = None
) -> torch.Tensor:
    """``[T - lag, N]`` float32: ``out[r, n] = cos(x[r + lag, n], x[r, n])``.

    Args:
        x: ``[T, N, D]`` float video tokens.
        lag: frame distance (1: adjacent frames; DyCoke's second pass uses 2).
        out: optional float32 ``[T - lag, N]`` contiguous tensor to write into.
        use_triton: ``None`` chooses (Triton on CUDA), ``True`` / ``False`` force.
    """
    _check_video(x, lag)
    shape = (x.shape[0] - lag, x.shape[1])
    _check_out("out", out, shape, torch.float32, x.device)
    if not resolve_use_triton(x, use_triton):
        result = aligned_cosine_reference(x, lag)
        return result if out is None else out.copy_(result)
    from ._triton.adjacent_similarity import launch_aligned_cosine

    out = torch.empty(shape, dtype=torch.float32, device=x.device) if out is None else out
    return launch_aligned_cosine(_inner_contiguous(x), lag, EPS, out)


def aligned_above(
    x: torch.Tensor,
    threshold: float,
    lag: int = 1,
    *,
    out: torch.Tensor | None = None,
    use_triton: bool | None = None,
) -> torch.Tensor:
    """``[T - lag, N]`` bool: ``cos(x[r + lag, n], x[r, n]) > threshold`` (strictly greater).

    ``threshold`` must be a finite number in [-1, 1]; ``out`` an optional bool tensor to write into.
    """
    _check_video(x, lag)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not -1.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be a number in [-1, 1], got {threshold!r}")
    shape = (x.shape[0] - lag, x.shape[1])
    _check_out("out", out, shape, torch.bool, x.device)
    if not resolve_use_triton(x, use_triton):
        result = aligned_cosine_reference(x, lag) > float(threshold)
        return result if out is None else out.copy_(result)
    from ._triton.adjacent_similarity import launch_aligned_cosine

    out = torch.empty(shape, dtype=torch.bool, device=x.device) if out is None else out
    launch_aligned_cosine(_inner_contiguous(x), lag, EPS, out.view(torch.int8), threshold=float(threshold))
    return out


def best_match(
    x: torch.Tensor,
    lag: int = 1,
    allowed: torch.Tensor | None = None,
    *,
    out: BestMatch | None = None,
    use_triton: bool | None = None,
) -> BestMatch:
    """For each token of frame ``r + lag``, its most similar token in frame ``r`` and that cosine.

    Args:
        x: ``[T, N, D]`` float video tokens (fp16 / bf16 / fp32; fp64 always takes the PyTorch path).
        lag: frame distance.
        allowed: optional ``[T, N]`` bool: which tokens may be chosen as a match (e.g. FlashVID's TSTM excludes
            the tokens ADTS already kept). Rows with no allowed candidate get index ``-1`` and value ``-inf``.
        out: optional :class:`BestMatch` of contiguous int64 / float32 ``[T - lag, N]`` tensors to write into.
        use_triton: ``None`` chooses (Triton on CUDA), ``True`` / ``False`` force.

    Returns:
        :class:`BestMatch` ``(index, value)``, ties broken towards the lowest index.
    """
    _check_video(x, lag)
    shape = (x.shape[0] - lag, x.shape[1])
    if allowed is not None:
        if not isinstance(allowed, torch.Tensor) or allowed.dtype != torch.bool or tuple(allowed.shape) != x.shape[:2]:
            raise ValueError(f"allowed must be a bool tensor of shape {tuple(x.shape[:2])}")
        if allowed.device != x.device:
            raise ValueError(f"allowed is on {allowed.device} but x is on {x.device}")
    if out is not None:
        _check_out("out.index", out.index, shape, torch.long, x.device)
        _check_out("out.value", out.value, shape, torch.float32, x.device)
    if x.dtype == torch.float64 or not resolve_use_triton(x, use_triton):
        result = best_match_reference(x, lag, allowed)
        if out is None:
            return result
        out.index.copy_(result.index)
        out.value.copy_(result.value)
        return out
    from ._triton.adjacent_similarity import launch_best_match

    if out is None:
        out = BestMatch(
            torch.empty(shape, dtype=torch.long, device=x.device),
            torch.empty(shape, dtype=torch.float32, device=x.device),
        )
    flags = None if allowed is None else allowed.contiguous().view(torch.int8)
    launch_best_match(_inner_contiguous(x), lag, EPS, flags, out.index, out.value)
    return out

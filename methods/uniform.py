"""``uniform``: evenly spaced tokens in time and space."""

from __future__ import annotations

import functools
import math

import torch

from vidcompress.assemble import host_to_device, select_tokens
from vidcompress.compressor import Compressor
from vidcompress.registry import register_compressor
from vidcompress.tokens import CompressedTokens, VideoTokens


def frame_budgets(num_frames: int, count: int) -> list[int]:
    """Split ``count`` tokens over frames as evenly as possible; the remainder goes to frames at the centres of
    equal time intervals. No frames take no tokens."""
    if num_frames == 0:
        if count:
            raise ValueError(f"cannot split {count} tokens over no frames")
        return []
    base, remainder = divmod(count, num_frames)
    budgets = [base] * num_frames
    for j in range(remainder):
        budgets[(2 * j + 1) * num_frames // (2 * remainder)] += 1
    return budgets


def lattice(height: int, width: int, count: int) -> list[int]:
    """Raster indices of ``count`` evenly spaced cells of an ``height x width`` frame.

    A ``rows x cols`` lattice with the frame's aspect ratio and ``rows * cols >= count`` is laid over the frame,
    each lattice point at the centre of its cell; when the lattice has more points than ``count``, evenly spaced
    points of it are kept.
    """
    if count == 0:
        return []
    rows = min(height, max(1, round(math.sqrt(count * height / width))))
    cols = min(width, math.ceil(count / rows))
    if rows * cols < count:
        rows = min(height, math.ceil(count / cols))
    points = [
        ((2 * i + 1) * height // (2 * rows)) * width + (2 * j + 1) * width // (2 * cols)
        for i in range(rows)
        for j in range(cols)
    ]
    total = len(points)
    return [points[(2 * k + 1) * total // (2 * count)] for k in range(count)]


@register_compressor("uniform", paper="(baseline) uniform spatio-temporal subsampling, cf. VidCom2 / DivPrune tables")
class Uniform(Compressor):
    """Keeps evenly spaced tokens: the budget is split evenly over frames, each frame keeps a regular lattice.

    Content-blind, so it costs nothing and is the floor any content-aware method has to beat. The papers' "uniform"
    baselines pool spatially instead of subsampling; subsampling keeps every output an original token, so positions
    stay exact on both models.
    """

    def compress(self, tokens: VideoTokens, count: int) -> CompressedTokens:
        return select_tokens(tokens, uniform_indices(tokens.grid, count, tokens.features.device))


@functools.lru_cache(maxsize=64)
def uniform_indices(grid: tuple[int, int, int], count: int, device: torch.device) -> torch.Tensor:
    """Flat indices kept by :class:`Uniform`, on ``device``; cached per (grid, count, device), so a call after the
    first one neither computes nor copies anything. Callers must not modify the returned tensor."""
    t, h, w = grid
    indices = [
        frame * h * w + cell for frame, budget in enumerate(frame_budgets(t, count)) for cell in lattice(h, w, budget)
    ]
    return host_to_device(torch.tensor(indices, dtype=torch.long), device)

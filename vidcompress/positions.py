"""Qwen2.5-VL 3-D rotary (M-RoPE) positions, computed by the project itself.

``transformers`` changed ``get_rope_index`` three times inside 5.x, so the adapter never relies on it: positions are
computed here, for the full prompt, before compression; kept tokens then keep their own ``(t, h, w)`` and the text
keeps its positions (``transformers.md`` §6).

Semantics (``rope_compat="reference"``, the default; the Qwen reference code, transformers 4.x and vLLM without
EVS): text tokens take consecutive positions; a video of ``T`` temporal groups on a merged ``H' x W'`` grid starting
at ``p`` takes ``t = floor(arange(T) * interval) + p``, ``h = arange(H') + p``, ``w = arange(W') + p`` with
``interval = tokens_per_second * second_per_grid_ts`` (fractional values allowed), and the text after the video
continues at ``max(t, h, w) + 1``.

``rope_compat="hf"`` reproduces transformers 5.18 – 5.23 instead, where the text after a video continues at
``p + max(H', W')`` — an overlap with the video's temporal ids that the checkpoints were not trained with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from .tokens import Grid

RopeCompat = Literal["reference", "hf"]

__all__ = ["RopeCompat", "video_positions", "mrope_positions"]


def video_positions(grid: Grid, start: int, interval: float) -> torch.Tensor:
    """``[3, T*H'*W']`` long positions of one video's merged tokens, raster order within each temporal group."""
    t, h, w = grid
    temporal = (torch.arange(t) * float(interval)).long() + start
    rows = torch.arange(h) + start
    cols = torch.arange(w) + start
    tt, hh, ww = torch.meshgrid(temporal, rows, cols, indexing="ij")
    return torch.stack([tt, hh, ww]).reshape(3, -1)


def mrope_positions(
    input_ids: torch.Tensor,
    video_token_id: int,
    video_grids: Sequence[Grid],
    intervals: Sequence[float],
    rope_compat: RopeCompat = "reference",
) -> tuple[torch.Tensor, int]:
    """Positions of one unpadded prompt.

    Args:
        input_ids: ``[L]`` token ids of one sample, without padding.
        video_token_id: the placeholder id; each maximal run of it is one video.
        video_grids: merged ``(T, H', W')`` grid of each video, in prompt order.
        intervals: ``tokens_per_second * second_per_grid_ts`` of each video.
        rope_compat: ``"reference"`` (default) or ``"hf"``, see the module docstring.

    Returns:
        ``([3, L] long positions, next free position)``; decoding continues at the next free position.
    """
    if rope_compat not in ("reference", "hf"):
        raise ValueError(f"rope_compat must be 'reference' or 'hf', got {rope_compat!r}")
    if input_ids.ndim != 1:
        raise ValueError(f"input_ids must be 1-D (one unpadded sample), got shape {tuple(input_ids.shape)}")
    if len(video_grids) != len(intervals):
        raise ValueError(f"{len(video_grids)} video grids but {len(intervals)} intervals")
    is_video = (input_ids == video_token_id).tolist()
    length = len(is_video)
    positions = torch.empty(3, length, dtype=torch.long)
    next_position, index, video = 0, 0, 0
    while index < length:
        if not is_video[index]:
            positions[:, index] = next_position
            next_position += 1
            index += 1
            continue
        if video >= len(video_grids):
            raise ValueError(f"the prompt has more video placeholder runs than the {len(video_grids)} grid(s) given")
        grid = video_grids[video]
        count = grid[0] * grid[1] * grid[2]
        run = index
        while run < length and is_video[run]:
            run += 1
        if run - index != count:
            raise ValueError(f"video {video} has {run - index} placeholders but its grid {grid} holds {count} tokens")
        span = video_positions(grid, next_position, intervals[video])
        positions[:, index:run] = span
        if rope_compat == "reference":
            next_position = int(span.max()) + 1
        else:
            next_position = next_position + max(grid[1], grid[2])
        index, video = run, video + 1
    if video != len(video_grids):
        raise ValueError(f"{len(video_grids)} grid(s) given but the prompt holds {video} video(s)")
    return positions, next_position

"""The frame stage: which decoded candidate frames reach the vision encoder, and at what size.

A frame-stage method (``keyframe``, ``f2c``) implements :meth:`Compressor.select_frames`; it sees the candidate frames
the user asked for (``num_frames`` / ``fps``), their timestamps and the question, and returns a
:class:`FrameSelection`. ``VideoLLM.ask`` then keeps only the chosen frames, resizes them when asked, and runs the
processor and the encoder on those alone, so the saved encoder time shows in the stats.

Models that encode frames in temporal groups (Qwen2.5-VL: two frames per group, ``temporal_patch_size = 2``) keep whole
groups: :func:`complete_groups` adds the partner of every chosen frame in its group of the candidate sequence. Methods
receive ``frames_per_step`` so they can choose whole groups themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["FrameSelection", "complete_groups", "resize_frames"]


@dataclass(frozen=True)
class FrameSelection:
    """A frame-stage decision.

    Attributes:
        indices: ``[K]`` int64, strictly increasing indices into the candidate frames, ``K >= 1``.
        size: optional ``(height, width)`` in pixels for every chosen frame (one size for the whole selection: the
            processors take one size per video); ``None`` keeps the decoded size.
        scores: ``[T]`` float per-candidate score the method used (novelty, relevance), for inspection.
    """

    indices: np.ndarray
    size: tuple[int, int] | None = None
    scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        indices = np.asarray(self.indices)
        if indices.ndim != 1 or indices.size == 0 or not np.issubdtype(indices.dtype, np.integer):
            raise ValueError(f"indices must be a non-empty 1-D integer array, got {indices!r}")
        if bool((indices < 0).any()) or bool((np.diff(indices) <= 0).any()):
            raise ValueError(f"indices must be non-negative and strictly increasing, got {indices.tolist()}")
        object.__setattr__(self, "indices", indices.astype(np.int64))
        if self.size is not None:
            if len(self.size) != 2 or any(int(v) != v or v <= 0 for v in self.size):
                raise ValueError(f"size must be a (height, width) pair of positive integers, got {self.size!r}")
            object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))
        if self.scores is not None:
            object.__setattr__(self, "scores", np.asarray(self.scores, dtype=np.float64))

    def check(self, num_candidates: int) -> None:
        """Raise ``ValueError`` unless the selection fits ``num_candidates`` candidate frames."""
        if int(self.indices[-1]) >= num_candidates:
            raise ValueError(f"frame index {int(self.indices[-1])} is out of range for {num_candidates} candidates")
        if self.scores is not None and self.scores.shape != (num_candidates,):
            raise ValueError(f"scores must have shape ({num_candidates},), got {self.scores.shape}")


def complete_groups(indices: np.ndarray, num_candidates: int, frames_per_step: int) -> np.ndarray:
    """Every frame of each temporal group (of ``frames_per_step`` consecutive candidates) that holds a chosen frame.

    Groups are aligned to the candidate sequence (frames ``2g`` and ``2g + 1`` on Qwen2.5-VL), so a chosen group is
    encoded exactly as uniform sampling would have encoded it. A last group cut short by an odd candidate count keeps
    its one frame (the processor pads it by repetition, as it does without a frame stage).
    """
    if frames_per_step == 1:
        return np.asarray(indices, dtype=np.int64)
    groups = np.unique(np.asarray(indices) // frames_per_step)
    members = (groups[:, None] * frames_per_step + np.arange(frames_per_step)[None]).reshape(-1)
    return members[members < num_candidates].astype(np.int64)


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``uint8`` frames ``[T, H, W, 3]`` resized to ``size`` (bilinear, antialiased when shrinking)."""
    if tuple(frames.shape[1:3]) == tuple(size):
        return frames
    pixels = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    resized = F.interpolate(pixels, size=size, mode="bilinear", antialias=True, align_corners=False)
    return resized.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()

"""Small generated videos for demos and tests (no download needed)."""

from __future__ import annotations

from os import PathLike

import numpy as np

__all__ = ["moving_square_video", "write_video"]


def moving_square_video(num_frames: int = 16, size: int = 112, seed: int = 0) -> np.ndarray:
    """``uint8 [num_frames, size, size, 3]``: a coloured square moving left to right over a textured background."""
    if num_frames <= 0 or size < 16:
        raise ValueError(f"need num_frames > 0 and size >= 16, got {num_frames}, {size}")
    rng = np.random.default_rng(seed)
    background = rng.integers(40, 90, size=(size, size, 3), dtype=np.uint8)
    colour = rng.integers(150, 256, size=3, dtype=np.uint8)
    side = size // 4
    top = (size - side) // 2
    frames = np.repeat(background[None], num_frames, axis=0)
    for index in range(num_frames):
        left = round(index * (size - side) / max(1, num_frames - 1))
        frames[index, top : top + side, left : left + side] = colour
    return frames


def write_video(path: str | PathLike, frames: np.ndarray, fps: float = 8.0) -> None:
    """Write RGB ``uint8 [T, H, W, 3]`` frames to an MP4 file with OpenCV."""
    import cv2

    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot open {path} for writing")
    try:
        for frame in frames:
            writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    finally:
        writer.release()

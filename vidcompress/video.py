"""Video input: decode a file with decord, or accept frames already in memory, and sample them.

Every path returns a :class:`VideoClip` — ``uint8`` frames ``[T, H, W, 3]`` with their timestamps and the rate at
which they were sampled (the Qwen processor needs the real rate for its temporal positions, ``transformers.md``
§6.4). Only the sampled frames are decoded.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import torch

__all__ = ["VideoClip", "VideoInput", "load_video", "sample_indices", "DEFAULT_INPUT_FPS"]

#: Frame rate assumed for frames handed in as an array or a list when the caller gives none.
DEFAULT_INPUT_FPS = 2.0

VideoInput = Union[str, os.PathLike, np.ndarray, torch.Tensor, Sequence, "VideoClip"]


@dataclass(frozen=True)
class VideoClip:
    """Sampled frames of one video.

    Attributes:
        frames: ``uint8`` array ``[T, H, W, 3]`` (RGB).
        timestamps: ``float`` array ``[T]``, seconds from the start of the source.
        sampled_fps: frames per second of the sampled sequence (``T / duration`` for uniform sampling).
        source: file path, or a short description of the in-memory input.
    """

    frames: np.ndarray
    timestamps: np.ndarray
    sampled_fps: float
    source: str

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


def sample_indices(
    total: int,
    native_fps: float,
    num_frames: int | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
) -> np.ndarray:
    """Indices of the frames to keep from ``total`` frames recorded at ``native_fps``.

    ``num_frames``: that many, evenly spread over the whole video, first and last included, positions floored as
    lmms-eval's ``np.linspace(..., dtype=int)`` does.
    ``fps``: one frame every ``native_fps / fps`` frames. Neither: every frame. ``max_frames`` then caps the count by
    even subsampling.
    """
    if num_frames is not None and fps is not None:
        raise ValueError("give num_frames or fps, not both")
    if total <= 0:
        raise ValueError("the video has no frames")
    if num_frames is not None:
        if isinstance(num_frames, bool) or int(num_frames) != num_frames or num_frames <= 0:
            raise ValueError(f"num_frames must be a positive integer, got {num_frames!r}")
        indices = np.linspace(0, total - 1, int(num_frames)).astype(np.int64)
    elif fps is not None:
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps!r}")
        step = native_fps / fps
        indices = np.floor(np.arange(0, total, step)).astype(np.int64) if step > 0 else np.arange(total)
    else:
        indices = np.arange(total, dtype=np.int64)
    if max_frames is not None:
        if int(max_frames) != max_frames or max_frames <= 0:
            raise ValueError(f"max_frames must be a positive integer, got {max_frames!r}")
        if len(indices) > max_frames:
            indices = indices[np.linspace(0, len(indices) - 1, int(max_frames)).astype(np.int64)]
    return indices


def _as_frame_array(value: np.ndarray | torch.Tensor, what: str) -> np.ndarray:
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if array.ndim != 4:
        raise ValueError(f"{what} must have shape [T, H, W, 3] or [T, 3, H, W], got {array.shape}")
    if array.shape[-1] != 3 and array.shape[1] == 3:
        array = array.transpose(0, 2, 3, 1)
    if array.shape[-1] != 3:
        raise ValueError(f"{what} must have 3 colour channels (RGB), got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0 or array.shape[2] == 0:
        raise ValueError(f"{what} is empty: shape {array.shape}")
    if array.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8 RGB in [0, 255], got dtype {array.dtype}; convert it explicitly")
    return np.ascontiguousarray(array)


def _from_frames(frames: np.ndarray, description: str, input_fps: float, **sampling: int | float | None) -> VideoClip:
    indices = sample_indices(frames.shape[0], input_fps, **sampling)
    kept = frames[indices]
    duration = frames.shape[0] / input_fps
    return VideoClip(
        frames=kept,
        timestamps=indices.astype(np.float64) / input_fps,
        sampled_fps=len(indices) / duration,
        source=description,
    )


@contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence what FFmpeg / decord print on file descriptor 2; our own error message says what went wrong."""
    try:
        saved = os.dup(2)
    except OSError:  # no usable descriptor 2 (embedded interpreters)
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _decode_file(path: Path, **sampling: int | float | None) -> VideoClip:
    if not path.exists():
        raise FileNotFoundError(f"video file not found: {path}")
    if path.is_dir():
        raise ValueError(f"video path is a directory, not a file: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"video file is empty: {path}")
    import decord

    try:
        with _quiet_native_stderr():
            reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        total = len(reader)
        native_fps = float(reader.get_avg_fps())
    except Exception as error:  # decord raises its own DECORDError, RuntimeError or OSError subclasses
        raise ValueError(f"cannot decode video file {path}: {str(error).splitlines()[0]}") from error
    if total == 0:
        raise ValueError(f"video file has no frames: {path}")
    if not native_fps > 0:
        raise ValueError(f"video file reports a frame rate of {native_fps}: {path}")
    indices = sample_indices(total, native_fps, **sampling)
    try:
        frames = reader.get_batch(indices.tolist()).asnumpy()
    except Exception as error:
        raise ValueError(f"cannot decode frames of video file {path}: {str(error).splitlines()[0]}") from error
    duration = total / native_fps
    return VideoClip(
        frames=np.ascontiguousarray(frames),
        timestamps=indices.astype(np.float64) / native_fps,
        sampled_fps=len(indices) / duration,
        source=str(path),
    )


def load_video(
    video: VideoInput,
    *,
    num_frames: int | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
    input_fps: float | None = None,
) -> VideoClip:
    """Load and sample a video.

    Args:
        video: a file path (decoded with decord), a ``uint8`` array or tensor ``[T, H, W, 3]`` / ``[T, 3, H, W]``,
            a list of frames (PIL images or ``[H, W, 3]`` arrays), or a :class:`VideoClip` (returned as is when no
            sampling is asked for).
        num_frames: sample this many frames evenly over the video.
        fps: sample at this rate instead.
        max_frames: cap on the number of frames after sampling.
        input_fps: frame rate of in-memory frames (default :data:`DEFAULT_INPUT_FPS`); files carry their own.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is empty, unreadable or corrupt, or the frames are malformed; the message names it.
    """
    sampling = dict(num_frames=num_frames, fps=fps, max_frames=max_frames)
    if isinstance(video, VideoClip):
        if num_frames is None and fps is None and max_frames is None:
            return video
        return _from_frames(video.frames, video.source, video.sampled_fps, **sampling)
    if isinstance(video, (str, os.PathLike)):
        return _decode_file(Path(video), **sampling)
    rate = DEFAULT_INPUT_FPS if input_fps is None else float(input_fps)
    if not rate > 0:
        raise ValueError(f"input_fps must be positive, got {input_fps!r}")
    if isinstance(video, (np.ndarray, torch.Tensor)):
        return _from_frames(_as_frame_array(video, "video array"), "array", rate, **sampling)
    if isinstance(video, Sequence):
        if len(video) == 0:
            raise ValueError("the list of frames is empty")
        frames = [np.asarray(frame.convert("RGB")) if hasattr(frame, "convert") else np.asarray(frame) for frame in video]
        shapes = {frame.shape for frame in frames}
        if len(shapes) != 1:
            raise ValueError(f"all frames must have the same shape, got {sorted(shapes)}")
        return _from_frames(_as_frame_array(np.stack(frames), "list of frames"), "frames", rate, **sampling)
    raise ValueError(f"cannot read a video from {type(video).__name__}; give a path, an array, a tensor or frames")

"""Video input: decord-backed files, in-memory frames, sampling, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vidcompress.synthetic import moving_square_video, write_video
from vidcompress.video import load_video, sample_indices


@pytest.fixture(scope="module")
def video_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("videos") / "square.mp4"
    write_video(path, moving_square_video(num_frames=20, size=64), fps=10.0)
    return path


def test_uniform_sampling_of_a_file(video_file):
    clip = load_video(video_file, num_frames=5)
    assert clip.frames.shape == (5, 64, 64, 3) and clip.frames.dtype == np.uint8
    assert clip.timestamps.tolist() == pytest.approx([0.0, 0.4, 0.9, 1.4, 1.9])  # floor(linspace(0, 19, 5)) at 10 fps
    assert clip.sampled_fps == pytest.approx(5 / 2.0)
    assert clip.source == str(video_file)


def test_fps_sampling_and_cap(video_file):
    assert load_video(video_file, fps=2.0).num_frames == 4  # 2 s at 2 fps
    capped = load_video(video_file, max_frames=3)
    assert capped.num_frames == 3
    assert capped.timestamps.tolist() == pytest.approx([0.0, 0.9, 1.9])


def test_decoded_frames_match_the_written_ones(video_file):
    written = moving_square_video(num_frames=20, size=64)
    decoded = load_video(video_file).frames
    # lossy codec: close on average, and the square is where it was written in every frame
    assert np.abs(decoded.astype(int) - written.astype(int)).mean() < 12
    bright = decoded.max(-1) > 140
    for index in (0, 19):
        columns = np.nonzero(bright[index].any(0))[0]
        expected = np.nonzero((written[index].max(-1) > 140).any(0))[0]
        assert abs(int(columns.mean()) - int(expected.mean())) <= 1


def test_sample_indices_rules():
    assert sample_indices(10, 30.0, num_frames=4).tolist() == [0, 3, 6, 9]
    assert sample_indices(10, 30.0, fps=10.0).tolist() == [0, 3, 6, 9]
    assert sample_indices(10, 30.0, max_frames=2).tolist() == [0, 9]
    with pytest.raises(ValueError, match="not both"):
        sample_indices(10, 30.0, num_frames=4, fps=1.0)
    with pytest.raises(ValueError, match="num_frames"):
        sample_indices(10, 30.0, num_frames=0)
    with pytest.raises(ValueError, match="fps"):
        sample_indices(10, 30.0, fps=-1.0)


def test_in_memory_inputs():
    frames = moving_square_video(num_frames=6, size=32)
    for video in (frames, torch.from_numpy(frames), torch.from_numpy(frames).permute(0, 3, 1, 2), list(frames),
                  [Image.fromarray(f) for f in frames]):
        clip = load_video(video)
        assert np.array_equal(clip.frames, frames)
    clip = load_video(frames, num_frames=3, input_fps=3.0)
    assert clip.timestamps.tolist() == pytest.approx([0.0, 2 / 3, 5 / 3])  # frames 0, 2, 5 at 3 fps
    assert clip.sampled_fps == pytest.approx(3 / 2)


@pytest.mark.parametrize(
    "video, error, message",
    [
        ("/no/such/video.mp4", FileNotFoundError, "video file not found: /no/such/video.mp4"),
        (np.zeros((0, 8, 8, 3), np.uint8), ValueError, "empty"),
        (np.zeros((2, 8, 8, 3), np.float32), ValueError, "uint8"),
        (np.zeros((2, 8, 8), np.uint8), ValueError, "shape"),
        (np.zeros((2, 8, 8, 4), np.uint8), ValueError, "3 colour channels"),
        ([], ValueError, "empty"),
        ([np.zeros((8, 8, 3), np.uint8), np.zeros((4, 8, 3), np.uint8)], ValueError, "same shape"),
        (42, ValueError, "cannot read a video"),
    ],
)
def test_bad_inputs(video, error, message):
    with pytest.raises(error, match=message):
        load_video(video)


def test_empty_and_corrupt_files_name_the_file(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=f"video file is empty: {empty}"):
        load_video(empty)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    with pytest.raises(ValueError, match=f"cannot decode video file {corrupt}"):
        load_video(corrupt)
    with pytest.raises(ValueError, match="directory"):
        load_video(tmp_path)

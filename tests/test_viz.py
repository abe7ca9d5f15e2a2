"""compare() tables, token overlays and the viz command.

The overlay tests use methods whose kept set is known by hand: ``none`` keeps every token, ``uniform`` keeps a fixed
lattice (methods/uniform.py: 4 tokens per step of a 4x4 grid at cells (1,1), (1,3), (3,1), (3,3); 1 token per frame
of a 2x2 grid at cell (1,1)).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidcompress import compare as compare_module
from vidcompress.assemble import merge_tokens
from vidcompress.compare import (
    ComparisonTable,
    VideoCompression,
    answer_matches,
    compare,
    compress_video,
    default_model,
    load_model,
)
from vidcompress.registry import UnknownMethodError
from vidcompress.tokens import VideoTokens, target_count
from vidcompress.viz import (
    kept_pixel_mask,
    overlay_frames,
    plot_accuracy,
    plot_overlay,
    plot_ttft,
    save_figure,
    step_budgets,
    token_index_map,
    viz_command,
)

QUESTION = "what happens in the video ?"


@pytest.fixture(scope="module")
def qwen():
    return load_model("tiny-qwen2.5-vl")


@pytest.fixture(scope="module")
def llava():
    return load_model("tiny-llava-onevision")


def textured_video(frames: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, (frames, size, size, 3), dtype=np.uint8)


def expected_overlay(frames: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Kept pixels unchanged, dropped pixels times 0.3 rounded (the documented dimming)."""
    dimmed = np.rint(frames.astype(np.float64) * 0.3).astype(np.uint8)
    return np.where(kept[..., None], frames, dimmed)


# -- geometry -----------------------------------------------------------------------------------------------------
def test_token_index_map_two_frames_per_step_and_odd_frame_count():
    index = token_index_map((2, 2, 2), frames_per_step=2, num_frames=3, height=4, width=4)
    assert index.shape == (3, 4, 4)
    first = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])
    np.testing.assert_array_equal(index[0], first)
    np.testing.assert_array_equal(index[1], first)  # frames 0 and 1 share step 0
    np.testing.assert_array_equal(index[2], first + 4)  # frame 2 is step 1


def test_token_index_map_uneven_cells():
    index = token_index_map((1, 2, 3), frames_per_step=1, num_frames=1, height=3, width=7)
    # rows: y * 2 // 3 -> 0, 0, 1; columns: x * 3 // 7 -> 0, 0, 0, 1, 1, 2, 2
    np.testing.assert_array_equal(index[0, :, :], [[0, 0, 0, 1, 1, 2, 2], [0, 0, 0, 1, 1, 2, 2], [3, 3, 3, 4, 4, 5, 5]])


def test_token_index_map_rejects_a_frame_smaller_than_the_grid():
    with pytest.raises(ValueError, match="cannot map grid"):
        token_index_map((1, 4, 4), frames_per_step=1, num_frames=1, height=2, width=8)


# -- overlays on real adapter paths ----------------------------------------------------------------------------------
def test_none_keeps_every_pixel_unchanged(qwen):
    video = textured_video(8, 112)
    comp = compress_video(video, "none", 1.0, model=qwen, num_frames=8)
    np.testing.assert_array_equal(comp.frames, video)  # 112 px is the processor's size: no resize
    assert kept_pixel_mask(comp).all()
    np.testing.assert_array_equal(overlay_frames(comp), video)
    np.testing.assert_array_equal(step_budgets(comp), [16, 16, 16, 16])


def test_uniform_lattice_on_qwen_pixel_by_pixel(qwen):
    video = textured_video(8, 112, seed=1)
    comp = compress_video(video, "uniform", 0.25, model=qwen, num_frames=8)
    assert comp.grid == (4, 4, 4) and comp.frames_per_step == 2
    assert comp.out.num_tokens == target_count((4, 4, 4), 0.25) == 16
    cell = np.zeros((112, 112), dtype=bool)
    for row in (1, 3):  # 28x28 px cells (1,1), (1,3), (3,1), (3,3) in every frame
        for col in (1, 3):
            cell[28 * row : 28 * row + 28, 28 * col : 28 * col + 28] = True
    kept = np.broadcast_to(cell, (8, 112, 112))
    np.testing.assert_array_equal(kept_pixel_mask(comp), kept)
    np.testing.assert_array_equal(overlay_frames(comp), expected_overlay(video, kept))
    np.testing.assert_array_equal(step_budgets(comp), [4, 4, 4, 4])


def test_uniform_on_llava_keeps_the_bottom_right_quadrant(llava):
    video = textured_video(8, 56, seed=2)
    comp = compress_video(video, "uniform", 0.25, model=llava, num_frames=8)
    assert comp.grid == (8, 2, 2) and comp.frames_per_step == 1
    np.testing.assert_array_equal(comp.frames, video)
    kept = np.zeros((8, 56, 56), dtype=bool)
    kept[:, 28:, 28:] = True
    np.testing.assert_array_equal(kept_pixel_mask(comp), kept)
    np.testing.assert_array_equal(overlay_frames(comp), expected_overlay(video, kept))
    np.testing.assert_array_equal(step_budgets(comp), [1] * 8)


def test_frames_are_resized_to_the_processor_size(qwen):
    comp = compress_video(textured_video(4, 140), "uniform", 0.5, model=qwen, num_frames=4)
    steps, rows, cols = comp.grid
    assert comp.frames.shape == (4, 28 * rows, 28 * cols, 3)


# -- overlays on hand-built merges ---------------------------------------------------------------------------------
def merged_example(outline_value: int = 100) -> VideoCompression:
    """One 4x4 px frame, a 2x2 grid: tokens 0 and 1 merged (row 0), token 2 kept alone (row 1), token 3 dropped."""
    tokens = VideoTokens(features=torch.arange(8.0).reshape(1, 4, 2), grid=(1, 2, 2))
    out = merge_tokens(tokens, torch.tensor([0, 0, 1, -1]), torch.tensor([0, 2]))
    frames = np.full((1, 4, 4, 3), outline_value, dtype=np.uint8)
    return VideoCompression("hand", 0.5, "hand-built", frames, 1, tokens, out, ("token",))


def test_merged_group_is_tinted_outlined_and_others_follow_the_rules():
    comp = merged_example()
    image = overlay_frames(comp).astype(int)
    tab20_first = np.array([31, 119, 180])  # matplotlib's tab20 colour 0, #1f77b4
    tinted = np.rint(0.55 * 100 + 0.45 * tab20_first)
    np.testing.assert_array_equal(image[0, 0], np.tile(tinted, (4, 1)))  # merged, interior row
    np.testing.assert_array_equal(image[0, 1], np.full((4, 3), 255))  # merged, border with the rows below
    np.testing.assert_array_equal(image[0, 2:, :2], np.full((2, 2, 3), 100))  # kept alone: unchanged
    np.testing.assert_array_equal(image[0, 2:, 2:], np.full((2, 2, 3), 30))  # dropped: dimmed
    no_outline = overlay_frames(comp, outline=False).astype(int)
    np.testing.assert_array_equal(no_outline[0, :2], np.tile(tinted, (2, 4, 1)))
    np.testing.assert_array_equal(step_budgets(comp), [2])


def test_overlay_rejects_bad_dimming():
    with pytest.raises(ValueError, match="dim and tint"):
        overlay_frames(merged_example(), dim=1.5)


def test_plot_overlay_has_one_panel_per_shown_frame_and_a_budget_axis(qwen, tmp_path):
    comp = compress_video(textured_video(8, 112), "uniform", 0.25, model=qwen, num_frames=8)
    fig = plot_overlay(comp, max_frames=4, columns=2)
    assert len(fig.axes) == 5
    images = [ax.get_images()[0].get_array() for ax in fig.axes[:4]]
    np.testing.assert_array_equal(images[-1], overlay_frames(comp)[7])  # frames 0, 2, 5, 7 are shown
    assert "RANDOM" in fig._suptitle.get_text()
    path = save_figure(fig, tmp_path / "overlay.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="PNG"):
        save_figure(fig, tmp_path / "overlay.jpg")


# -- compare -----------------------------------------------------------------------------------------------------------
def test_answer_matches_compares_leading_words():
    assert answer_matches("Right, it moves", "right")
    assert answer_matches("the red circle", "The red")
    assert not answer_matches("left", "right")
    assert not answer_matches("", "right")
    with pytest.raises(ValueError):
        answer_matches("right", " ? ")


def test_compare_rows_skips_and_summary(qwen):
    videos = [textured_video(4, 112, seed=3), textured_video(4, 112, seed=4)]
    table = compare(
        videos, QUESTION, ["none", "uniform"], [1.0, 0.5], model=qwen, truths=[None, "zzz"],
        warmup=False, num_frames=4, max_new_tokens=1,
    )
    assert isinstance(table, ComparisonTable) and table.random_weights
    assert [(row["method"], row["retention"], row["video"]) for row in table] == [
        ("none", 1.0, 0), ("none", 1.0, 1), ("uniform", 1.0, 0), ("uniform", 1.0, 1),
        ("uniform", 0.5, 0), ("uniform", 0.5, 1),
    ]
    assert [(s["method"], s["retention"]) for s in table.skipped] == [("none", 0.5)]
    assert "retention must be 1.0" in table.skipped[0]["reason"]
    assert [row["visual_tokens_out"] for row in table] == [32, 32, 32, 32, 16, 16]  # grid (2, 4, 4)
    assert [row["correct"] for row in table] == [None, False] * 3  # "zzz" is not a word the model can say
    for row in table:
        stages = sum(row[f"ms_{s}"] for s in ("decode_video", "preprocess", "vision_encoder", "compression", "prefill"))
        assert row["ttft_ms"] == pytest.approx(stages) and row["ttft_ms"] > 0
        assert row["peak_memory_mb"] is None and "RANDOM" in row["model"]
    summary = table.summary()
    assert [(s["method"], s["retention"], s["videos"], s["accuracy"]) for s in summary] == [
        ("none", 1.0, 2, 0.0), ("uniform", 1.0, 2, 0.0), ("uniform", 0.5, 2, 0.0),
    ]


def test_compare_notes_a_video_the_method_refuses(qwen):
    # DyCoke's decode stage acts from layer L = 3 by default; the tiny model has 2 decoder layers, so it refuses
    table = compare([textured_video(4, 112, seed=3)], QUESTION, ["dycoke"], [0.25], model=qwen, warmup=False,
                    num_frames=4, max_new_tokens=1)
    assert list(table) == []
    assert [(s["method"], s["retention"], s["video"]) for s in table.skipped] == [("dycoke", 0.25, 0)]
    assert "decode_layer 3" in table.skipped[0]["reason"]
    assert "skipped dycoke at 0.25 (video 0)" in table.format()


def test_compare_rejects_unknown_names_and_mismatched_lists(qwen):
    with pytest.raises(UnknownMethodError):
        compare([textured_video(2, 112)], QUESTION, ["unifrom"], [0.5], model=qwen, warmup=False)
    with pytest.raises(ValueError, match="2 entries for 1 videos"):
        compare([textured_video(2, 112)], [QUESTION, QUESTION], ["uniform"], [0.5], model=qwen)
    with pytest.raises(ValueError, match="not compared"):
        compare([textured_video(2, 112)], QUESTION, ["uniform"], [0.5], model=qwen, params={"holitom": {}})
    with pytest.raises(ValueError, match="retention"):
        compare([textured_video(2, 112)], QUESTION, ["uniform"], [1.5], model=qwen)


def test_default_model_falls_back_to_the_tiny_model_without_the_testbed(monkeypatch):
    monkeypatch.setattr(compare_module, "testbed_available", lambda: False)
    assert default_model() == "tiny-qwen2.5-vl"
    with pytest.raises(ValueError, match="test-bed model is not available"):
        load_model("testbed")


def test_accuracy_and_ttft_plots_draw_one_line_per_method():
    summary = [
        {"method": m, "retention": r, "videos": 1, "accuracy": a, "ttft_ms": t}
        for m, r, a, t in [("none", 1.0, 0.9, 100.0), ("uniform", 0.5, 0.7, 60.0), ("uniform", 0.25, 0.5, 40.0)]
    ]
    ax = plot_accuracy(summary, chance=0.25).axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_array_equal(lines["uniform"].get_xdata(), [0.25, 0.5])
    np.testing.assert_array_equal(lines["uniform"].get_ydata(), [0.5, 0.7])
    np.testing.assert_array_equal(lines["chance"].get_ydata(), [0.25, 0.25])
    ttft = {line.get_label(): line for line in plot_ttft(summary).axes[0].get_lines()}
    np.testing.assert_array_equal(ttft["none (uncompressed)"].get_ydata(), [100.0, 100.0])
    with pytest.raises(ValueError, match="no accuracy"):
        plot_accuracy([dict(summary[0], accuracy=None)])


# -- command line --------------------------------------------------------------------------------------------------
def test_viz_command_writes_a_png(tmp_path, capsys):
    import matplotlib.image

    from vidcompress.synthetic import moving_square_video, write_video

    video = tmp_path / "clip.mp4"
    write_video(video, moving_square_video(num_frames=8, size=56), fps=4.0)
    out = tmp_path / "out" / "viz.png"
    argv = [str(video), "--method", "uniform", "--retention", "0.25", "-o", str(out)]
    assert viz_command(argv + ["--model", "tiny-llava-onevision", "--num-frames", "4"]) == 0
    image = matplotlib.image.imread(out)
    assert image.shape[0] > 200 and image.shape[1] > 200 and float(image[..., :3].std()) > 0.05
    assert "4 of 16 visual tokens kept" in capsys.readouterr().out
    assert viz_command([str(video), "--retention", "0", "-o", str(out), "--model", "tiny-llava-onevision"]) == 2
    assert "retention must lie in (0, 1]" in capsys.readouterr().err

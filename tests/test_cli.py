"""The command line, run as a user runs it (a subprocess of the installed entry point)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vidcompress.synthetic import moving_square_video, write_video


def vidcompress(*args: str) -> subprocess.CompletedProcess:
    """Run the entry point installed beside the interpreter running the tests (else the one on PATH)."""
    beside = Path(sys.executable).with_name("vidcompress")
    executable = str(beside) if beside.is_file() else shutil.which("vidcompress")
    command = [executable] if executable else [sys.executable, "-m", "vidcompress.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "clip.mp4"
    write_video(path, moving_square_video(num_frames=12, size=112), fps=6.0)
    return path


def test_run_prints_answer_and_stats(clip):
    result = vidcompress("run", "--model", "tiny-qwen2.5-vl", "--method", "uniform", "--retention", "0.25",
                         "--num-frames", "8", "--max-new-tokens", "4", str(clip), "what happens in the video ?")
    assert result.returncode == 0, result.stderr
    assert "RANDOM weights" in result.stdout
    assert "answer:" in result.stdout
    assert "visual tokens: 64 -> 16" in result.stdout  # 8 frames of 112 px: 4 groups x 4 x 4
    assert "[vidcompress] loading" in result.stderr  # progress goes to stderr


def test_run_json(clip):
    result = vidcompress("run", "--model", "tiny-llava-onevision", "--method", "random", "--retention", "0.5",
                         "--param", "seed=3", "--num-frames", "4", "--max-new-tokens", "2", "--json", str(clip), "q ?")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["stats"]["visual_tokens_in"] == 16 and payload["stats"]["visual_tokens_out"] == 8
    assert set(payload["stats"]["ms"]) >= {"decode_video", "vision_encoder", "compression", "prefill", "generation"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["/no/such/clip.mp4"], "video file not found: /no/such/clip.mp4"),
        (["--method", "unifrom", "CLIP"], "did you mean 'uniform'"),
        (["--method", "uniform", "--retention", "1.5", "CLIP"], "retention must lie in (0, 1]"),
    ],
)
def test_bad_input_exits_non_zero_with_one_line(clip, args, message):
    args = [str(clip) if a == "CLIP" else a for a in args]
    result = vidcompress("run", "--model", "tiny-qwen2.5-vl", *args, "question ?")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if not line.startswith("[vidcompress]")]
    assert errors == [f"vidcompress: error: {errors[0].split('error: ', 1)[1]}"]
    assert message in errors[0]
    assert "Traceback" not in result.stderr


def test_methods_table_and_json():
    table = vidcompress("methods")
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split()[:4] == ["method", "stages", "attention", "question"]
    assert any(line.startswith("random ") and "seed=0" in line for line in table.stdout.splitlines())
    rows = json.loads(vidcompress("methods", "--json").stdout)
    assert {row["name"] for row in rows} >= {"none", "uniform", "random"}


def test_demo_answers_a_testbed_question_and_saves_tokens():
    result = vidcompress("demo", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["random_weights"] is False and "test-bed" in payload["model"]
    none, uniform = payload["answers"]["none"]["stats"], payload["answers"]["uniform"]["stats"]
    assert none["visual_tokens_in"] == 256  # 32 frames of 112 px: 16 steps of 4x4
    assert uniform["visual_tokens_out"] == 64
    # the shipped model has learned the scene-change family (100 % on the test split): its answer is the truth
    assert payload["answers"]["none"]["text"].split()[0] == payload["truth"]


def test_demo_falls_back_to_the_labelled_random_model(monkeypatch, capsys):
    import vidcompress.testbed.model as testbed_model
    from vidcompress.cli import main

    monkeypatch.setattr(testbed_model, "testbed_available", lambda: False)
    assert main(["demo", "--json", "--num-frames", "8"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["random_weights"] is True and payload["truth"] is None

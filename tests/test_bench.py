"""The end-to-end benchmark: full-size configs (meta device), FLOPs conventions, frame scaling, a tiny CPU run."""

from __future__ import annotations

import json

import pytest
import torch

from vidcompress.bench import FULL_MODELS, build_processor, build_random_model, load_config
from vidcompress.bench.cli import bench_command
from vidcompress.bench.flops import TextDims, prefill_flops, text_dims, vision_flops
from vidcompress.bench.report import frames_at_ttft
from vidcompress.bench.plans import SCALING_FRAMES, issue_plan, scaling_plan, token_stage_methods

# Public parameter counts of the checkpoints (model cards): 8.29 B, 3.75 B, 8.03 B, 0.89 B.
EXPECTED_BILLIONS = {"qwen2.5-vl-7b": 8.29, "qwen2.5-vl-3b": 3.75, "llava-ov-7b": 8.03, "llava-ov-0.5b": 0.894}
QWEN2_7B = TextDims(layers=28, hidden=3584, ffn=18944, heads=28, kv_heads=4)


@pytest.mark.parametrize("name", sorted(FULL_MODELS))
def test_full_size_config_builds_on_meta_with_public_parameter_count(name):
    model = build_random_model(name, device="meta")
    parameters = sum(p.numel() for p in model.parameters()) / 1e9
    assert parameters == pytest.approx(EXPECTED_BILLIONS[name], rel=0.005)
    assert next(model.parameters()).device.type == "meta"
    assert next(model.parameters()).dtype == torch.bfloat16


def test_seven_b_decoders_are_qwen2_7b():
    for name in ("qwen2.5-vl-7b", "llava-ov-7b"):
        assert text_dims(load_config(name)) == QWEN2_7B


@pytest.mark.parametrize("name", ["qwen2.5-vl-7b", "llava-ov-7b"])
def test_processor_vocabulary_matches_config_and_gives_the_checkpoint_grid(name):
    import numpy as np

    config = load_config(name)
    processor = build_processor(name, config)
    assert len(processor.tokenizer.get_vocab()) == config.text_config.vocab_size
    video_id = config.video_token_id
    assert processor.tokenizer.convert_ids_to_tokens(video_id) in ("<|video_pad|>", "<video>")
    frames = np.zeros((4, 448, 448, 3), dtype=np.uint8)
    prompt = "<|im_start|> user <|vision_start|><|video_pad|><|vision_end|> what ? <|im_end|>"
    if name.startswith("llava"):
        prompt = "<|im_start|> user <video> what ? <|im_end|>"
    inputs = processor(text=[prompt], videos=[frames], return_tensors="pt", **(
        {"do_sample_frames": False} if name.startswith("qwen") else {}))
    placeholders = int((inputs["input_ids"][0] == video_id).sum())
    # Qwen2.5-VL: 448 px -> 16 x 16 tokens per 2-frame group; LLaVA-OV: 384 px -> 14 x 14 per frame, + 1 newline
    assert placeholders == (2 * 256 if name.startswith("qwen") else 4 * 196 + 1)


def test_fastv_convention_reproduces_published_llava_ov_numbers():
    # anchors.md §0.5 / §4: LLaVA-OV-7B, 32 x 196 visual tokens + ~64-128 text tokens ≈ 41.4 TFLOPs; 10 % → 4.0 T
    assert prefill_flops(QWEN2_7B, 32 * 196 + 100) / 1e12 == pytest.approx(41.4, abs=0.3)
    assert prefill_flops(QWEN2_7B, 627 + 100) / 1e12 == pytest.approx(4.0, abs=0.15)
    assert prefill_flops(QWEN2_7B, 314 + 100) / 1e12 == pytest.approx(2.2, abs=0.1)


def test_true_count_is_about_2_4_times_the_convention():
    # anchors.md §4: 98.8 TFLOPs at 6,336 tokens (2.39x the convention)
    assert prefill_flops(QWEN2_7B, 6336, "true") / 1e12 == pytest.approx(98.8, abs=0.3)


def test_inner_llm_pruning_counts_layers_before_and_after_k():
    dims = TextDims(layers=4, hidden=2, ffn=3, heads=2, kv_heads=1)
    # one layer at n = 10 tokens: 4·10·4 + 2·100·2 + 2·10·2·3 = 160 + 400 + 120 = 680; at n = 5: 80 + 100 + 60 = 240
    assert prefill_flops(dims, 10) == 4 * 680
    assert prefill_flops(dims, 10, layer=1, tokens_after=5) == 680 + 3 * 240
    with pytest.raises(ValueError):
        prefill_flops(dims, 10, layer=5, tokens_after=5)
    with pytest.raises(ValueError):
        prefill_flops(dims, 10, "mac")


def test_vision_flops_scale_linearly_with_frames():
    config = load_config("llava-ov-7b")
    assert vision_flops(config, (64, 14, 14)) == pytest.approx(2 * vision_flops(config, (32, 14, 14)))


def test_frames_at_ttft_interpolates_between_measured_counts():
    points = [(16, 50.0), (32, 100.0), (64, 200.0)]
    assert frames_at_ttft(points, 150.0) == "48"
    assert frames_at_ttft(points, 300.0) == ">= 64"
    assert frames_at_ttft(points, 10.0) == "< 16"


def test_issue_plan_covers_the_must_show_rows():
    cases = issue_plan()
    at_32 = {(c.model, c.method, c.retention) for c in cases if c.frames == 32}
    for model in ("qwen2.5-vl-7b", "llava-ov-7b"):
        assert (model, "none", 1.0) in at_32 and (model, "ideal", 0.1) in at_32
        assert all((model, method, 0.1) in at_32 for method in token_stage_methods())
    assert {c.frames for c in cases} == {32, 64}
    assert all(c.settings.runs >= 10 and c.settings.warmup >= 2 for c in cases)


def test_scaling_plan_tries_every_configuration_at_growing_frame_counts():
    cases = scaling_plan()
    for model in ("qwen2.5-vl-7b", "llava-ov-7b"):
        mine = [c for c in cases if c.model == model]
        assert [c.frames for c in mine] == sorted(c.frames for c in mine)  # smaller counts first: OOM stops the rest
        for frames in SCALING_FRAMES:
            methods = {(c.method, c.retention) for c in mine if c.frames == frames}
            assert methods == {("none", 1.0), ("ideal", 0.1), *((m, 0.1) for m in token_stage_methods())}
    assert max(SCALING_FRAMES) >= 512
    runs = [c.settings.runs for c in sorted(cases, key=lambda c: c.frames)]
    assert runs == sorted(runs, reverse=True)  # fewer rounds as runs get longer


def test_bad_arguments_exit_2(capsys):
    assert bench_command(["--tiny", "--methods", "no-such-method"]) == 2
    assert bench_command(["--tiny", "--retentions", "1.5"]) == 2
    assert bench_command(["--tiny", "--torch-compile", "--no-cuda-graph"]) == 2
    assert "vidcompress bench:" in capsys.readouterr().err


def test_tiny_run_writes_valid_json_markdown_and_plots(tmp_path):
    argv = ["--tiny", "--models", "tiny-llava-onevision", "--frames", "4", "--methods", "uniform",
            "--retentions", "1", "0.25", "--out", str(tmp_path), "--name", "tiny"]
    assert bench_command(argv) == 0
    doc = json.loads((tmp_path / "tiny.json").read_text())
    assert doc["random_weights"] is True and doc["command"].startswith("vidcompress bench --tiny")
    assert {"torch", "transformers"} <= set(doc["versions"]) and doc["date"]
    rows = {(row["method"], row["retention"]): row for row in doc["rows"]}
    assert set(rows) == {("none", 1.0), ("ideal", 0.25), ("uniform", 0.25)}
    assert all(row["status"] == "ok" and row["rounds"] == 2 for row in rows.values())
    ratio = rows[("uniform", 0.25)]["ttft_ratio_to_ideal"]
    assert ratio["rounds"] == 2 and ratio["min"] <= ratio["median"] <= ratio["max"]
    assert rows[("ideal", 0.25)]["ttft_ratio_to_ideal"] is None and rows[("none", 1.0)]["ttft_speedup_vs_none"] is None
    assert rows[("ideal", 0.25)]["ttft_speedup_vs_none"]["rounds"] == 2
    assert doc["vision_attention"] == "batched" and "tiny-llava-onevision" in doc["scaling"]
    assert doc["token_stage"] == "eager"  # --cuda-graph is the default, but a CPU has no graphs to replay
    # 4 frames x 2 x 2 pooled tokens = 16 visual tokens; 25 % -> 4, for the method and for the ideal
    assert rows[("none", 1.0)]["visual_tokens_out"] == 16
    assert rows[("uniform", 0.25)]["visual_tokens_out"] == rows[("ideal", 0.25)]["visual_tokens_out"] == 4
    uniform = rows[("uniform", 0.25)]
    assert uniform["prompt_tokens"] == rows[("none", 1.0)]["prompt_tokens"] - 12
    assert uniform["ms"]["ttft"] > 0 and uniform["ms"]["decode_per_token"] > 0
    assert rows[("ideal", 0.25)]["ms"]["compression"] == 0.0
    assert uniform["tflops"]["prefill_fastv"] < rows[("none", 1.0)]["tflops"]["prefill_fastv"]
    markdown = (tmp_path / "tiny.md").read_text()
    assert "TTFT against the ideal" in markdown and "- token stage: eager" in markdown
    assert (tmp_path / "tiny_ttft_stages_tiny-llava-onevision.png").stat().st_size > 0
    assert (tmp_path / "tiny_ttft_vs_frames.png").exists()


def test_compressor_for_graphs_the_token_stage_when_asked():
    from vidcompress import GraphedCompressor
    from vidcompress.bench.measure import IDEAL, compressor_for

    graphed_flashvid = compressor_for("flashvid", 0.1, cuda_graph=True)
    assert isinstance(graphed_flashvid, GraphedCompressor) and graphed_flashvid.name == "flashvid"
    assert compressor_for(IDEAL, 0.1, cuda_graph=True).name == "uniform"
    assert not isinstance(compressor_for("flashvid", 0.1), GraphedCompressor)
    assert not graphed_flashvid.torch_compile and compressor_for("flashvid", 0.1, True, True).torch_compile


def test_token_stage_label():
    from vidcompress.bench.runner import token_stage_label

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert token_stage_label(True, True, cuda) == "cuda_graph_compiled"
    assert token_stage_label(True, False, cuda) == "cuda_graph"
    assert token_stage_label(False, True, cuda) == token_stage_label(True, True, cpu) == "eager"

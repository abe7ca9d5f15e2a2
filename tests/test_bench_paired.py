"""Paired interleaved timing, the OOM stop of the sweep, the time budget and the scaling report (CPU only)."""

from __future__ import annotations

import itertools

import pytest
import torch

import vidcompress.bench.runner as runner
from vidcompress.bench.cli import _settings, build_parser
from vidcompress.bench.paired import TIME_BUDGET_SKIP, interleave, paired_ratio
from vidcompress.bench.plans import ISSUE_SETTINGS, comparisons, scaling_plan
from vidcompress.bench.report import markdown_report, scaling_summary


class FakeClock:
    """A clock that the fake runs advance."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_every_round_runs_each_contender_once_in_rotated_order():
    calls = []
    outcomes = interleave(["a", "b", "c"], lambda key: calls.append(key) or len(calls), warmup=1, rounds=3)
    assert calls[:3] == ["a", "b", "c"]  # warm-up
    rounds = [calls[3:6], calls[6:9], calls[9:12]]
    assert rounds == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert outcomes["a"].runs == [4, 9, 11] and outcomes["c"].runs == [6, 8, 10]
    assert all(outcome.status == "ok" for outcome in outcomes.values())


def test_per_round_ratio_cancels_drift():
    # every run is 2 % slower than the one before (clocks, allocator, neighbours): within a round the method and the
    # ideal are 1-2 runs apart, so their ratio stays within 1.10 x 1.02^±2
    cost = {"ideal": 100.0, "method": 110.0, "other": 300.0}
    counter = itertools.count()
    outcomes = interleave(list(cost), lambda key: cost[key] * 1.02 ** next(counter), warmup=2, rounds=9)
    ratio = paired_ratio(outcomes["method"].runs, outcomes["ideal"].runs)
    assert ratio["rounds"] == 9
    assert ratio["median"] == pytest.approx(1.10, abs=0.03)
    assert ratio["min"] <= ratio["q1"] <= ratio["median"] <= ratio["q3"] <= ratio["max"]
    # pairing runs one round apart (3 calls, 6 % drift) would land outside this tolerance


def test_paired_ratio_statistics_and_missing_rounds():
    ratio = paired_ratio([2.0, 4.0, None, 9.0], [1.0, 2.0, 5.0, 3.0])
    assert ratio == {"median": 2.0, "q1": 2.0, "q3": 2.5, "min": 2.0, "max": 3.0, "rounds": 3}
    assert paired_ratio([None], [1.0]) is None
    assert paired_ratio([3.0], [2.0])["q1"] == 1.5


def test_oom_drops_the_contender_frees_memory_and_the_others_go_on():
    released = []
    runs = {"a": 0, "b": 0, "c": 0}

    def run(key):
        runs[key] += 1
        if key == "b" and runs[key] == 3:  # warm-up, round 1, then out of memory in round 2
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if key == "c":
            raise ValueError("the compressor needs a grid")
        return float(runs[key])

    outcomes = interleave(["a", "b", "c"], run, warmup=1, rounds=4, release=lambda: released.append(1))
    assert outcomes["b"].status == "oom" and outcomes["b"].done == [2.0]
    assert released == [1]
    assert outcomes["c"].status == "error: ValueError: the compressor needs a grid" and outcomes["c"].done == []
    assert outcomes["a"].status == "ok" and len(outcomes["a"].done) == 4
    assert runs == {"a": 5, "b": 3, "c": 1}


def test_deadlines_cut_rounds_but_keep_the_minimum():
    clock = FakeClock()

    def run(key):
        clock.now += 1.0
        return clock.now

    outcomes = interleave(["a", "b"], run, warmup=1, rounds=10, min_rounds=3, soft_deadline=2.5, clock=clock)
    assert [len(o.done) for o in outcomes.values()] == [3, 3]
    clock.now = 0.0
    outcomes = interleave(["a", "b", "c"], run, warmup=1, rounds=5, hard_deadline=2.5, clock=clock)
    assert all(outcome.status == TIME_BUDGET_SKIP for outcome in outcomes.values())  # no timed round started
    assert clock.now == 3.0  # one run may start before the deadline is seen, none after


def _fake_oom(real, method: str, frames: int):
    """``time_run`` that runs out of memory for ``method`` from ``frames`` frames on."""

    def time_run(vlm, prepared, question, ideal, new_tokens):
        if vlm.compressor.name == method and prepared.frames >= frames:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(vlm, prepared, question, ideal, new_tokens)

    return time_run


def test_sweep_stops_a_configuration_at_oom_and_reports_the_largest_frames(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "time_run", _fake_oom(runner.time_run, "random", 8))
    cases = scaling_plan(["tiny-llava-onevision"], ["uniform", "random"], 0.25, frames=(4, 8, 16))
    assert [len(group) for group in comparisons(cases)] == [4, 4, 4]
    doc = runner.run_plan(cases, tmp_path / "s.json", device=torch.device("cpu"), command=["test"], frame_size=112,
                          prepare_repeats=1, progress=lambda message: None)
    status = {(row["method"], row["frames"]): row["status"] for row in doc["rows"]}
    assert status[("random", 4)] == "ok" and status[("random", 8)] == "oom"
    assert status[("random", 16)] == "skipped: failed at 8 frames"
    assert status[("uniform", 16)] == status[("none", 16)] == status[("ideal", 16)] == "ok"
    ok = [row for row in doc["rows"] if row["status"] == "ok"]
    assert all(row["rounds"] == 3 and row["ttft_speedup_vs_none"]["rounds"] == 3 for row in ok if row["method"] != "none")
    assert all(row["ttft_ratio_to_ideal"]["rounds"] == 3 for row in ok if row["method"] in ("uniform", "random"))
    summary = scaling_summary(doc, 0.25, reference_frames=4)["tiny-llava-onevision"]["configurations"]
    assert summary["random"]["largest_frames_run"] == 4
    assert summary["random"]["first_failure"] == {"frames": 8, "status": "oom"}
    assert summary["uniform"]["largest_frames_run"] == 16 and summary["uniform"]["first_failure"] is None
    assert "| random | 0.25 |" in markdown_report(doc, 0.25, 4, 8)


def test_no_budget_left_skips_without_building_a_model(tmp_path):
    cases = scaling_plan(["tiny-llava-onevision"], ["uniform"], 0.25, frames=(4,))
    doc = runner.run_plan(cases, tmp_path / "s.json", device=torch.device("cpu"), command=["test"], frame_size=112,
                          time_budget_s=0.0, progress=lambda message: None)
    assert {row["status"] for row in doc["rows"]} == {TIME_BUDGET_SKIP}
    assert doc["models"] == {}
    assert "3 configurations skipped for time" in markdown_report(doc, 0.25, 4, 4)


def _row(method, frames, ttft, retention=0.1, **extra):
    row = {"model": "m", "frames": frames, "method": method, "retention": retention, "group": "scaling", "status": "ok",
           "visual_tokens_in": 100, "visual_tokens_out": 10, "layer_averaged_visual_tokens": 10.0,
           "ms": {"ttft": ttft, "vision_encoder": ttft / 2, "compression": 1.0, "prefill": ttft / 2 - 1.0,
                  "decode_per_token": None},
           "tflops": {"prefill_fastv": 1.0, "prefill_true": 2.0}, "peak_memory_mb": extra.pop("peak", None)}
    row.update(extra)
    return row


def test_report_uses_per_round_ratios_and_interpolates_the_frame_budget():
    paired = {"median": 1.05, "q1": 1.01, "q3": 1.09, "min": 0.98, "max": 1.2, "rounds": 12}
    rows = [
        _row("none", 32, 300.0, retention=1.0),
        _row("ideal", 32, 100.0),
        _row("fastvid", 32, 120.0, ttft_ratio_to_ideal=paired, rounds=12, peak=18000.0),  # ratio of medians: 1.2
        _row("fastvid", 64, 250.0, peak=20000.0),
        _row("fastvid", 128, 450.0, peak=24000.0),
        {"model": "m", "frames": 256, "method": "fastvid", "retention": 0.1, "group": "scaling", "status": "oom"},
    ]
    doc = {"rows": rows, "versions": {}, "random_weights": True, "models": {}, "date": "d", "command": "c",
           "timing": "t", "flops_convention": "f", "gpu_memory_mb": 81559}
    text = markdown_report(doc, 0.1, 32, 32)
    assert "| fastvid | 10 | 1.00 | 120.0 | 100.0 | 1.050 | 1.010–1.090 (0.980–1.200) | 12 | yes |" in text
    item = scaling_summary(doc, 0.1, 32)["m"]["configurations"]["fastvid"]
    assert item["frames_at_reference_ttft"] == 80.0 and item["frames_at_reference_ttft_kind"] == "interpolated"
    assert item["largest_frames_run"] == 128 and item["first_failure"] == {"frames": 256, "status": "oom"}
    assert item["memory_limit_frames_estimate"] == 1049.0  # 128 + (81559 - 24000) * 64 / 4000
    assert "| fastvid | 0.1 | 80 | 128 | 256 (oom) | 1049 | - |" in text


def test_cli_rounds_and_plans():
    parser = build_parser()
    assert _settings(parser.parse_args(["--plan", "issue"])) == ISSUE_SETTINGS
    assert _settings(parser.parse_args(["--plan", "issue", "--rounds", "5"])).runs == 5
    assert _settings(parser.parse_args(["--runs", "4", "--warmup", "0"])).runs == 4
    assert parser.parse_args(["--plan", "scaling"]).vision_attention == "batched"

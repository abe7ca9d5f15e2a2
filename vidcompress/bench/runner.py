"""The sweep over a plan (:mod:`.plans`) and the JSON it produces.

The cases of one comparison (one model and frame count) are timed interleaved, round by round (:mod:`.paired`), so
ratios between them (method / ideal, none / method) are taken within a round and drift cancels.

Out-of-memory is recorded as ``status: "oom"`` (memory is freed, the sweep goes on) and the configuration is not
tried at more frames. With a time budget, each comparison gets a share of what is left in proportion to its size
(rounds stop early, never below ``MIN_ROUNDS``), no run starts after the budget, and comparisons it does not reach
are recorded as skipped. The JSON is rewritten after every comparison, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vidcompress.synthetic import moving_square_video, write_video

from .measure import BENCH_QUESTION, IDEAL, PreparedVideo, compressor_for, stage_summary, time_run, token_counts, ttft
from .paired import TIME_BUDGET_SKIP, Outcome, failure_status, interleave, paired_ratio
from .measure import Settings
from .plans import Case, comparisons
from .slot import ModelSlot

__all__ = ["run_plan", "environment", "log_progress", "token_stage_label"]

LARGE_FRAMES = 128  # a comparison at more frames needs MIN_SECONDS_LEFT of the budget to start
MIN_SECONDS_LEFT = 45.0
MIN_ROUNDS = 3  # a time budget cuts rounds, never below this (or the rounds asked for, if fewer)


def token_stage_label(cuda_graph: bool, torch_compile: bool, device: torch.device) -> str:
    """How the token stage runs: ``"cuda_graph_compiled"``, ``"cuda_graph"`` (CUDA only) or ``"eager"``."""
    if not cuda_graph or device.type != "cuda":
        return "eager"
    return "cuda_graph_compiled" if torch_compile else "cuda_graph"


def environment(command: list[str]) -> dict[str, Any]:
    """Command, date, GPU, library versions."""
    import transformers

    import vidcompress

    versions = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}
    versions["vidcompress"] = vidcompress.__version__
    try:
        import triton

        versions["triton"] = triton.__version__
    except ImportError:
        versions["triton"] = None
    cuda = torch.cuda.is_available()
    return {
        "command": " ".join(command),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "cuda": torch.version.cuda if cuda else None,
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "versions": versions,
        "flops_convention": (
            "prefill_fastv: FastV's L*(4nd^2 + 2n^2d + 2ndm), multiply-accumulates, no GQA, two-matrix FFN; "
            "prefill_true: 2 FLOPs per MAC with GQA and SwiGLU; both without the vision encoder and LM head; "
            "vision_true: vision tower + projector, 2 FLOPs per MAC (anchors.md section 4)"
        ),
        "timing": "CUDA events (perf_counter on CPU); the configurations of one model and frame count run "
        "interleaved, one run each per round in rotating order, after warm-up rounds; per configuration the median "
        "of its rounds; ratios (method/ideal, none/method) are the median of per-round ratios, with quartiles and "
        "range; TTFT = vision_encoder + compression + splice + prefill; decode_video and preprocess are CPU stages "
        "reported apart; peak memory = the largest max_memory_allocated of one run",
        "gpu_memory_mb": round(torch.cuda.get_device_properties(0).total_memory / 2**20) if cuda else None,
    }


def _row_head(case: Case) -> dict[str, Any]:
    return {"model": case.model, "frames": case.frames, "method": case.method, "retention": case.retention, "group": case.group}


def run_plan(
    cases: list[Case],
    out_json: Path,
    *,
    device: torch.device,
    command: list[str],
    checkpoints: dict[str, str] | None = None,
    attn_implementation: str = "sdpa",
    vision_attention: str = "batched",
    cuda_graph: bool = True,
    torch_compile: bool = False,
    frame_size: int = 448,
    time_budget_s: float | None = None,
    prepare_repeats: int = 3,
    progress: Callable[[str], None] = print,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Run ``cases`` comparison by comparison, writing ``out_json`` after each; returns the result document."""
    started = clock()
    hard_deadline = None if time_budget_s is None else started + time_budget_s
    result: dict[str, Any] = {**environment(command), "random_weights": not checkpoints, "models": {}, "rows": []}
    result.update(device=str(device), vision_attention=vision_attention, time_budget_s=time_budget_s,
                  token_stage=token_stage_label(cuda_graph, torch_compile, device))
    out_json.parent.mkdir(parents=True, exist_ok=True)
    slot = ModelSlot(device, checkpoints or {}, attn_implementation, vision_attention)
    failed_at: dict[tuple[str, str, float], int] = {}
    groups = comparisons(cases)
    with tempfile.TemporaryDirectory() as folder:
        video = Path(folder) / "bench.mp4"
        write_video(video, moving_square_video(num_frames=max(case.frames for case in cases), size=frame_size), fps=8.0)
        for number, group in enumerate(groups):
            rows: dict[Case, dict[str, Any]] = {}
            for case in group:
                failed = failed_at.get((case.model, case.method, case.retention))
                if failed is not None and case.frames > failed:
                    rows[case] = {**_row_head(case), "status": f"skipped: failed at {failed} frames"}
            pending = [case for case in dict.fromkeys(group) if case not in rows]
            left = None if hard_deadline is None else hard_deadline - clock()
            if pending and left is not None and left <= (MIN_SECONDS_LEFT if group[0].frames > LARGE_FRAMES else 0.0):
                rows.update({case: {**_row_head(case), "status": TIME_BUDGET_SKIP} for case in pending})
            elif pending:
                soft = None if left is None else clock() + left * _share(groups[number:])
                head = group[0]
                progress(f"{head.model} F={head.frames}: {len(pending)} configurations, {head.settings}")
                rows.update(_measure_comparison(
                    slot, pending, video, result, prepare_repeats, soft, hard_deadline, clock, progress
                ))
            for case in group:
                row = rows[case]
                if row["status"] == "oom" or row["status"].startswith("error"):
                    key = (case.model, case.method, case.retention)
                    failed_at[key] = min(case.frames, failed_at.get(key, case.frames))
                result["rows"].append(row)
                progress(f"  {_summary(row)}")
            result["elapsed_s"] = round(clock() - started, 1)
            out_json.write_text(json.dumps(result, indent=1))
            progress(f"[{number + 1}/{len(groups)} comparisons, {result['elapsed_s']:.0f}s]")
    slot.release()
    return result


def _share(groups: list[list[Case]]) -> float:
    """The first comparison's share of the time left: its frames x configurations x runs over all of them."""
    sizes = [group[0].frames * len(group) * _runs(group[0].settings) for group in groups]
    return sizes[0] / sum(sizes)


def _runs(settings: Settings) -> int:
    """Runs per configuration (a decode run counted as one)."""
    return settings.warmup + settings.runs + (settings.decode_runs if settings.decode_tokens else 0)


def _measure_comparison(
    slot: ModelSlot,
    cases: list[Case],
    video: Path,
    result: dict[str, Any],
    repeats: int,
    soft_deadline: float | None,
    hard_deadline: float | None,
    clock: Callable[[], float],
    progress: Callable[[str], None],
) -> dict[Case, dict[str, Any]]:
    """Time ``cases`` (one model and frame count) interleaved; one result row per case. The token stage runs as
    ``result["token_stage"]`` says (``"cuda_graph"``: :func:`vidcompress.graphed`; ``"cuda_graph_compiled"``: the same
    with ``torch_compile=True``; else eager)."""
    failure = None
    try:
        vlm, info = slot.get(cases[0].model)
        if info is not None:
            result["models"][cases[0].model] = info
        prepared = slot.video(video, cases[0].frames, repeats)
    except Exception as error:  # the model or the video does not fit: every case fails the same way
        failure = failure_status(error)
    if failure is not None:
        slot.prepared = None
        slot.free()
        return {case: {**_row_head(case), "status": failure} for case in cases}
    settings = cases[0].settings
    counts: dict[Case, dict[str, Any]] = {}
    peaks: dict[Case, float] = {}
    stage = result["token_stage"]
    compressors = {
        case: compressor_for(case.method, case.retention, stage != "eager", stage == "cuda_graph_compiled")
        for case in cases
    }

    def run(case: Case, new_tokens: int = 1) -> dict[str, float]:
        vlm.compressor = compressors[case]
        if slot.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(slot.device)
        ms, produced = time_run(vlm, prepared, BENCH_QUESTION, case.method == IDEAL, new_tokens)
        if slot.device.type == "cuda":
            peaks[case] = max(peaks.get(case, 0.0), torch.cuda.max_memory_allocated(slot.device) / 2**20)
        if case not in counts:
            counts[case] = token_counts(vlm, produced, case.retention)
        return ms

    outcomes = interleave(
        cases,
        run,
        warmup=settings.warmup,
        rounds=settings.runs,
        min_rounds=min(MIN_ROUNDS, settings.runs),
        soft_deadline=soft_deadline,
        hard_deadline=hard_deadline,
        release=slot.free,
        clock=clock,
        progress=progress,
    )
    per_token = _decode_runs(run, outcomes, settings.decode_tokens, settings.decode_runs, slot.free, hard_deadline, clock)
    return _rows(cases, outcomes, counts, peaks, per_token, prepared)


def _decode_runs(
    run: Callable[[Case, int], dict[str, float]],
    outcomes: dict[Case, Outcome],
    tokens: int,
    runs: int,
    release: Callable[[], None],
    hard_deadline: float | None,
    clock: Callable[[], float],
) -> dict[Case, list[float]]:
    """Decode ms per token of each case that ran, until ``hard_deadline``; a failure here sets the case's status."""
    per_token: dict[Case, list[float]] = {}
    for case, outcome in outcomes.items():
        if outcome.status != "ok" or tokens == 0 or (hard_deadline is not None and clock() > hard_deadline):
            continue
        failure = None
        try:
            per_token[case] = [run(case, 1 + tokens)["after_first"] / tokens for _ in range(runs)]
        except Exception as error:
            failure = failure_status(error)
        if failure is not None:
            outcome.status = failure
            release()
    return per_token


def _rows(
    cases: list[Case],
    outcomes: dict[Case, Outcome],
    counts: dict[Case, dict[str, Any]],
    peaks: dict[Case, float],
    per_token: dict[Case, list[float]],
    prepared: PreparedVideo,
) -> dict[Case, dict[str, Any]]:
    ttfts = {case: [None if ms is None else ttft(ms) for ms in outcome.runs] for case, outcome in outcomes.items()}
    none = next((case for case in cases if case.method == "none" and outcomes[case].status == "ok"), None)
    rows = {}
    for case in cases:
        outcome = outcomes[case]
        row = {**_row_head(case), "status": outcome.status if outcome.done or outcome.status != "ok" else TIME_BUDGET_SKIP}
        if row["status"] == "ok":
            ideal = next((c for c in cases if c.method == IDEAL and c.retention == case.retention and c != case), None)
            row.update(counts[case])
            row.update(stage_summary(prepared, outcome.done, per_token.get(case, [])))
            row["peak_memory_mb"] = round(peaks[case], 1) if case in peaks else None
            row["rounds"] = len(outcome.done)
            row["warmup_rounds"] = case.settings.warmup
            row["ttft_ratio_to_ideal"] = None if ideal is None else paired_ratio(ttfts[case], ttfts[ideal])
            row["ttft_speedup_vs_none"] = None if none in (None, case) else paired_ratio(ttfts[none], ttfts[case])
        rows[case] = row
    return rows


def _summary(row: dict[str, Any]) -> str:
    head = f"{row['model']} F={row['frames']} {row['method']}@{row['retention']:g}"
    if row["status"] != "ok":
        return f"{head}: {row['status']}"
    ms = row["ms"]
    ratio = row.get("ttft_ratio_to_ideal")
    paired = f" x{ratio['median']:.3f} ideal [{ratio['q1']:.3f}, {ratio['q3']:.3f}]" if ratio else ""
    return (
        f"{head}: tokens {row['visual_tokens_in']}->{row['visual_tokens_out']} TTFT {ms['ttft']:.1f} ms{paired} "
        f"(enc {ms['vision_encoder']:.1f} comp {ms['compression']:.1f} prefill {ms['prefill']:.1f}) "
        f"peak {row['peak_memory_mb']} MiB, {row['rounds']} rounds"
    )


def log_progress(message: str) -> None:
    """Progress lines go to stderr."""
    print(message, file=sys.stderr, flush=True)

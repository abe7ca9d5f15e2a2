"""Benchmark plans, the sweep over them, and the JSON they produce.

Plans (lists of cases, run in order, one model in GPU memory at a time):

* ``issue`` — what issue 6 must show, sized for one 9-minute H100 call: on Qwen2.5-VL-7B and LLaVA-OV-7B, at 32 and
  64 frames, no compression, the ideal at 10 %, and every token-stage method at 10 %; then 16 and 128
  frames (frame scaling, fewer repetitions); then 256 and 512 frames (largest frame count, one timed run) while the
  time budget lasts.
* ``grid`` — the full sweep: every model x frames x method x retention given on the command line.

Out-of-memory is recorded as ``status: "oom"`` and the same configuration is not tried at more frames. Cases that
the time budget does not reach are recorded as skipped. The JSON is rewritten after every case, so an interrupted
run keeps what it measured.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vidcompress.api import VideoLLM, wrap
from vidcompress.registry import available_methods, method_info
from vidcompress.synthetic import moving_square_video, write_video

from .measure import BENCH_QUESTION, IDEAL, Settings, is_oom, measure_case, prepare_video
from .models import FULL_MODELS, build_processor, build_random_model, load_checkpoint

__all__ = ["Case", "token_stage_methods", "issue_plan", "grid_plan", "run_plan", "environment"]

ISSUE_MODELS = ("qwen2.5-vl-7b", "llava-ov-7b")
ISSUE_RETENTION = 0.1
TINY_MODELS = ("tiny-qwen2.5-vl", "tiny-llava-onevision")
MAX_FRAMES_MIN_SECONDS_LEFT = 45.0  # do not start a large-frame probe with less budget than this


@dataclass(frozen=True)
class Case:
    """One configuration to time."""

    model: str
    frames: int
    method: str
    retention: float
    settings: Settings = field(default_factory=Settings)
    group: str = "grid"  # "grid", "scaling" or "max_frames"


def token_stage_methods() -> list[str]:
    """Every registered method with a token stage, except ``none``."""
    return [name for name in available_methods() if name != "none" and "token" in method_info(name).stages]


def _budget_cases(model: str, frames: int, methods: Iterable[str], retention: float, settings: Settings, group: str):
    yield Case(model, frames, "none", 1.0, settings, group)
    yield Case(model, frames, IDEAL, retention, settings, group)
    for method in methods:
        yield Case(model, frames, method, retention, settings, group)


def issue_plan(
    models: Iterable[str] = ISSUE_MODELS, methods: Iterable[str] | None = None, retention: float = ISSUE_RETENTION
) -> list[Case]:
    """The cases issue 6 must show, most important first (see the module docstring)."""
    methods = list(methods) if methods is not None else token_stage_methods()
    main = Settings(warmup=3, runs=10, decode_tokens=8, decode_runs=1)
    scaling = Settings(warmup=2, runs=5, decode_tokens=8, decode_runs=1)
    probe = Settings(warmup=1, runs=1, decode_tokens=0, decode_runs=0)
    cases: list[Case] = []
    for model in models:
        for frames in (32, 64):
            cases += _budget_cases(model, frames, methods, retention, main, "grid")
        for frames in (16, 128):
            cases += _budget_cases(model, frames, methods, retention, scaling, "scaling")
    for model in models:
        for frames in (256, 512):
            cases += _budget_cases(model, frames, methods, retention, probe, "max_frames")
    return cases


def grid_plan(
    models: Iterable[str], frames: Iterable[int], methods: Iterable[str], retentions: Iterable[float], settings: Settings
) -> list[Case]:
    """Every model x frames x (method, retention); ``none`` runs once per frame count, at retention 1.0."""
    retentions = sorted({float(r) for r in retentions}, reverse=True)
    cases = []
    for model in models:
        for count in frames:
            cases.append(Case(model, count, "none", 1.0, settings))
            for retention in (r for r in retentions if r < 1.0):
                cases.append(Case(model, count, IDEAL, retention, settings))
                cases += [Case(model, count, m, retention, settings) for m in methods if m not in ("none", IDEAL)]
    return cases


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
        "timing": "CUDA events (perf_counter on CPU); median of timed runs after warm-up; TTFT = vision_encoder + "
        "compression + splice + prefill; decode_video and preprocess are CPU stages reported apart",
    }


class ModelSlot:
    """Holds one model at a time; building the next frees the previous."""

    def __init__(self, device: torch.device, checkpoints: dict[str, str], attn_implementation: str) -> None:
        self.device = device
        self.checkpoints = checkpoints
        self.attn_implementation = attn_implementation
        self.name: str | None = None
        self.vlm: VideoLLM | None = None
        self.videos: dict[int, Any] = {}

    def get(self, name: str) -> tuple[VideoLLM, dict[str, Any] | None]:
        """The model ``name`` and, when it was just built, a description of it."""
        if name == self.name and self.vlm is not None:
            return self.vlm, None
        self.release()
        start = time.perf_counter()
        random_weights = name not in self.checkpoints
        if name in TINY_MODELS:
            from vidcompress.models.tiny import TINY_MODELS as BUILDERS

            model, processor = BUILDERS[name]()
            model = model.to(self.device)
        elif random_weights:
            model = build_random_model(name, self.device, torch.bfloat16, self.attn_implementation)
            processor = build_processor(name, model.config)
        else:
            model, processor = load_checkpoint(self.checkpoints[name], self.device, torch.bfloat16, self.attn_implementation)
        _synchronize(self.device)
        self.vlm, self.name = wrap(model, method="none", processor=processor), name
        text = model.config.text_config
        info = {
            "checkpoint": self.checkpoints.get(name) or (FULL_MODELS[name].checkpoint if name in FULL_MODELS else name),
            "random_weights": random_weights,
            "parameters": sum(p.numel() for p in model.parameters()),
            "dtype": str(next(model.parameters()).dtype),
            "attn_implementation": {
                "vision": model.config.vision_config._attn_implementation,
                "text": text._attn_implementation,
            },
            "build_seconds": round(time.perf_counter() - start, 2),
            "weights_mb": round(torch.cuda.memory_allocated(self.device) / 2**20, 1) if self.device.type == "cuda" else None,
        }
        return self.vlm, info

    def release(self) -> None:
        self.vlm, self.name, self.videos = None, None, {}
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    frame_size: int = 448,
    time_budget_s: float | None = None,
    prepare_repeats: int = 3,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run ``cases``, writing ``out_json`` after each one; returns the result document."""
    started = time.monotonic()
    result: dict[str, Any] = {**environment(command), "random_weights": not checkpoints, "models": {}, "rows": []}
    result["device"] = str(device)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    slot = ModelSlot(device, checkpoints or {}, attn_implementation)
    failed_at: dict[tuple[str, str, float], int] = {}
    with tempfile.TemporaryDirectory() as folder:
        video = Path(folder) / "bench.mp4"
        longest = max(case.frames for case in cases)
        write_video(video, moving_square_video(num_frames=longest, size=frame_size), fps=8.0)
        for number, case in enumerate(cases, 1):
            row = _row_head(case)
            key = (case.model, case.method, case.retention)
            left = None if time_budget_s is None else time_budget_s - (time.monotonic() - started)
            needed = MAX_FRAMES_MIN_SECONDS_LEFT if case.group == "max_frames" else 0.0
            if key in failed_at and case.frames > failed_at[key]:
                row["status"] = f"skipped: failed at {failed_at[key]} frames"
            elif left is not None and left <= needed:
                row["status"] = "skipped: time budget"
            else:
                row.update(_measure(slot, case, video, result, prepare_repeats))
                if row["status"] != "ok":
                    failed_at[key] = min(case.frames, failed_at.get(key, case.frames))
            result["rows"].append(row)
            result["elapsed_s"] = round(time.monotonic() - started, 1)
            out_json.write_text(json.dumps(result, indent=1))
            progress(f"[{number}/{len(cases)} {result['elapsed_s']:.0f}s] {_summary(row)}")
    slot.release()
    return result


def _measure(slot: ModelSlot, case: Case, video: Path, result: dict[str, Any], repeats: int) -> dict[str, Any]:
    try:
        vlm, info = slot.get(case.model)
        if info is not None:
            result["models"][case.model] = info
        if case.frames not in slot.videos:
            slot.videos[case.frames] = prepare_video(vlm, video, case.frames, BENCH_QUESTION, repeats if case.frames <= 128 else 1)
        return measure_case(vlm, slot.videos[case.frames], case.method, case.retention, case.settings, BENCH_QUESTION)
    except Exception as error:  # one configuration failing must not end the sweep
        if not is_oom(error):
            message = str(error).splitlines()[0][:200] if str(error) else ""
            return {"status": f"error: {type(error).__name__}: {message}"}
    # out of memory: free what the failed run held (its traceback is gone here) before the next case
    slot.videos.pop(case.frames, None)
    gc.collect()
    if slot.device.type == "cuda":
        torch.cuda.empty_cache()
    return {"status": "oom"}


def _summary(row: dict[str, Any]) -> str:
    head = f"{row['model']} F={row['frames']} {row['method']}@{row['retention']:g}"
    if row["status"] != "ok":
        return f"{head}: {row['status']}"
    ms = row["ms"]
    return (
        f"{head}: tokens {row['visual_tokens_in']}->{row['visual_tokens_out']} TTFT {ms['ttft']:.1f} ms "
        f"(enc {ms['vision_encoder']:.1f} comp {ms['compression']:.1f} prefill {ms['prefill']:.1f}) "
        f"peak {row['peak_memory_mb']} MiB"
    )


def log_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)

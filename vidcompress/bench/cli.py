"""``vidcompress bench``: end-to-end speed and memory of every method on full-size architectures.

    vidcompress bench --plan issue --time-budget-s 480                    # issue 6's TTFT rows, one H100 call
    vidcompress bench --plan scaling --time-budget-s 480                  # frame scaling and memory limit
    vidcompress bench --models llava-ov-7b --frames 32 64 --retentions 1 0.25 0.1 --methods fastvid holitom
    vidcompress bench --quick                                             # a few minutes: 0.5B/3B, fewer runs
    vidcompress bench --tiny                                              # CPU smoke run with the tiny models
    vidcompress bench --checkpoint llava-ov-7b=/path/to/llava-onevision-qwen2-7b-ov-hf ...
    vidcompress bench --report-only benchmarks/results/bench_e2e_issue_....json

Writes ``<out>/<name>.json`` (after every configuration), ``<name>.md`` and the plots ``<name>_*.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import re
import sys
from pathlib import Path

import torch

from vidcompress.models.vision_attention import VISION_ATTENTION_CHOICES

from .measure import Settings
from .models import FULL_MODELS
from .plans import ISSUE_MODELS, Case, ISSUE_SETTINGS, SCALING_FRAMES, grid_plan, issue_plan, scaling_plan, token_stage_methods
from .report import markdown_report, scaling_summary, write_plots
from .runner import log_progress, run_plan
from .slot import TINY_MODELS

__all__ = ["bench_command", "build_parser"]

DEFAULT_FRAMES = (16, 32, 64, 128)
DEFAULT_RETENTIONS = (1.0, 0.5, 0.25, 0.1, 0.05)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidcompress bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--plan", choices=("grid", "issue", "scaling"), default="grid",
                        help="issue: the TTFT rows issue 6 must show; scaling: TTFT and memory vs frames up to OOM")
    parser.add_argument("--models", nargs="+", default=None, help=f"of {', '.join(FULL_MODELS)}")
    parser.add_argument("--frames", nargs="+", type=int, default=None,
                        help=f"frame counts (grid and scaling plans; scaling default {' '.join(map(str, SCALING_FRAMES))})")
    parser.add_argument("--methods", nargs="+", default=None, help="default: every token-stage method")
    parser.add_argument("--retentions", nargs="+", type=float, default=None, help="(grid plan)")
    parser.add_argument("--retention", type=float, default=0.1, help="budget of the issue plan and the report")
    parser.add_argument("--warmup", type=int, default=None,
                        help=f"untimed rounds (default 3; issue plan {ISSUE_SETTINGS.warmup})")
    parser.add_argument("--rounds", "--runs", dest="runs", type=int, default=None,
                        help=f"timed rounds, every configuration once per round (default 10; issue plan {ISSUE_SETTINGS.runs})")
    parser.add_argument("--decode-tokens", type=int, default=8)
    parser.add_argument("--decode-runs", type=int, default=None,
                        help=f"decode runs per configuration (default 2; issue plan {ISSUE_SETTINGS.decode_runs})")
    parser.add_argument("--frame-size", type=int, default=448, help="side of the synthetic video's square frames")
    parser.add_argument("--attn", default="sdpa", help="attn_implementation of vision tower and LLM")
    parser.add_argument("--vision-attention", choices=VISION_ATTENTION_CHOICES, default="batched",
                        help="batched: Qwen2.5-VL's windowed ViT in one sdpa call per group of equal windows, exact "
                        "(vidcompress.models.vision_attention); stock: --attn's per-window loop")
    parser.add_argument("--cuda-graph", action=argparse.BooleanOptionalAction, default=True,
                        help="replay each method's token stage as one CUDA graph (vidcompress.graphed; the default, "
                        "as a server would run it); --no-cuda-graph: launch its kernels one by one from Python")
    parser.add_argument("--torch-compile", action="store_true",
                        help="with --cuda-graph: compile each token stage with torch.compile before capturing it "
                        "(vidcompress.graphed(..., torch_compile=True); the warm-up rounds pay the compile)")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="MODEL=PATH",
                        help="load real weights for MODEL from PATH (local path or hub id)")
    parser.add_argument("--time-budget-s", type=float, default=None,
                        help="cut rounds and skip comparisons so that measuring ends within this (plus one run)")
    parser.add_argument("--device", default=None, help="default: cuda when available")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--name", default=None, help="file stem (default: bench_e2e_<plan>_<date>)")
    parser.add_argument("--quick", action="store_true", help="0.5B and 3B models, 32/64 frames, 10%%, fewer runs")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run with the tiny random models")
    parser.add_argument("--report-only", type=Path, default=None, help="rebuild markdown and plots from a JSON")
    return parser


def _checkpoints(pairs: list[str]) -> dict[str, str]:
    checkpoints = {}
    for pair in pairs:
        model, sep, path = pair.partition("=")
        if not sep or model not in FULL_MODELS:
            raise ValueError(f"--checkpoint expects MODEL=PATH with MODEL one of {', '.join(FULL_MODELS)}, got {pair!r}")
        checkpoints[model] = path
    return checkpoints


def _validate(args: argparse.Namespace) -> None:
    from vidcompress.registry import available_methods

    known = set(FULL_MODELS) | set(TINY_MODELS)
    for model in args.models or []:
        if model not in known:
            raise ValueError(f"unknown model {model!r}; choose from {', '.join(sorted(known))}")
    for method in args.methods or []:
        if method not in available_methods():
            raise ValueError(f"unknown method {method!r}; see `vidcompress methods`")
    for retention in [*(args.retentions or []), args.retention]:
        if not 0.0 < retention <= 1.0:
            raise ValueError(f"retentions must lie in (0, 1], got {retention}")
    if args.torch_compile and not args.cuda_graph:
        raise ValueError("--torch-compile compiles the captured token stage: drop --no-cuda-graph")
    if any(frames < 1 for frames in args.frames or []):
        raise ValueError("frame counts must be positive")


def _settings(args: argparse.Namespace) -> Settings:
    """The mode's repetitions, with ``--warmup`` / ``--rounds`` / ``--decode-runs`` where given."""
    if args.tiny:
        base = Settings(warmup=1, runs=2, decode_tokens=2, decode_runs=1)
    elif args.quick:
        base = Settings(warmup=2, runs=5, decode_tokens=args.decode_tokens, decode_runs=1)
    elif args.plan == "issue":
        base = dataclasses.replace(ISSUE_SETTINGS, decode_tokens=args.decode_tokens)
    else:
        base = Settings(warmup=3, runs=10, decode_tokens=args.decode_tokens, decode_runs=2)
    given = {"warmup": args.warmup, "runs": args.runs, "decode_runs": args.decode_runs}
    return dataclasses.replace(base, **{key: value for key, value in given.items() if value is not None})


def _cases(args: argparse.Namespace, settings: Settings) -> list[Case]:
    methods = args.methods or token_stage_methods()
    if args.tiny:
        models, frames = args.models or list(TINY_MODELS), args.frames or (4, 8)
    elif args.quick:
        models, frames = args.models or ["llava-ov-0.5b", "qwen2.5-vl-3b"], args.frames or (32, 64)
    else:
        models, frames = args.models, args.frames
    if args.plan == "scaling":
        return scaling_plan(models or ISSUE_MODELS, methods, args.retention, frames or SCALING_FRAMES)
    if args.plan == "issue" and not (args.tiny or args.quick):
        return issue_plan(models or ISSUE_MODELS, methods, args.retention, settings)
    retentions = args.retentions or ((1.0, args.retention) if args.quick else DEFAULT_RETENTIONS)
    return grid_plan(models or list(FULL_MODELS), frames or DEFAULT_FRAMES, methods, retentions, settings)


def _reference_frames(doc: dict) -> tuple[int, int]:
    """Frame counts of the TTFT-vs-ideal table (and scaling reference) and of the speed-up table."""
    frames = sorted({row["frames"] for row in doc["rows"]})
    ideal_frames = 32 if 32 in frames or not frames else frames[0]
    speedup_frames = 64 if 64 in frames or not frames else frames[-1]
    return ideal_frames, speedup_frames


def _report(doc: dict, stem: Path, retention: float) -> None:
    ideal_frames, speedup_frames = _reference_frames(doc)
    text = markdown_report(doc, retention, ideal_frames, speedup_frames)
    stem.with_suffix(".md").write_text(text + "\n")
    for path in [stem.with_suffix(".md"), *write_plots(doc, stem, retention, ideal_frames)]:
        log_progress(f"wrote {path}")


def bench_command(argv: list[str]) -> int:
    """Run the benchmark with command-line arguments ``argv``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        _validate(args)
        checkpoints = _checkpoints(args.checkpoint)
    except ValueError as error:
        print(f"vidcompress bench: {error}", file=sys.stderr)
        return 2
    if args.report_only is not None:
        doc = json.loads(args.report_only.read_text())
        _report(doc, args.report_only.with_suffix(""), args.retention)
        return 0
    if args.tiny:
        args.retentions = args.retentions or [1.0, 0.25]
        args.retention = min(args.retentions)
        device = torch.device(args.device or "cpu")
    else:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        settings = _settings(args)
    except ValueError as error:
        print(f"vidcompress bench: {error}", file=sys.stderr)
        return 2
    cases = _cases(args, settings)
    mode = "tiny" if args.tiny else ("quick" if args.quick else args.plan)
    name = args.name or f"bench_e2e_{mode}_{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%dT%H%M%S')}"
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        print(f"vidcompress bench: --name may hold letters, digits, '.', '_' and '-' only, got {name!r}", file=sys.stderr)
        return 2
    stem = args.out / name
    log_progress(f"{len(cases)} configurations on {device}; results in {stem}.json")
    doc = run_plan(
        cases,
        stem.with_suffix(".json"),
        device=device,
        command=["vidcompress", "bench", *argv],
        checkpoints=checkpoints,
        attn_implementation=args.attn,
        vision_attention=args.vision_attention,
        cuda_graph=args.cuda_graph,
        torch_compile=args.torch_compile,
        frame_size=112 if args.tiny else args.frame_size,
        time_budget_s=args.time_budget_s,
        prepare_repeats=1 if args.tiny else 3,
        progress=log_progress,
    )
    doc["scaling"] = scaling_summary(doc, args.retention, _reference_frames(doc)[0])
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    _report(doc, stem, args.retention)
    return 0

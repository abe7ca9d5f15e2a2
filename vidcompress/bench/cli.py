"""``vidcompress bench``: end-to-end speed and memory of every method on full-size architectures.

    vidcompress bench --plan issue --time-budget-s 480                    # issue 6's rows, one H100 call
    vidcompress bench --models llava-ov-7b --frames 32 64 --retentions 1 0.25 0.1 --methods fastvid holitom
    vidcompress bench --quick                                             # a few minutes: 0.5B/3B, fewer runs
    vidcompress bench --tiny                                              # CPU smoke run with the tiny models
    vidcompress bench --checkpoint llava-ov-7b=/path/to/llava-onevision-qwen2-7b-ov-hf ...
    vidcompress bench --report-only benchmarks/results/bench_e2e_issue_....json

Writes ``<out>/<name>.json`` (after every configuration), ``<name>.md`` and the plots ``<name>_*.png``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from pathlib import Path

import torch

from .measure import Settings
from .models import FULL_MODELS
from .report import markdown_report, write_plots
from .runner import TINY_MODELS, grid_plan, issue_plan, log_progress, run_plan, token_stage_methods

__all__ = ["bench_command", "build_parser"]

DEFAULT_FRAMES = (16, 32, 64, 128)
DEFAULT_RETENTIONS = (1.0, 0.5, 0.25, 0.1, 0.05)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidcompress bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--plan", choices=("grid", "issue"), default="grid", help="issue: the rows issue 6 must show")
    parser.add_argument("--models", nargs="+", default=None, help=f"of {', '.join(FULL_MODELS)}")
    parser.add_argument("--frames", nargs="+", type=int, default=None, help="frame counts (grid plan)")
    parser.add_argument("--methods", nargs="+", default=None, help="default: every token-stage method")
    parser.add_argument("--retentions", nargs="+", type=float, default=None, help="(grid plan)")
    parser.add_argument("--retention", type=float, default=0.1, help="budget of the issue plan and the report")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--decode-tokens", type=int, default=8)
    parser.add_argument("--decode-runs", type=int, default=2)
    parser.add_argument("--frame-size", type=int, default=448, help="side of the synthetic video's square frames")
    parser.add_argument("--attn", default="sdpa", help="attn_implementation of vision tower and LLM")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="MODEL=PATH",
                        help="load real weights for MODEL from PATH (local path or hub id)")
    parser.add_argument("--time-budget-s", type=float, default=None, help="skip cases not started within this")
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
    if any(frames < 1 for frames in args.frames or []):
        raise ValueError("frame counts must be positive")


def _cases(args: argparse.Namespace, settings: Settings):
    methods = args.methods or token_stage_methods()
    if args.tiny:
        models = args.models or list(TINY_MODELS)
        return grid_plan(models, args.frames or (4, 8), methods, args.retentions, settings)
    if args.quick:
        models = args.models or ["llava-ov-0.5b", "qwen2.5-vl-3b"]
        return grid_plan(models, args.frames or (32, 64), methods, args.retentions or (1.0, args.retention), settings)
    if args.plan == "issue":
        return issue_plan(args.models or ("qwen2.5-vl-7b", "llava-ov-7b"), methods, args.retention)
    models = args.models or list(FULL_MODELS)
    return grid_plan(models, args.frames or DEFAULT_FRAMES, methods, args.retentions or DEFAULT_RETENTIONS, settings)


def _report(doc: dict, stem: Path, args: argparse.Namespace) -> None:
    frames = sorted({row["frames"] for row in doc["rows"]})
    ideal_frames = 32 if 32 in frames or not frames else frames[0]
    speedup_frames = 64 if 64 in frames or not frames else frames[-1]
    text = markdown_report(doc, args.retention, ideal_frames, speedup_frames)
    stem.with_suffix(".md").write_text(text + "\n")
    for path in [stem.with_suffix(".md"), *write_plots(doc, stem, args.retention)]:
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
        _report(doc, args.report_only.with_suffix(""), args)
        return 0
    if args.tiny:
        args.retentions = args.retentions or [1.0, 0.25]
        args.retention = min(args.retentions)
        warmup, runs, decode_tokens, decode_runs = 1, 1, 2, 1
        device = torch.device(args.device or "cpu")
    else:
        quick = args.quick
        warmup, runs = (2, 5) if quick else (args.warmup, args.runs)
        decode_tokens, decode_runs = args.decode_tokens, (1 if quick else args.decode_runs)
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    settings = Settings(warmup=warmup, runs=runs, decode_tokens=decode_tokens, decode_runs=decode_runs)
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
        frame_size=112 if args.tiny else args.frame_size,
        time_budget_s=args.time_budget_s,
        prepare_repeats=1 if args.tiny else 3,
        progress=log_progress,
    )
    _report(doc, stem, args)
    return 0

"""Score compression methods on the test-bed: accuracy per question family, method and retention.

Every (method, retention) runs through the public API — ``vidcompress.wrap(model, method=..., retention=...,
processor=...).ask_batch(...)`` — over the fixed test split (or its first ``limit`` items). An answer is right when
the first generated word equals the expected word. A (method, retention) that the registry refuses (``none`` below
1.0, say) is skipped and listed with the reason.

CLI (wired as ``vidcompress eval``)::

    vidcompress eval --suite testbed --methods all --retention 1.0,0.5,0.25,0.1,0.05 [--limit N] [--json PATH]

writes the JSON (default ``benchmarks/results/testbed-v<version>.json``) and a PNG plot next to it.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .generator import FAMILIES, TESTBED_VERSION, Sample, answer_choices, make_sample, split_seeds

__all__ = ["load_split", "first_word", "chance_accuracy", "evaluate_methods", "format_table", "plot_results", "eval_command"]

RESULTS_DIR = Path("benchmarks/results")


def load_split(split: str = "test", limit: int | None = None) -> list[Sample]:
    """The samples of the fixed ``split`` (``"test"`` or ``"validation"``), the first ``limit`` of them if given."""
    seeds = split_seeds(split)
    if limit is not None:
        if isinstance(limit, bool) or int(limit) != limit or limit <= 0:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        seeds = seeds[: int(limit)]
    return [make_sample(seed) for seed in seeds]


def first_word(text: str) -> str:
    """The first whitespace-separated word of ``text`` (empty when there is none)."""
    words = text.split()
    return words[0] if words else ""


def _per_family(values: dict[str, list[float]]) -> dict[str, float]:
    accuracy = {family: float(np.mean(values[family])) for family in FAMILIES if values[family]}
    accuracy["overall"] = float(np.mean([v for family in FAMILIES for v in values[family]]))
    return accuracy


def chance_accuracy(samples: Sequence[Sample]) -> dict[str, float]:
    """Expected accuracy of a uniform guess among each question's possible answers, per family and overall."""
    values: dict[str, list[float]] = defaultdict(list)
    for sample in samples:
        values[sample.family].append(1.0 / len(answer_choices(sample.question)))
    return _per_family(values)


def _runnable(method: str, retention: float) -> str | None:
    """``None`` when the registry builds ``method`` at ``retention``, else the reason it refuses."""
    from vidcompress.registry import get_compressor

    try:
        get_compressor(method, retention=retention)
    except ValueError as error:
        return str(error)
    return None


#: Decoder depth of the 7B LLMs (Qwen2-7B inside LLaVA-OV-7B and Qwen2.5-VL-7B) that layer-indexed defaults assume.
REFERENCE_DEPTH = 28


def depth_scaled_layers(method: str, num_layers: int) -> dict[str, int]:
    """Layer-indexed defaults of ``method`` that lie past a ``num_layers``-deep LLM, scaled to it.

    flashvid's layer 20, todre's 18, ... assume a 28-layer LLM; on a shallower model each such default becomes
    ``round(default * num_layers / 28)``, clamped to ``[1, num_layers - 1]``. Defaults that fit are kept as they are.
    """
    from vidcompress.registry import method_info

    scaled = {}
    for name, default in method_info(method).defaults.items():
        if "layer" in name and isinstance(default, int) and not isinstance(default, bool) and default > num_layers - 1:
            scaled[name] = min(max(1, round(default * num_layers / REFERENCE_DEPTH)), num_layers - 1)
    return scaled


def evaluate_methods(
    methods: Sequence[str],
    retentions: Sequence[float],
    *,
    model: Any = None,
    processor: Any = None,
    samples: Sequence[Sample] | None = None,
    limit: int | None = None,
    split: str = "test",
    batch_size: int = 16,
    device: str | torch.device | None = None,
    log: Any = None,
) -> dict[str, Any]:
    """Accuracy of every runnable (method, retention) pair on the test-bed.

    A pair is skipped, with the reason, when the registry refuses it or the method raises ``ValueError`` on the
    first batch (it needs an input this suite does not give, like f2c's frame scorer). Layer-indexed defaults that
    lie past the model's depth are scaled to it (:func:`depth_scaled_layers`) and recorded in each result's
    ``"params"``.

    Args:
        methods: registered method names (or ``+`` chains).
        retentions: fractions of visual tokens kept, each in (0, 1].
        model, processor: the model to score; default the shipped micro model (:func:`load_testbed_model`).
        samples: the items to score; default :func:`load_split` of ``split`` and ``limit``.
        batch_size: questions per ``ask_batch`` call.
        log: a ``print``-like callable for progress lines, or ``None``.

    Returns:
        ``{"testbed_version", "split", "samples", "chance", "results": [{"method", "retention", "accuracy":
        {family: fraction, "overall": fraction}, "params", "visual_tokens_out", "seconds"}], "skipped": [{"method",
        "retention", "reason"}]}``.
    """
    import vidcompress

    if not methods:
        raise ValueError("give at least one method")
    if not retentions:
        raise ValueError("give at least one retention")
    for retention in retentions:
        if not 0.0 < float(retention) <= 1.0:
            raise ValueError(f"retention must be in (0, 1], got {retention!r}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size!r}")
    if model is None:
        from .model import load_testbed_model

        model, processor = load_testbed_model(device)
    elif processor is None:
        raise ValueError("pass the processor together with the model")
    if samples is None:
        samples = load_split(split, limit)
    report: dict[str, Any] = {
        "testbed_version": TESTBED_VERSION,
        "split": split,
        "samples": len(samples),
        "chance": chance_accuracy(samples),
        "results": [],
        "skipped": [],
    }
    for method in methods:
        for retention in retentions:
            reason = _runnable(method, float(retention))
            if reason is not None:
                report["skipped"].append({"method": method, "retention": float(retention), "reason": reason})
                continue
            started = time.perf_counter()
            params = {} if "+" in method else depth_scaled_layers(method, model.config.text_config.num_hidden_layers)
            vlm = vidcompress.wrap(model, method=method, retention=float(retention), processor=processor, **params)
            hits: dict[str, list[float]] = defaultdict(list)
            tokens_out = set()
            try:
                for start in range(0, len(samples), batch_size):
                    chunk = samples[start : start + batch_size]
                    answers = vlm.ask_batch([s.video for s in chunk], [s.question for s in chunk], max_new_tokens=2)
                    for sample, answer in zip(chunk, answers):
                        hits[sample.family].append(float(first_word(answer.text) == sample.answer))
                        tokens_out.add(answer.stats["visual_tokens_out"])
            except ValueError as error:  # the method needs something this suite does not give (e.g. f2c's scorer)
                if hits:
                    raise
                report["skipped"].append({"method": method, "retention": float(retention), "reason": str(error)})
                continue
            result = {
                "method": method,
                "retention": float(retention),
                "accuracy": _per_family(hits),
                "params": params,
                "visual_tokens_out": sorted(tokens_out)[0] if len(tokens_out) == 1 else sorted(tokens_out),
                "seconds": round(time.perf_counter() - started, 2),
            }
            report["results"].append(result)
            if log is not None:
                log(f"{method:>16} @ {retention:<5} overall {result['accuracy']['overall']:.3f}")
    return report


def format_table(report: dict[str, Any]) -> str:
    """The report as a Markdown table: one row per (method, retention), one column per family."""
    columns = [*FAMILIES, "overall"]
    lines = ["| method | retention | " + " | ".join(columns) + " |", "| --- | --- |" + " --- |" * len(columns)]
    for result in report["results"]:
        cells = " | ".join(f"{result['accuracy'].get(c, float('nan')):.3f}" for c in columns)
        lines.append(f"| {result['method']} | {result['retention']:g} | {cells} |")
    chance = " | ".join(f"{report['chance'].get(c, float('nan')):.3f}" for c in columns)
    lines.append(f"| (chance) | | {chance} |")
    return "\n".join(lines)


def plot_results(report: dict[str, Any], path: str | Path) -> Path:
    """Accuracy against retention, one line per method, one panel per family and overall; saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = ["overall", *FAMILIES]
    figure, axes = plt.subplots(2, 3, figsize=(13, 7.5), sharex=True, sharey=True)
    by_method: dict[str, list[dict]] = defaultdict(list)
    for result in report["results"]:
        by_method[result["method"]].append(result)
    for axis, panel in zip(axes.flat, panels):
        for method, results in sorted(by_method.items()):
            results = sorted(results, key=lambda r: r["retention"])
            xs = [r["retention"] for r in results]
            ys = [r["accuracy"].get(panel, float("nan")) for r in results]
            axis.plot(xs, ys, marker="o", label=method)
        axis.axhline(report["chance"].get(panel, float("nan")), color="gray", linestyle=":", label="chance")
        axis.set_xscale("log")
        axis.set_title(panel)
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
    for axis in axes[-1]:
        axis.set_xlabel("retention (fraction of visual tokens)")
    for axis in axes[:, 0]:
        axis.set_ylabel("accuracy")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8)
    figure.suptitle(f"vidcompress synthetic test-bed v{report['testbed_version']} ({report['samples']} questions)")
    figure.tight_layout(rect=(0, 0.06, 1, 0.96))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _parse_retentions(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"retention must be comma-separated numbers, got {text!r}") from error
    if not values or any(not 0.0 < v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"every retention must be in (0, 1], got {text!r}")
    return values


def eval_command(argv: list[str]) -> int:
    """``vidcompress eval --suite testbed --methods all --retention 1.0,0.5,... [--limit N] [--json PATH]``."""
    from vidcompress.registry import available_methods

    parser = argparse.ArgumentParser(prog="vidcompress eval", description="Accuracy of methods on an evaluation suite.")
    parser.add_argument("--suite", choices=["testbed"], default="testbed")
    parser.add_argument("--methods", default="all", help="'all' or comma-separated method names")
    parser.add_argument("--retention", type=_parse_retentions, default=[1.0, 0.5, 0.25, 0.1, 0.05])
    parser.add_argument("--limit", type=int, default=None, help="score only the first N test items")
    parser.add_argument("--split", choices=["test", "validation"], default="test")
    parser.add_argument("--json", default=None, help="output JSON path (default benchmarks/results/...)")
    parser.add_argument("--plot", default=None, help="output PNG path (default: next to the JSON)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    from .model import testbed_available

    if not testbed_available():
        print("no trained test-bed weights are installed; train them with scripts/train_testbed.py")
        return 2
    methods = available_methods() if args.methods.strip() == "all" else [m.strip() for m in args.methods.split(",")]
    try:
        report = evaluate_methods(
            methods, args.retention, limit=args.limit, split=args.split, batch_size=args.batch_size,
            device=args.device, log=print,
        )
    except ValueError as error:
        print(f"error: {error}")
        return 2
    json_path = Path(args.json) if args.json else RESULTS_DIR / f"testbed-v{TESTBED_VERSION}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    plot_path = plot_results(report, args.plot or json_path.with_suffix(".png"))
    print(format_table(report))
    for skipped in report["skipped"]:
        print(f"skipped {skipped['method']} @ {skipped['retention']:g}: {skipped['reason']}")
    print(f"wrote {json_path} and {plot_path}")
    return 0

"""Markdown tables and plots from a benchmark JSON document (``vidcompress bench --report-only`` redoes them)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from .measure import IDEAL, STAGES

__all__ = ["markdown_report", "write_plots", "frames_at_ttft", "IDEAL_TOLERANCE", "PUBLISHED_SPEEDUPS"]

IDEAL_TOLERANCE = 1.15
PUBLISHED_SPEEDUPS = {  # anchors.md §2.6 / §3, LLaVA-OV-7B
    "holitom": "TTFT 2.28x (headline)",
    "fastvid": "prefill 7.1x (headline)",
    "dycoke": "1.5x inference (headline)",
    "visionzip": "prefill 8x (images, headline)",
}


def _ok(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row for row in rows if row.get("status") == "ok"]


def _find(rows: list[dict[str, Any]], model: str, frames: int, method: str, retention: float) -> dict[str, Any] | None:
    for row in _ok(rows):
        if (row["model"], row["frames"], row["method"]) == (model, frames, method) and abs(row["retention"] - retention) < 1e-9:
            return row
    return None


def _models(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(row["model"] for row in rows))


def _methods(rows: list[dict[str, Any]]) -> list[str]:
    return [m for m in dict.fromkeys(row["method"] for row in rows) if m not in ("none", IDEAL)]


def frames_at_ttft(points: list[tuple[int, float]], reference: float) -> str:
    """Frames reachable at TTFT ``reference``, by linear interpolation of measured ``(frames, ttft)`` points."""
    points = sorted(points)
    if not points or points[0][1] > reference:
        return f"< {points[0][0]}" if points else "n/a"
    for (f0, t0), (f1, t1) in zip(points, points[1:]):
        if t0 <= reference < t1:
            return f"{f0 + (reference - t0) * (f1 - f0) / (t1 - t0):.0f}"
    return f">= {points[-1][0]}"


def _table(header: list[str], body: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in body]


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ideal_section(rows: list[dict[str, Any]], frames: int, retention: float) -> list[str]:
    lines = [f"## TTFT against the ideal, {retention:.0%} retention, {frames} frames", ""]
    lines.append(
        "Ideal = the same vision encoder run + splice + prefill of the same number of visual tokens, with no "
        f"compressor. Target: TTFT within {IDEAL_TOLERANCE}x of it for every token-stage method."
    )
    for model in _models(rows):
        ideal = _find(rows, model, frames, IDEAL, retention)
        if ideal is None:
            continue
        body = []
        for method in _methods(rows):
            row = _find(rows, model, frames, method, retention)
            if row is None:
                continue
            ratio = row["ms"]["ttft"] / ideal["ms"]["ttft"]
            verdict = "yes" if ratio <= IDEAL_TOLERANCE else "NO"
            body.append([method, row["visual_tokens_out"], _fmt(row["ms"]["compression"], 2), _fmt(row["ms"]["ttft"]),
                         _fmt(ideal["ms"]["ttft"]), f"{ratio:.3f}", verdict])
        lines += ["", f"**{model}**", ""]
        lines += _table(["method", "tokens", "compression ms", "TTFT ms", "ideal TTFT ms", "ratio", "within"], body)
    return lines + [""]


def _speedup_section(rows: list[dict[str, Any]], frames: int, retention: float) -> list[str]:
    lines = [f"## Speed-up over no compression, {retention:.0%} retention, {frames} frames", ""]
    for model in _models(rows):
        base = _find(rows, model, frames, "none", 1.0)
        if base is None:
            continue
        body = []
        for method in [IDEAL, *_methods(rows)]:
            row = _find(rows, model, frames, method, retention)
            if row is None:
                continue
            body.append([method, f"{base['ms']['ttft'] / row['ms']['ttft']:.2f}x",
                         f"{base['ms']['prefill'] / row['ms']['prefill']:.2f}x",
                         f"{base['tflops']['prefill_fastv'] / row['tflops']['prefill_fastv']:.1f}x",
                         PUBLISHED_SPEEDUPS.get(method, "")])
        lines += [f"**{model}** (no compression: TTFT {base['ms']['ttft']:.1f} ms, prefill {base['ms']['prefill']:.1f} ms)", ""]
        lines += _table(["method", "TTFT speed-up", "prefill speed-up", "FLOPs (FastV) ratio", "published"], body) + [""]
    return lines


def _scaling_section(rows: list[dict[str, Any]], retention: float, reference_frames: int = 32) -> list[str]:
    lines = [f"## Frame scaling at {retention:.0%} retention", ""]
    lines.append(
        f"Frames each configuration fits at the TTFT of {reference_frames} uncompressed frames (interpolated between "
        "measured frame counts), and the largest frame count that ran (the first failure after it)."
    )
    for model in _models(rows):
        reference = _find(rows, model, reference_frames, "none", 1.0)
        body = []
        for method, r in [("none", 1.0), (IDEAL, retention), *((m, retention) for m in _methods(rows))]:
            mine = [row for row in rows if (row["model"], row["method"]) == (model, method) and abs(row["retention"] - r) < 1e-9]
            ok = [(row["frames"], row["ms"]["ttft"]) for row in _ok(mine)]
            if not ok:
                continue
            fits = frames_at_ttft(ok, reference["ms"]["ttft"]) if reference else "n/a"
            largest = max(f for f, _ in ok)
            failed = sorted(row["frames"] for row in mine if row["status"] in ("oom",) or row["status"].startswith("error"))
            failure = f"{failed[0]} ({next(row['status'] for row in mine if row['frames'] == failed[0])})" if failed else "-"
            body.append([method, f"{r:g}", fits, largest, failure])
        head = f"reference TTFT {reference['ms']['ttft']:.1f} ms" if reference else "no 32-frame reference"
        lines += ["", f"**{model}** ({head})", ""]
        lines += _table(["method", "retention", f"frames at {reference_frames}f-uncompressed TTFT", "largest frames run",
                         "first failure"], body)
    return lines + [""]


def _all_rows(rows: list[dict[str, Any]]) -> list[str]:
    header = ["model", "F", "method", "r", "status", "tokens in→out", "layer-avg", "enc ms", "comp ms", "prefill ms",
              "TTFT ms", "decode ms/tok", "peak MiB", "TFLOPs FastV", "TFLOPs true"]
    body = []
    for row in rows:
        if row.get("status") != "ok":
            body.append([row["model"], row["frames"], row["method"], f"{row['retention']:g}", row["status"]] + ["-"] * 10)
            continue
        ms = row["ms"]
        body.append([row["model"], row["frames"], row["method"], f"{row['retention']:g}", "ok",
                     f"{row['visual_tokens_in']}→{row['visual_tokens_out']}", _fmt(row["layer_averaged_visual_tokens"]),
                     _fmt(ms["vision_encoder"]), _fmt(ms["compression"], 2), _fmt(ms["prefill"]), _fmt(ms["ttft"]),
                     _fmt(ms["decode_per_token"], 2), _fmt(row["peak_memory_mb"], 0),
                     _fmt(row["tflops"]["prefill_fastv"], 2), _fmt(row["tflops"]["prefill_true"], 2)])
    return ["## All configurations", ""] + _table(header, body) + [""]


def markdown_report(doc: dict[str, Any], retention: float = 0.1, ideal_frames: int = 32, speedup_frames: int = 64) -> str:
    """The benchmark as markdown: conditions, the issue's three views, then every row.

    ``ideal_frames``: frame count of the TTFT-vs-ideal table and of the frame-scaling reference;
    ``speedup_frames``: frame count of the speed-up table.
    """
    rows = doc["rows"]
    versions = ", ".join(f"{k} {v}" for k, v in doc["versions"].items())
    weights = "RANDOM weights (timing and memory do not depend on them)" if doc["random_weights"] else "real weights"
    lines = [f"# vidcompress bench ({doc['date']})", "", f"- command: `{doc['command']}`",
             f"- device: {doc.get('gpu') or doc.get('device')}; {versions}", f"- models: {weights}"]
    for name, info in doc["models"].items():
        lines.append(f"  - {name}: {info['checkpoint']}, {info['parameters'] / 1e9:.2f} B parameters, {info['dtype']}, "
                     f"attention {info['attn_implementation']}")
    lines += [f"- timing: {doc['timing']}", f"- FLOPs: {doc['flops_convention']}", ""]
    lines += _ideal_section(rows, ideal_frames, retention) + _speedup_section(rows, speedup_frames, retention)
    lines += _scaling_section(rows, retention, ideal_frames) + _all_rows(rows)
    return "\n".join(lines)


def _stage_figure(rows: list[dict[str, Any]], model: str, path: Path) -> bool:
    import matplotlib.pyplot as plt

    mine = [row for row in _ok(rows) if row["model"] == model]
    if not mine:
        return False
    counts = defaultdict(int)
    for row in mine:
        counts[row["frames"]] += 1
    frames = 32 if 32 in counts else max(counts, key=counts.get)
    base = _find(rows, model, frames, "none", 1.0)
    methods = [IDEAL, *_methods(mine)]
    columns = 4
    lines = -(-len(methods) // columns)
    figure, axes = plt.subplots(lines, columns, figsize=(4 * columns, 3 * lines), sharey=True, squeeze=False)
    for axis, method in zip(axes.flat, methods):
        points = sorted(((row["retention"], row) for row in mine if row["frames"] == frames and row["method"] == method),
                        key=lambda item: -item[0])
        if base is not None:
            points.insert(0, (1.0, base))
        labels = [f"{r:g}" for r, _ in points]
        bottom = [0.0] * len(points)
        for stage in STAGES:
            heights = [row["ms"][stage] for _, row in points]
            axis.bar(labels, heights, bottom=bottom, label=stage)
            bottom = [b + h for b, h in zip(bottom, heights)]
        axis.set_title(method)
        axis.set_xlabel("retention")
    for axis in axes.flat[len(methods):]:
        axis.axis("off")
    axes[0][0].set_ylabel("TTFT (ms)")
    axes[0][0].legend(fontsize=7)
    figure.suptitle(f"{model}, {frames} frames: TTFT by stage vs retention")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return True


def _frames_figure(rows: list[dict[str, Any]], retention: float, value: str, path: Path) -> bool:
    import matplotlib.pyplot as plt

    models = _models(_ok(rows))
    if not models:
        return False
    figure, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
    for axis, model in zip(axes[0], models):
        for method, r in [("none", 1.0), (IDEAL, retention), *((m, retention) for m in _methods(rows))]:
            points = sorted((row["frames"], _value(row, value)) for row in _ok(rows)
                            if (row["model"], row["method"]) == (model, method) and abs(row["retention"] - r) < 1e-9)
            if points:
                style = "k--" if method == "none" else ("k:" if method == IDEAL else "-")
                axis.plot(*zip(*points), style, marker="o", markersize=3, label=f"{method} @ {r:g}")
        axis.set_xscale("log", base=2)
        axis.set_xlabel("frames")
        axis.set_ylabel("TTFT (ms)" if value == "ttft" else "peak GPU memory (MiB)")
        axis.set_title(model)
    axes[0][0].legend(fontsize=6, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return True


def _value(row: dict[str, Any], value: str) -> float:
    return row["ms"]["ttft"] if value == "ttft" else (row["peak_memory_mb"] or 0.0)


def write_plots(doc: dict[str, Any], stem: Path, retention: float = 0.1) -> list[Path]:
    """TTFT stacked by stage vs retention (one figure per model), TTFT vs frames and memory vs frames."""
    import matplotlib

    matplotlib.use("Agg")
    rows, written = doc["rows"], []
    for model in _models(rows):
        path = stem.with_name(f"{stem.name}_ttft_stages_{model}.png")
        if _stage_figure(rows, model, path):
            written.append(path)
    for value, suffix in (("ttft", "ttft_vs_frames"), ("memory", "memory_vs_frames")):
        path = stem.with_name(f"{stem.name}_{suffix}.png")
        if (value == "ttft" or doc.get("gpu")) and _frames_figure(rows, retention, value, path):
            written.append(path)
    return written

"""Markdown tables and plots from a benchmark JSON document (``vidcompress bench --report-only`` redoes them)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from .measure import IDEAL, STAGES

__all__ = [
    "markdown_report",
    "write_plots",
    "frames_at_ttft",
    "interpolate_frames",
    "scaling_summary",
    "IDEAL_TOLERANCE",
    "PUBLISHED_SPEEDUPS",
]

IDEAL_TOLERANCE = 1.15
VISION_ATTENTION_NOTE = (
    "batched = Qwen2.5-VL's windowed ViT runs each group of equal-length windows in one sdpa call "
    "(vidcompress.models.vision_attention, same result as the stock per-window loop); stock = the loop; "
    "LLaVA-OV's SigLIP is unaffected"
)
TOKEN_STAGE_NOTE = (
    "cuda_graph = each method's token stage replays as one CUDA graph per input signature (vidcompress.graphed: "
    "input copy, replay, output clone, all timed); cuda_graph_compiled = the same after torch.compile "
    "(graphed(..., torch_compile=True); compiling happens in the warm-up rounds); eager = its kernels launched one by "
    "one from Python"
)
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


def interpolate_frames(points: list[tuple[int, float]], reference: float) -> tuple[float | None, str]:
    """Frames at TTFT ``reference`` on the measured ``(frames, ttft)`` curve, linearly interpolated between counts.

    Returns ``(frames, "interpolated")``, ``(smallest count, "below")`` when even that is slower, ``(largest count,
    "above")`` when even that is faster, or ``(None, "none")`` without points.
    """
    points = sorted(points)
    if not points:
        return None, "none"
    if points[0][1] > reference:
        return float(points[0][0]), "below"
    for (f0, t0), (f1, t1) in zip(points, points[1:]):
        if t0 <= reference < t1:
            return f0 + (reference - t0) * (f1 - f0) / (t1 - t0), "interpolated"
    return float(points[-1][0]), "above"


def frames_at_ttft(points: list[tuple[int, float]], reference: float) -> str:
    """:func:`interpolate_frames` as text: ``"48"``, ``"< 16"``, ``">= 64"`` or ``"n/a"``."""
    frames, kind = interpolate_frames(points, reference)
    return {"none": "n/a", "below": f"< {frames:.0f}", "above": f">= {frames:.0f}"}.get(kind, f"{frames:.0f}")


def _memory_limit_estimate(points: list[tuple[int, float]], total_mb: float | None) -> float | None:
    """Frames at which peak memory would reach ``total_mb``, extrapolating the last two measured counts linearly."""
    points = sorted(p for p in points if p[1])
    if total_mb is None or len(points) < 2:
        return None
    (f0, m0), (f1, m1) = points[-2], points[-1]
    if m1 <= m0:
        return None
    return round(f1 + (total_mb - m1) * (f1 - f0) / (m1 - m0), 0)


def _configurations(rows: list[dict[str, Any]], retention: float) -> list[tuple[str, float]]:
    return [("none", 1.0), (IDEAL, retention), *((m, retention) for m in _methods(rows))]


def _mine(rows: list[dict[str, Any]], model: str, method: str, retention: float) -> list[dict[str, Any]]:
    return [row for row in rows if (row["model"], row["method"]) == (model, method) and abs(row["retention"] - retention) < 1e-9]


def scaling_summary(doc: dict[str, Any], retention: float = 0.1, reference_frames: int = 32) -> dict[str, Any]:
    """Per model and configuration: frames reachable at the TTFT of ``reference_frames`` uncompressed frames
    (interpolated on the measured TTFT-vs-frames curve), the largest frame count that ran, the first failure, and the
    frame count where peak memory would reach the GPU's (linear extrapolation, an estimate)."""
    rows, summary = doc["rows"], {}
    for model in _models(rows):
        reference = _find(rows, model, reference_frames, "none", 1.0)
        configurations = {}
        for method, r in _configurations(rows, retention):
            mine = _mine(rows, model, method, r)
            ok = _ok(mine)
            if not ok:
                continue
            frames, kind = interpolate_frames([(row["frames"], row["ms"]["ttft"]) for row in ok], reference["ms"]["ttft"]) if reference else (None, "none")
            failed = sorted((row["frames"], row["status"]) for row in mine if row["status"] == "oom" or row["status"].startswith("error"))
            configurations[method] = {
                "retention": r,
                "frames_at_reference_ttft": None if frames is None else round(frames, 1),
                "frames_at_reference_ttft_kind": kind,
                "largest_frames_run": max(row["frames"] for row in ok),
                "first_failure": {"frames": failed[0][0], "status": failed[0][1]} if failed else None,
                "frames_tried": sorted({row["frames"] for row in mine}),
                "skipped_frames": sorted(row["frames"] for row in mine if row["status"].startswith("skipped")),
                "memory_limit_frames_estimate": _memory_limit_estimate(
                    [(row["frames"], row["peak_memory_mb"]) for row in ok], doc.get("gpu_memory_mb")
                ),
            }
        summary[model] = {
            "reference_frames": reference_frames,
            "reference_ttft_ms": reference["ms"]["ttft"] if reference else None,
            "configurations": configurations,
        }
    return summary


def _table(header: list[str], body: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in body]


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _spread(paired: dict[str, float] | None) -> str:
    return "-" if paired is None else f"{paired['q1']:.3f}–{paired['q3']:.3f} ({paired['min']:.3f}–{paired['max']:.3f})"


def _ideal_section(rows: list[dict[str, Any]], frames: int, retention: float) -> list[str]:
    lines = [f"## TTFT against the ideal, {retention:.0%} retention, {frames} frames", ""]
    lines.append(
        "Ideal = the same vision encoder run + splice + prefill of the same number of visual tokens, with no "
        f"compressor. Target: TTFT within {IDEAL_TOLERANCE}x of it for every token-stage method. Ratio = median over "
        "rounds of the method's TTFT / the ideal's TTFT in the same round (the configurations run interleaved); "
        "spread = quartiles (range); rows without rounds (older JSON) show the ratio of medians."
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
            paired = row.get("ttft_ratio_to_ideal")
            ratio = paired["median"] if paired else row["ms"]["ttft"] / ideal["ms"]["ttft"]
            verdict = "yes" if ratio <= IDEAL_TOLERANCE else "NO"
            body.append([method, row["visual_tokens_out"], _fmt(row["ms"]["compression"], 2), _fmt(row["ms"]["ttft"]),
                         _fmt(ideal["ms"]["ttft"]), f"{ratio:.3f}", _spread(paired), row.get("rounds", "-"), verdict])
        lines += ["", f"**{model}**", ""]
        lines += _table(["method", "tokens", "compression ms", "TTFT ms", "ideal TTFT ms", "ratio", "spread", "rounds",
                         "within"], body)
    return lines + [""]


def _speedup_section(rows: list[dict[str, Any]], frames: int, retention: float) -> list[str]:
    lines = [f"## Speed-up over no compression, {retention:.0%} retention, {frames} frames", ""]
    lines.append("TTFT speed-up = median over rounds of no compression's TTFT / the method's TTFT in the same round; "
                 "prefill speed-up = ratio of medians.")
    lines.append("")
    for model in _models(rows):
        base = _find(rows, model, frames, "none", 1.0)
        if base is None:
            continue
        body = []
        for method in [IDEAL, *_methods(rows)]:
            row = _find(rows, model, frames, method, retention)
            if row is None:
                continue
            paired = row.get("ttft_speedup_vs_none")
            speedup = paired["median"] if paired else base["ms"]["ttft"] / row["ms"]["ttft"]
            body.append([method, f"{speedup:.2f}x", _spread(paired),
                         f"{base['ms']['prefill'] / row['ms']['prefill']:.2f}x",
                         f"{base['tflops']['prefill_fastv'] / row['tflops']['prefill_fastv']:.1f}x",
                         PUBLISHED_SPEEDUPS.get(method, "")])
        lines += [f"**{model}** (no compression: TTFT {base['ms']['ttft']:.1f} ms, prefill {base['ms']['prefill']:.1f} ms)", ""]
        lines += _table(["method", "TTFT speed-up", "spread", "prefill speed-up", "FLOPs (FastV) ratio", "published"],
                        body) + [""]
    return lines


def _scaling_section(doc: dict[str, Any], retention: float, reference_frames: int = 32) -> list[str]:
    lines = [f"## Frame scaling at {retention:.0%} retention", ""]
    lines.append(
        f"Frames each configuration fits at the TTFT of {reference_frames} uncompressed frames, **linearly "
        "interpolated** on its measured TTFT-vs-frames curve (`<`: even the smallest count is slower; `>=`: even the "
        "largest is faster), the largest frame count that ran within GPU memory, the first failure (`oom` = CUDA out "
        "of memory), and where peak memory would reach the GPU's (linear extrapolation of the last two counts, an "
        "estimate). FlashVID claims 10x more frames at the same compute on Qwen2.5-VL (anchors.md §2.6)."
    )
    for model, summary in scaling_summary(doc, retention, reference_frames).items():
        body = []
        for method, item in summary["configurations"].items():
            fits = {"none": "n/a", "below": "< {:.0f}", "above": ">= {:.0f}"}.get(
                item["frames_at_reference_ttft_kind"], "{:.0f}").format(item["frames_at_reference_ttft"])
            failure = item["first_failure"]
            skipped = ", ".join(map(str, item["skipped_frames"])) or "-"
            body.append([method, f"{item['retention']:g}", fits, item["largest_frames_run"],
                         "-" if failure is None else f"{failure['frames']} ({failure['status']})",
                         _fmt(item["memory_limit_frames_estimate"], 0), skipped])
        reference = summary["reference_ttft_ms"]
        head = f"reference TTFT {reference:.1f} ms" if reference else f"no {reference_frames}-frame reference"
        lines += ["", f"**{model}** ({head})", ""]
        lines += _table(["method", "retention", f"frames at {reference_frames}f-uncompressed TTFT", "largest frames run",
                         "first failure", "memory limit (est. frames)", "skipped frames"], body)
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
    lines.append(f"- vision attention: {doc.get('vision_attention', 'stock')} ({VISION_ATTENTION_NOTE})")
    lines.append(f"- token stage: {doc.get('token_stage', 'eager')} ({TOKEN_STAGE_NOTE})")
    lines += [f"- timing: {doc['timing']}", f"- FLOPs: {doc['flops_convention']}"]
    if doc.get("time_budget_s") is not None:
        skipped = sum(1 for row in rows if row["status"].startswith("skipped: time"))
        lines.append(f"- time budget {doc['time_budget_s']:.0f} s, used {doc.get('elapsed_s', 0):.0f} s; "
                     f"{skipped} configurations skipped for time")
    lines += [""] + _ideal_section(rows, ideal_frames, retention) + _speedup_section(rows, speedup_frames, retention)
    lines += _scaling_section(doc, retention, ideal_frames) + _all_rows(rows)
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


def _frames_figure(doc: dict[str, Any], retention: float, value: str, path: Path, reference_frames: int) -> bool:
    """TTFT (with the reference TTFT of ``reference_frames`` uncompressed frames) or peak memory (with the GPU's
    memory) against frames, one panel per model."""
    import matplotlib.pyplot as plt

    rows = doc["rows"]
    models = _models(_ok(rows))
    if not models:
        return False
    figure, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
    for axis, model in zip(axes[0], models):
        for method, r in _configurations(rows, retention):
            points = sorted((row["frames"], _value(row, value)) for row in _ok(_mine(rows, model, method, r)))
            if points:
                style = "k--" if method == "none" else ("k:" if method == IDEAL else "-")
                axis.plot(*zip(*points), style, marker="o", markersize=3, label=f"{method} @ {r:g}")
        reference = _find(rows, model, reference_frames, "none", 1.0)
        if value == "ttft" and reference is not None:
            axis.axhline(reference["ms"]["ttft"], color="red", linewidth=0.8,
                         label=f"TTFT of {reference_frames} uncompressed frames")
        if value == "memory" and doc.get("gpu_memory_mb"):
            axis.axhline(doc["gpu_memory_mb"], color="red", linewidth=0.8, label="GPU memory")
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


def write_plots(doc: dict[str, Any], stem: Path, retention: float = 0.1, reference_frames: int = 32) -> list[Path]:
    """TTFT stacked by stage vs retention (one figure per model), TTFT vs frames (with the TTFT of
    ``reference_frames`` uncompressed frames) and memory vs frames."""
    import matplotlib

    matplotlib.use("Agg")
    rows, written = doc["rows"], []
    for model in _models(rows):
        path = stem.with_name(f"{stem.name}_ttft_stages_{model}.png")
        if _stage_figure(rows, model, path):
            written.append(path)
    for value, suffix in (("ttft", "ttft_vs_frames"), ("memory", "memory_vs_frames")):
        path = stem.with_name(f"{stem.name}_{suffix}.png")
        if (value == "ttft" or doc.get("gpu")) and _frames_figure(doc, retention, value, path, reference_frames):
            written.append(path)
    return written

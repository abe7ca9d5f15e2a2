"""Pictures of what a compressor did and what it cost (matplotlib).

* :func:`overlay_frames` / :func:`plot_overlay` — the frames the vision encoder saw, dropped tokens dimmed, tokens
  merged into one LLM token tinted with their group's colour and outlined, kept tokens untouched; with
  :func:`plot_overlay`, a bar per temporal step of the LLM tokens it received.
* :func:`plot_frame_budgets` — LLM tokens per temporal step, several methods side by side.
* :func:`plot_accuracy` / :func:`plot_ttft` — accuracy and time to first token against retention, from a
  :func:`vidcompress.compare.compare` table.
* :func:`viz_command` — ``vidcompress viz VIDEO --method M --retention R -o out.png [--model ...]``.

Token to pixels: token ``(t, h, w)`` of a ``(T, H, W)`` grid covers frames ``t * s .. t * s + s - 1`` (``s`` = 2 on
Qwen2.5-VL, whose tokens span two frames, 1 on LLaVA-OneVision) and, in a frame of ``height x width`` pixels as the
processor resized it, the rows ``[h * height // H, (h + 1) * height // H)`` and the columns likewise: a 28x28 px cell
on Qwen2.5-VL, ``frame_size / grid`` px on LLaVA-OneVision.

Figures are built with :class:`matplotlib.figure.Figure` (no pyplot state) and written with :func:`save_figure`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .cli import parse_params
from .compare import ComparisonTable, VideoCompression

__all__ = [
    "token_index_map",
    "pixel_groups",
    "kept_pixel_mask",
    "overlay_frames",
    "step_budgets",
    "plot_overlay",
    "plot_frame_budgets",
    "plot_accuracy",
    "plot_ttft",
    "save_figure",
    "viz_command",
]

#: Brightness factor of dropped tokens' pixels.
DIM = 0.3
#: Weight of the group colour on merged tokens' pixels.
TINT = 0.45
OUTLINE = np.array([255.0, 255.0, 255.0])


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _palette() -> np.ndarray:
    """20 distinct RGB colours (matplotlib's ``tab20``), ``float32 [20, 3]`` in 0..255."""
    from matplotlib import colormaps

    return np.asarray(colormaps["tab20"].colors, dtype=np.float32) * 255.0


# -- token -> pixel geometry -----------------------------------------------------------------------------------------
def token_index_map(
    grid: Sequence[int], frames_per_step: int, num_frames: int, height: int, width: int
) -> np.ndarray:
    """``int64 [num_frames, height, width]``: the flat input-token index that covers each pixel of each frame.

    Frames past the last full step (Qwen2.5-VL pads an odd frame count by repeating the last frame) belong to the
    last step.
    """
    steps, rows, cols = (int(v) for v in grid)
    if frames_per_step <= 0 or num_frames <= 0 or height < rows or width < cols:
        raise ValueError(
            f"cannot map grid {tuple(grid)} onto {num_frames} frame(s) of {height}x{width} px "
            f"with {frames_per_step} frame(s) per step"
        )
    step = np.minimum(np.arange(num_frames) // frames_per_step, steps - 1)
    row = np.arange(height) * rows // height
    col = np.arange(width) * cols // width
    cell = row[:, None] * cols + col[None, :]
    return step[:, None, None] * (rows * cols) + cell[None]


def _token_map(comp: VideoCompression) -> np.ndarray:
    frames, height, width = comp.frames.shape[:3]
    return token_index_map(comp.grid, comp.frames_per_step, frames, height, width)


def pixel_groups(comp: VideoCompression) -> np.ndarray:
    """``int64 [F, height, width]``: the LLM token (output row) each pixel went into, ``-1`` where dropped."""
    source = comp.out.source.detach().cpu().numpy()
    return source[_token_map(comp)]


def kept_pixel_mask(comp: VideoCompression) -> np.ndarray:
    """``bool [F, height, width]``: pixels whose token reached the LLM (kept, or merged into a kept token)."""
    return pixel_groups(comp) >= 0


def _group_sizes(comp: VideoCompression) -> np.ndarray:
    source = comp.out.source.detach().cpu().numpy()
    return np.bincount(source[source >= 0], minlength=comp.out.num_tokens)


def _boundaries(labels: np.ndarray) -> np.ndarray:
    """``bool``, same shape as ``labels [F, h, w]``: pixels with a 4-neighbour in the same frame of another label."""
    edge = np.zeros(labels.shape, dtype=bool)
    vertical = labels[:, 1:, :] != labels[:, :-1, :]
    horizontal = labels[:, :, 1:] != labels[:, :, :-1]
    edge[:, 1:, :] |= vertical
    edge[:, :-1, :] |= vertical
    edge[:, :, 1:] |= horizontal
    edge[:, :, :-1] |= horizontal
    return edge


def overlay_frames(comp: VideoCompression, dim: float = DIM, tint: float = TINT, outline: bool = True) -> np.ndarray:
    """``uint8 [F, height, width, 3]``: the frames with the method's decision drawn on them.

    Pixels of a kept token are unchanged; pixels of a dropped token are multiplied by ``dim`` (rounded); pixels of
    a token merged with others into one LLM token are blended with the group's colour (weight ``tint``) and, when
    ``outline``, each merged group's border within a frame is drawn in white.
    """
    if not 0.0 <= dim <= 1.0 or not 0.0 <= tint <= 1.0:
        raise ValueError(f"dim and tint must lie in [0, 1], got dim={dim!r}, tint={tint!r}")
    frames = comp.frames.astype(np.float64)
    groups = pixel_groups(comp)
    merged_rows = _group_sizes(comp) > 1
    merged = (groups >= 0) & merged_rows[groups.clip(min=0)]
    image = np.where((groups < 0)[..., None], frames * dim, frames)
    colours = _palette()[groups.clip(min=0) % 20]
    image = np.where(merged[..., None], (1.0 - tint) * frames + tint * colours, image)
    if outline:
        labels = np.where(merged, groups, -1)
        image[_boundaries(labels) & merged] = OUTLINE
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def step_budgets(comp: VideoCompression) -> np.ndarray:
    """``int64 [T]``: LLM tokens per temporal step (each output token counted in its representative's step)."""
    steps, rows, cols = comp.grid
    representatives = comp.out.representatives.detach().cpu().numpy()
    return np.bincount(representatives // (rows * cols), minlength=steps)


# -- figures ---------------------------------------------------------------------------------------------------------
def _title(comp: VideoCompression) -> str:
    text = (
        f"{comp.method} at retention {comp.retention:g}: {comp.out.num_tokens} of {comp.tokens.num_tokens} "
        f"visual tokens reach the LLM\n{comp.model}"
    )
    if "token" not in comp.stages:
        text += "\n(no token stage: this method removes tokens inside the LLM, not shown here)"
    return text


def plot_overlay(comp: VideoCompression, max_frames: int = 8, columns: int = 4, with_budgets: bool = True):
    """A grid of up to ``max_frames`` evenly spaced frames with :func:`overlay_frames` drawn on them, and (when
    ``with_budgets``) a bar chart of the LLM tokens each temporal step received. Returns the figure."""
    if max_frames <= 0 or columns <= 0:
        raise ValueError(f"max_frames and columns must be positive, got {max_frames}, {columns}")
    overlay = overlay_frames(comp)
    total = overlay.shape[0]
    shown = np.unique(np.linspace(0, total - 1, min(max_frames, total)).round().astype(int))
    columns = min(columns, len(shown))
    rows = -(-len(shown) // columns)
    aspect = overlay.shape[1] / overlay.shape[2]
    extra = 1 if with_budgets else 0
    fig = _figure(2.4 * columns, 2.4 * aspect * rows + 2.2 * extra + 0.8)
    layout = fig.add_gridspec(rows + extra, columns, height_ratios=[aspect] * rows + [0.9] * extra)
    budgets = step_budgets(comp)
    kept = kept_pixel_mask(comp)
    for position, frame in enumerate(shown):
        ax = fig.add_subplot(layout[position // columns, position % columns])
        ax.imshow(overlay[frame], interpolation="nearest")
        step = min(frame // comp.frames_per_step, comp.grid[0] - 1)
        ax.set_title(f"frame {frame} · {budgets[step]} tok · {kept[frame].mean():.0%} px", fontsize=8)
        ax.set_axis_off()
    if with_budgets:
        ax = fig.add_subplot(layout[rows, :])
        _bars(ax, {comp.method: budgets}, comp.tokens.grid)
    fig.suptitle(_title(comp), fontsize=9)
    return fig


def _bars(ax: Any, budgets: Mapping[str, np.ndarray], grid: Sequence[int]) -> None:
    steps = int(grid[0])
    width = 0.8 / max(1, len(budgets))
    colours = _series_colours(len(budgets))
    for index, (label, values) in enumerate(budgets.items()):
        offset = (index - (len(budgets) - 1) / 2) * width
        ax.bar(np.arange(steps) + offset, values, width=width, label=label, color=colours[index])
    ax.axhline(int(grid[1]) * int(grid[2]), color="gray", linestyle=":", linewidth=1, label="tokens per step")
    ax.set_xlabel("temporal step")
    ax.set_ylabel("LLM tokens")
    ax.set_xticks(np.arange(steps))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def _series_colours(count: int) -> list[tuple[float, float, float]]:
    """Distinct colours for ``count`` series: ``tab10`` up to 10, ``tab20`` beyond (no colour repeats up to 20)."""
    from matplotlib import colormaps

    return list(colormaps["tab10" if count <= 10 else "tab20"].colors)[:count] * (1 + count // 20)


def plot_frame_budgets(comps: Mapping[str, VideoCompression]):
    """LLM tokens per temporal step for several compressions of the same video (same grid), as grouped bars."""
    if not comps:
        raise ValueError("give at least one compression")
    grids = {tuple(comp.grid) for comp in comps.values()}
    if len(grids) != 1:
        raise ValueError(f"the compressions have different token grids: {sorted(grids)}")
    grid = next(iter(grids))
    fig = _figure(max(6.0, 0.5 * grid[0] * max(1, len(comps)) ** 0.5), 3.2)
    ax = fig.add_subplot()
    _bars(ax, {label: step_budgets(comp) for label, comp in comps.items()}, grid)
    ax.set_title(f"LLM tokens per temporal step (grid {grid[0]}x{grid[1]}x{grid[2]})", fontsize=9)
    return fig


def _summary(table: ComparisonTable | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(table, ComparisonTable):
        return table.summary()
    rows = list(table)
    if rows and "videos" in rows[0]:
        return [dict(row) for row in rows]
    return ComparisonTable(rows).summary()


def _against_retention(table: Any, key: str, ylabel: str, title: str, reference: float | None, reference_label: str):
    summary = [row for row in _summary(table) if row[key] is not None]
    if not summary:
        raise ValueError(f"the table has no {key} values to plot")
    fig = _figure(7.4, 4.0)
    ax = fig.add_subplot()
    methods = list(dict.fromkeys(row["method"] for row in summary))
    markers = "osD^v<>pX*h"
    colours = _series_colours(len(methods))
    for index, method in enumerate(methods):
        points = sorted((row["retention"], row[key]) for row in summary if row["method"] == method)
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker=markers[index % len(markers)], linewidth=1.2, markersize=5, label=method,
                color=colours[index])
    if reference is not None:
        ax.axhline(reference, color="gray", linestyle=":", linewidth=1, label=reference_label)
    ax.set_xscale("log")
    retentions = sorted({row["retention"] for row in summary})
    ax.set_xticks(retentions, [f"{r:g}" for r in retentions])
    ax.minorticks_off()
    ax.set_xlabel("retention (fraction of visual tokens at the LLM input)")
    ax.set_ylabel(ylabel)
    model = getattr(table, "model", "")
    ax.set_title(f"{title}\n{model}" if model else title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    return fig


def plot_accuracy(table: Any, chance: float | None = None):
    """Accuracy against retention, one line per method, from a :func:`~vidcompress.compare.compare` table (or its
    summary); ``chance`` draws the guessing level."""
    return _against_retention(table, "accuracy", "accuracy", "accuracy vs retention", chance, "chance")


def plot_ttft(table: Any):
    """Median time to first token (all stages before the first generated token) against retention."""
    summary = _summary(table)
    baseline = [row["ttft_ms"] for row in summary if row["method"] == "none"]
    return _against_retention(
        table, "ttft_ms", "time to first token (ms, median)", "TTFT vs retention",
        baseline[0] if baseline else None, "none (uncompressed)",
    )


def save_figure(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG (parent folders created) and return the path."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"figures are written as PNG; give a path ending in .png, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    return path


# -- command line -----------------------------------------------------------------------------------------------------
def build_viz_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vidcompress viz", description="Draw which visual tokens a method keeps, on the video's frames."
    )
    parser.add_argument("video", help="video file")
    parser.add_argument("--method", default="uniform", help="registered method or chain (see `vidcompress methods`)")
    parser.add_argument("--retention", type=float, default=0.25, help="fraction of visual tokens kept, in (0, 1]")
    parser.add_argument("-o", "--output", required=True, help="PNG file to write")
    parser.add_argument(
        "--model", default="auto",
        help="hub id, local path, testbed, tiny-qwen2.5-vl or tiny-llava-onevision (default: the test-bed model "
        "when installed, else tiny-qwen2.5-vl with random weights)",
    )
    parser.add_argument("--question", default="what happens in the video ?", help="for methods that use the question")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="method parameter (repeatable)")
    sampling = parser.add_mutually_exclusive_group()
    sampling.add_argument("--num-frames", type=int, default=16)
    sampling.add_argument("--fps", type=float, default=None)
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument("--show-frames", type=int, default=8, help="frames drawn in the grid")
    return parser


def viz_command(argv: Sequence[str] | None = None) -> int:
    """``vidcompress viz VIDEO --method M --retention R -o out.png``; returns the exit status (2 on bad input)."""
    args = build_viz_parser().parse_args(argv)
    from .compare import compress_video

    try:
        comp = compress_video(
            args.video,
            args.method,
            args.retention,
            model=args.model,
            question=args.question,
            num_frames=None if args.fps is not None else args.num_frames,
            fps=args.fps,
            max_frames=args.max_frames,
            **parse_params(args.param),
        )
        path = save_figure(plot_overlay(comp, max_frames=args.show_frames), args.output)
    except (ValueError, FileNotFoundError, OSError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"vidcompress: error: {message}", file=sys.stderr)
        return 2
    print(f"{path}: {comp.out.num_tokens} of {comp.tokens.num_tokens} visual tokens kept ({comp.model})")
    return 0

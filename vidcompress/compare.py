"""Compare compression methods on the same videos and questions: a tidy table of answers, accuracy, tokens and time.

>>> from vidcompress.compare import compare                                          # doctest: +SKIP
>>> table = compare([video], ["what happens in the video ?"], ["uniform", "flashvid"], [0.5, 0.25],
...                 truths=["right"], num_frames=8, max_new_tokens=3)                # doctest: +SKIP
>>> table.summary()            # one row per (method, retention): accuracy, tokens, median milliseconds     # doctest: +SKIP
>>> table.to_pandas()          # the same rows as a DataFrame, when pandas is installed                     # doctest: +SKIP

The model is loaded once; every (method, retention) pair wraps the same weights in its own
:class:`~vidcompress.api.VideoLLM`. ``model="auto"`` picks the trained test-bed model when it ships
(``vidcompress.testbed``) and the built-in tiny random-weight Qwen2.5-VL otherwise; every row says which
(``model``, ``random_weights``), because answers of random weights mean nothing.

:func:`compress_video` runs the adapter path (preprocess, vision encoder, compressor) on one video and keeps what
:mod:`vidcompress.viz` needs to draw which tokens a method kept: the frames as the processor resized them, the token
grid and the :class:`~vidcompress.tokens.CompressedTokens`.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .registry import UnknownMethodError, UnknownParameterError, get_compressor
from .tokens import CompressedTokens, VideoTokens, check_retention
from .video import VideoClip, VideoInput, load_video

__all__ = [
    "STAGES_MS",
    "LoadedModel",
    "ComparisonTable",
    "VideoCompression",
    "answer_matches",
    "compare",
    "compress_video",
    "default_model",
    "load_model",
    "testbed_available",
]

#: Stages timed by :meth:`VideoLLM.ask`, in pipeline order; each becomes a ``ms_<stage>`` column.
STAGES_MS = ("decode_video", "preprocess", "vision_encoder", "compression", "prefill", "generation")
#: Stages before the first generated token: their sum is the ``ttft_ms`` column.
TTFT_STAGES = STAGES_MS[:-1]
TESTBED = "testbed"


def testbed_available() -> bool:
    """Whether the trained test-bed model (``vidcompress.testbed``) is installed with its weights."""
    try:
        from .testbed.model import testbed_available as weights_shipped
    except ImportError:
        return False
    return bool(weights_shipped())


def default_model() -> str:
    """``"testbed"`` when the trained test-bed model is available, else ``"tiny-qwen2.5-vl"`` (random weights)."""
    return TESTBED if testbed_available() else "tiny-qwen2.5-vl"


@dataclass
class LoadedModel:
    """A model loaded once and shared by every compressor of a comparison.

    Attributes:
        model: the ``transformers`` model.
        processor: its processor.
        name: what the caller asked for (``"testbed"``, a tiny model's name, a hub id or path, or a class name).
        random_weights: ``True`` for the built-in tiny models, whose answers mean nothing.
    """

    model: Any
    processor: Any
    name: str
    random_weights: bool

    @property
    def label(self) -> str:
        """A human-readable name that says when the weights are random."""
        if self.name == TESTBED:
            return "test-bed micro Qwen2.5-VL (synthetic suite, not a real benchmark)"
        if self.random_weights:
            return f"{self.name} (RANDOM weights: answers are meaningless)"
        return self.name


def load_model(
    model: Any = "auto",
    processor: Any = None,
    *,
    device: str | torch.device | None = None,
    dtype: Any = "auto",
) -> LoadedModel:
    """Load ``model`` once: ``"auto"`` (see :func:`default_model`), ``"testbed"``, ``"tiny-qwen2.5-vl"``,
    ``"tiny-llava-onevision"``, a hub id or local path, a loaded model (with ``processor``), or a
    :class:`LoadedModel` (returned as is)."""
    if isinstance(model, LoadedModel):
        return model
    if not isinstance(model, str):
        if processor is None:
            raise ValueError("pass processor= together with an already loaded model")
        name = getattr(model, "name_or_path", "") or type(model).__name__
        return LoadedModel(model, processor, name, random_weights=False)
    name = default_model() if model == "auto" else model
    if name == TESTBED:
        if not testbed_available():
            raise ValueError("the test-bed model is not available (vidcompress.testbed with trained weights)")
        from .testbed.model import load_testbed_model

        loaded, loaded_processor = load_testbed_model(device)
        return LoadedModel(loaded, processor or loaded_processor, TESTBED, random_weights=False)
    from .models.tiny import TINY_MODELS

    if name in TINY_MODELS:
        loaded, loaded_processor = TINY_MODELS[name]()
        if device is not None:
            loaded = loaded.to(device)
        return LoadedModel(loaded, processor or loaded_processor, name, random_weights=True)
    from .api import _load

    loaded, loaded_processor = _load(name, device, dtype, None)
    return LoadedModel(loaded, processor or loaded_processor, name, random_weights=False)


def _wrapped(loaded: LoadedModel, compressor: Any) -> Any:
    from .api import VideoLLM

    return VideoLLM(loaded.model, loaded.processor, compressor, random_weights=loaded.random_weights)


# -- answers --------------------------------------------------------------------------------------------------------
def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def answer_matches(answer: str, truth: str) -> bool:
    """Whether ``answer`` starts with the words of ``truth`` (case and punctuation ignored).

    For a one-word truth this is the test-bed's rule: the first word of the answer equals the expected word.
    """
    expected = _words(truth)
    if not expected:
        raise ValueError(f"a truth must contain at least one word, got {truth!r}")
    return _words(answer)[: len(expected)] == expected


# -- the table ------------------------------------------------------------------------------------------------------
class ComparisonTable(list):
    """Rows of :func:`compare`, one per (method, retention, video): a list of dicts.

    Attributes:
        skipped: ``{"method", "retention", "reason"}`` for each pair the registry refused (``none`` below 1.0), and
            ``{"method", "retention", "video", "reason"}`` for each video a method refused at run time (DyCoKe
            below the floor of the frames it keeps whole, say).
        model: the model's label (says when its weights are random).
        random_weights: whether the answers come from random weights.
    """

    def __init__(self, rows: Sequence[dict[str, Any]] = (), *, skipped=(), model: str = "", random_weights=False):
        super().__init__(rows)
        self.skipped: list[dict[str, Any]] = list(skipped)
        self.model = model
        self.random_weights = random_weights

    def summary(self) -> list[dict[str, Any]]:
        """One row per (method, retention), in first-seen order: ``videos``, ``accuracy`` (mean over the rows whose
        truth is known, ``None`` without any), ``visual_tokens_out`` (mean), ``ttft_ms`` and ``ms_<stage>``
        (medians), ``peak_memory_mb`` (max, ``None`` on CPU)."""
        groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
        for row in self:
            groups.setdefault((row["method"], row["retention"]), []).append(row)
        summary = []
        for (method, retention), rows in groups.items():
            known = [row["correct"] for row in rows if row["correct"] is not None]
            memory = [row["peak_memory_mb"] for row in rows if row["peak_memory_mb"] is not None]
            entry: dict[str, Any] = {
                "method": method,
                "retention": retention,
                "videos": len(rows),
                "accuracy": sum(known) / len(known) if known else None,
                "visual_tokens_in": statistics.fmean(row["visual_tokens_in"] for row in rows),
                "visual_tokens_out": statistics.fmean(row["visual_tokens_out"] for row in rows),
                "ttft_ms": statistics.median(row["ttft_ms"] for row in rows),
            }
            for stage in STAGES_MS:
                entry[f"ms_{stage}"] = statistics.median(row[f"ms_{stage}"] for row in rows)
            entry["peak_memory_mb"] = max(memory) if memory else None
            summary.append(entry)
        return summary

    def format(self, columns: Sequence[str] = ("method", "retention", "videos", "accuracy", "visual_tokens_out",
                                                 "ttft_ms", "ms_compression", "ms_prefill", "peak_memory_mb")) -> str:
        """The :meth:`summary` as an aligned text table (``-`` where a value is unknown), the skipped pairs below."""
        def cell(value: Any) -> str:
            if value is None:
                return "-"
            return f"{value:.3g}" if isinstance(value, float) else str(value)

        table = [list(columns)] + [[cell(row[c]) for c in columns] for row in self.summary()]
        widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
        lines = ["  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip() for line in table]
        for note in self.skipped:
            where = f" (video {note['video']})" if "video" in note else ""
            lines.append(f"skipped {note['method']} at {note['retention']:g}{where}: {note['reason']}")
        return "\n".join([self.model, *lines] if self.model else lines)

    def to_pandas(self, summary: bool = False):
        """The rows (or the :meth:`summary`) as a ``pandas.DataFrame``; pandas is not a dependency of vidcompress."""
        try:
            import pandas
        except ImportError as error:
            raise ImportError("to_pandas() needs pandas (pip install pandas); the table itself is a list") from error
        return pandas.DataFrame(self.summary() if summary else list(self))


# -- running --------------------------------------------------------------------------------------------------------
def _runnable(method: str, retention: float, params: Mapping[str, Any]) -> tuple[Any, str | None]:
    """The compressor, or ``None`` and the registry's reason for refusing this pair. Unknown names still raise."""
    try:
        return get_compressor(method, retention=retention, **params), None
    except (UnknownMethodError, UnknownParameterError):
        raise
    except ValueError as error:
        return None, str(error)


def _row(answer: Any, index: int, question: str, truth: str | None, model: LoadedModel) -> dict[str, Any]:
    stats = answer.stats
    ms = {stage: float(stats["ms"].get(stage, 0.0)) for stage in STAGES_MS}
    llm_stage = stats["llm_stage"]
    row: dict[str, Any] = {
        "model": model.label,
        "random_weights": model.random_weights,
        "method": stats["method"],
        "retention": float(stats["retention"]),
        "video": index,
        "question": question,
        "answer": answer.text,
        "truth": truth,
        "correct": None if truth is None else answer_matches(answer.text, truth),
        "frames": stats["frames"],
        "visual_tokens_in": stats["visual_tokens_in"],
        "visual_tokens_out": stats["visual_tokens_out"],
        "layer_averaged_retention": None if llm_stage is None else llm_stage["layer_averaged_retention"],
        "prompt_tokens": stats["prompt_tokens"],
        "new_tokens": stats["new_tokens"],
    }
    row.update({f"ms_{stage}": value for stage, value in ms.items()})
    row["ttft_ms"] = sum(ms[stage] for stage in TTFT_STAGES)
    row["total_ms"] = sum(ms.values())
    row["peak_memory_mb"] = stats["peak_memory_mb"]
    return row


def _as_list(name: str, values: Any, length: int | None = None) -> list[Any]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise ValueError(f"{name} must be a list, got {type(values).__name__}")
    values = list(values)
    if not values:
        raise ValueError(f"{name} must not be empty")
    if length is not None and len(values) != length:
        raise ValueError(f"{name} has {len(values)} entries for {length} videos")
    return values


def compare(
    videos: Sequence[VideoInput],
    questions: Sequence[str] | str,
    methods: Sequence[str],
    retentions: Sequence[float],
    *,
    model: Any = "auto",
    processor: Any = None,
    truths: Sequence[str | None] | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    warmup: bool = True,
    progress: Callable[[str], None] | None = None,
    **ask_kwargs: Any,
) -> ComparisonTable:
    """Run every method at every retention on every (video, question) and tabulate what came out.

    Args:
        videos: paths, frame arrays or :class:`~vidcompress.video.VideoClip` objects.
        questions: one question per video, or one string asked about every video.
        methods: registered method names or ``+`` chains. An unknown name raises.
        retentions: fractions of visual tokens at the LLM input, each in (0, 1]. A pair the registry refuses
            (``none`` below 1.0) is skipped and noted in ``table.skipped``, as is a video on which a method raises
            ``ValueError`` (it refuses that input); other errors propagate.
        model: see :func:`load_model`; loaded once and shared by every pair.
        processor: the processor, with an already loaded ``model``.
        truths: the expected answer per video (``None`` where unknown); ``correct`` compares with
            :func:`answer_matches`.
        params: per-method parameters, ``{"flashvid": {"alpha": 0.8}}``.
        warmup: answer the first question once, untimed, before measuring (first calls pay one-time costs).
        progress: a ``print``-like callable for one line per pair.
        **ask_kwargs: passed to :meth:`VideoLLM.ask` (``num_frames``, ``fps``, ``max_frames``, ``max_new_tokens``...).

    Returns:
        A :class:`ComparisonTable`: one dict per (method, retention, video) in that nesting order, with ``model``,
        ``random_weights``, ``method``, ``retention``, ``video`` (index), ``question``, ``answer``, ``truth``,
        ``correct``, ``frames``, ``visual_tokens_in``, ``visual_tokens_out``, ``layer_averaged_retention`` (LLM-stage
        methods), ``prompt_tokens``, ``new_tokens``, ``ms_<stage>`` for each of :data:`STAGES_MS`, ``ttft_ms`` (the
        stages before the first token), ``total_ms`` and ``peak_memory_mb`` (``None`` on CPU).
    """
    videos = _as_list("videos", videos)
    questions = [questions] * len(videos) if isinstance(questions, str) else _as_list("questions", questions, len(videos))
    truths = [None] * len(videos) if truths is None else _as_list("truths", truths, len(videos))
    methods = _as_list("methods", methods)
    retentions = [check_retention(r) for r in _as_list("retentions", retentions)]
    params = dict(params or {})
    unknown = sorted(set(params) - set(methods))
    if unknown:
        raise ValueError(f"params given for methods that are not compared: {', '.join(unknown)}")

    loaded = load_model(model, processor)
    if warmup:
        _wrapped(loaded, get_compressor("none")).ask(videos[0], questions[0], **ask_kwargs)
    rows, skipped = [], []
    for method in methods:
        for retention in retentions:
            compressor, reason = _runnable(method, retention, params.get(method, {}))
            if compressor is None:
                skipped.append({"method": method, "retention": retention, "reason": reason})
                continue
            if progress is not None:
                progress(f"{method} at retention {retention:g} on {len(videos)} video(s)")
            vlm = _wrapped(loaded, compressor)
            for index, (video, question, truth) in enumerate(zip(videos, questions, truths)):
                try:
                    answer = vlm.ask(video, question, **ask_kwargs)
                except ValueError as error:  # the method refuses this input (e.g. a floor above the budget)
                    skipped.append({"method": method, "retention": retention, "video": index, "reason": str(error)})
                    continue
                rows.append(_row(answer, index, question, truth, loaded))
    return ComparisonTable(rows, skipped=skipped, model=loaded.label, random_weights=loaded.random_weights)


# -- one video through the adapter path, for the overlays ----------------------------------------------------------
@dataclass
class VideoCompression:
    """What a method did to one video, with what is needed to draw it.

    Attributes:
        method, retention: the compressor.
        model: the model's label (says when its weights are random).
        frames: ``uint8 [F, height, width, 3]``, the sampled frames resized to the size the processor fed the vision
            encoder; token ``(t, h, w)`` covers frames ``t * frames_per_step`` up to the next step and the pixel cell
            rows ``[h * height // H, (h + 1) * height // H)``, columns likewise.
        frames_per_step: input frames per temporal step of the grid (2 on Qwen2.5-VL, 1 on LLaVA-OneVision).
        tokens: the encoder's tokens (the compressor's input).
        out: the compressor's output.
        stages: the method's stages; for an LLM-stage-only method the token stage keeps everything.
    """

    method: str
    retention: float
    model: str
    frames: np.ndarray
    frames_per_step: int
    tokens: VideoTokens
    out: CompressedTokens
    stages: tuple[str, ...]

    @property
    def grid(self) -> tuple[int, int, int]:
        return self.tokens.grid


def _processed_size(adapter: Any, inputs: Any) -> tuple[int, int]:
    """Height and width in pixels of the frames the vision encoder saw."""
    if "video_grid_thw" in inputs:  # Qwen2.5-VL: patches of patch_size px, flattened
        patch = int(adapter.model.config.vision_config.patch_size)
        _, rows, cols = (int(v) for v in inputs["video_grid_thw"][0])
        return rows * patch, cols * patch
    pixels = inputs["pixel_values_videos"]  # LLaVA-OneVision: [1, F, 3, height, width]
    return int(pixels.shape[-2]), int(pixels.shape[-1])


def _resize(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    if frames.shape[1:3] == (height, width):
        return frames.copy()
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BICUBIC)) for f in frames])


def compress_video(
    video: VideoInput,
    method: str,
    retention: float,
    *,
    model: Any = "auto",
    processor: Any = None,
    question: str = "what happens in the video ?",
    num_frames: int | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
    **params: Any,
) -> VideoCompression:
    """Run the adapter path on one video — preprocess, vision encoder (with attention / question when the method
    needs them), compressor — and return the input tokens, the output and the frames as the encoder saw them."""
    loaded = load_model(model, processor)
    vlm = _wrapped(loaded, get_compressor(method, retention=retention, **params))
    adapter = vlm.adapter
    clip: VideoClip = load_video(video, num_frames=num_frames, fps=fps, max_frames=max_frames)
    inputs = adapter.preprocess(clip, adapter.prompt(question))
    sample = adapter.encode(inputs, with_attention=vlm.compressor.needs_attention)
    tokens = sample.tokens.with_side_inputs(**vlm.side_inputs(sample.tokens, clip, question))
    with torch.no_grad():
        out = vlm.compressor(tokens)
    height, width = _processed_size(adapter, inputs)
    return VideoCompression(
        method=vlm.method,
        retention=float(vlm.compressor.retention),
        model=loaded.label,
        frames=_resize(clip.frames, height, width),
        frames_per_step=adapter.frames_per_step,
        tokens=tokens,
        out=out,
        stages=tuple(vlm.compressor.stages),
    )

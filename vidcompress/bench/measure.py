"""Time one pass of a (model, frames, method, retention) configuration through the project's adapter, stage by stage.

Protocol (``anchors.md`` §5): batch 1, fixed frames and resolution, ``warmup`` untimed runs, then the median of
``runs`` timed runs, interleaved with the other configurations of the same comparison (:mod:`.paired`). On a GPU every stage boundary is a CUDA event on the current stream (the host is synchronised
only before a run and after it); on a CPU the same boundaries read ``time.perf_counter``. Stages:

* ``decode_video`` (CPU): decoding the sampled frames from the file; ``preprocess`` (CPU): the processor (resize,
  normalise, patchify). Both are measured once per (model, frames) and reported, but are not part of TTFT.
* ``vision_encoder``: host-to-device copy of the pixels, the model's ``get_video_features`` (plus the attention hook
  for methods that need it), the token grid.
* ``compression``: the compressor's token stage, plus the question's embedding lookup for query-conditioned methods.
* ``splice``: building the LLM inputs (placeholders, embeddings, positions).
* ``prefill``: ``generate`` up to the first token's logits (LLM stage included, e.g. FastV's pruning at layer K).
* ``ttft`` = vision_encoder + compression + splice + prefill of the same run.
* ``decode_per_token``: ``(end of generate − first logits) / decode_tokens`` over separate runs that generate
  ``1 + decode_tokens`` tokens (end-of-sequence suppressed, so every run decodes the same number).

The **ideal** for a budget (method ``"ideal"``) feeds the same number of visual tokens with no compressor: the
same encoder run, the kept tokens chosen by a uniform stride *outside* the timed region, then splice and prefill.
Its TTFT is what a compressor that cost nothing would reach.
"""

from __future__ import annotations

import importlib.util
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature, LogitsProcessor, LogitsProcessorList

from vidcompress.api import VideoLLM
from vidcompress.compressor import Compressor, Pipeline
from vidcompress.cuda_graph import GraphedCompressor, graphed
from vidcompress.registry import get_compressor
from vidcompress.tokens import target_count
from vidcompress.video import VideoClip, load_video, sample_indices

from .flops import prefill_flops, text_dims, vision_flops

__all__ = [
    "IDEAL",
    "STAGES",
    "BENCH_QUESTION",
    "Settings",
    "PreparedVideo",
    "prepare_video",
    "compressor_for",
    "time_run",
    "token_counts",
    "stage_summary",
    "ttft",
]

IDEAL = "ideal"
STAGES = ("vision_encoder", "compression", "splice", "prefill")

# A multiple-choice style prompt of about the length used in video QA evaluations (~60 text tokens).
BENCH_QUESTION = (
    "carefully watch the video and pay attention to the cause and sequence of events , the detail and movement of "
    "objects , and the action and pose of persons . based on your observations , select the best option that "
    "accurately addresses the question . what happens in the video ? options : a . the square moves right . b . "
    "the square moves left . c . nothing moves . d . a cat runs . answer with the option letter ."
)


@dataclass(frozen=True)
class Settings:
    """Repetitions of one comparison: ``warmup`` untimed and ``runs`` timed rounds (every configuration once per
    round), then ``decode_runs`` decode runs per configuration."""

    warmup: int = 3
    runs: int = 10
    decode_tokens: int = 8
    decode_runs: int = 2

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.runs < 1 or self.decode_tokens < 0 or self.decode_runs < 0:
            raise ValueError(f"need warmup >= 0, runs >= 1, decode_tokens >= 0, decode_runs >= 0; got {self}")


@dataclass
class PreparedVideo:
    """A decoded and preprocessed video, reused by every method at one frame count."""

    frames: int
    clip: VideoClip
    inputs: BatchFeature
    decode_ms: float
    preprocess_ms: float
    decoder: str


class Marks:
    """Named time points: CUDA events on a GPU, ``perf_counter`` on a CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.points: dict[str, Any] = {}

    def mark(self, name: str) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.points[name] = event
        else:
            self.points[name] = time.perf_counter()

    def ms(self, start: str, end: str) -> float:
        if self.cuda:
            return float(self.points[start].elapsed_time(self.points[end]))
        return (self.points[end] - self.points[start]) * 1e3


class _FirstLogits(LogitsProcessor):
    """Pass-through logits processor marking when the first logits exist (end of prefill), without a host sync."""

    def __init__(self, marks: Marks) -> None:
        self.marks = marks
        self.seen = False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not self.seen:
            self.seen = True
            self.marks.mark("first_logits")
        return scores


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _opencv_clip(path: Path, frames: int) -> VideoClip:
    """Decode the sampled frames with OpenCV (used where decord is not installed)."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    total, native_fps = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), float(capture.get(cv2.CAP_PROP_FPS))
    indices = sample_indices(total, native_fps, num_frames=frames)
    wanted, kept, index = set(indices.tolist()), {}, 0
    while index <= indices[-1]:
        ok, frame = capture.read()
        if not ok:
            raise ValueError(f"OpenCV stopped at frame {index} of {path}")
        if index in wanted:
            kept[index] = frame[:, :, ::-1]
        index += 1
    capture.release()
    return VideoClip(
        frames=np.ascontiguousarray(np.stack([kept[i] for i in indices.tolist()])),
        timestamps=indices.astype(np.float64) / native_fps,
        sampled_fps=len(indices) / (total / native_fps),
        source=str(path),
    )


def _decode(path: Path, frames: int) -> tuple[VideoClip, str]:
    if importlib.util.find_spec("decord") is not None:
        return load_video(path, num_frames=frames), "decord"
    return _opencv_clip(path, frames), "opencv"


def prepare_video(vlm: VideoLLM, path: Path, frames: int, question: str, repeats: int) -> PreparedVideo:
    """Decode ``frames`` frames of ``path`` and preprocess them for ``vlm``; median CPU ms of ``repeats`` runs."""
    decode_times, preprocess_times = [], []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        clip, decoder = _decode(path, frames)
        middle = time.perf_counter()
        inputs = vlm.adapter.preprocess(clip, vlm.adapter.prompt(question))
        decode_times.append((middle - start) * 1e3)
        preprocess_times.append((time.perf_counter() - middle) * 1e3)
    return PreparedVideo(
        frames, clip, inputs, statistics.median(decode_times), statistics.median(preprocess_times), decoder
    )


def compressor_for(
    method: str, retention: float, cuda_graph: bool = False, torch_compile: bool = False
) -> Compressor | Pipeline | GraphedCompressor:
    """The compressor timed for ``method`` (the ideal times ``uniform``'s output, chosen outside the timed region);
    with ``cuda_graph`` its token stage replays as a CUDA graph (:func:`vidcompress.graphed`), compiled first with
    ``torch_compile``."""
    compressor = get_compressor("uniform" if method == IDEAL else method, retention=retention)
    return graphed(compressor, torch_compile=torch_compile) if cuda_graph else compressor


def time_run(
    vlm: VideoLLM, prepared: PreparedVideo, question: str, ideal: bool, new_tokens: int
) -> tuple[dict[str, float], dict[str, Any]]:
    """One pass: encoder → compressor → splice → ``generate(new_tokens)``; stage ms and what the pass produced."""
    adapter, compressor = vlm.adapter, vlm.compressor
    device = adapter.device
    marks = Marks(device)
    first = _FirstLogits(marks)
    _synchronize(device)
    with torch.no_grad():
        marks.mark("start")
        sample = adapter.encode(prepared.inputs, with_attention=compressor.needs_attention)
        marks.mark("encoded")
        sample.tokens = sample.tokens.with_side_inputs(**vlm.side_inputs(sample.tokens, prepared.clip, question))
        out = compressor(sample.tokens)
        if ideal:  # the kept tokens of the ideal are chosen outside the timed region
            _synchronize(device)
        marks.mark("compressed")
        llm_inputs = adapter.splice([sample], [out])
        marks.mark("spliced")
        _, report = adapter.generate(
            llm_inputs,
            llm_stage=compressor.stage("llm"),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=adapter.tokenizer.pad_token_id,
            logits_processor=LogitsProcessorList([first]),
        )
        marks.mark("end")
    _synchronize(device)
    ms = {
        "vision_encoder": marks.ms("start", "encoded"),
        "compression": 0.0 if ideal else marks.ms("encoded", "compressed"),
        "splice": marks.ms("compressed", "spliced"),
        "prefill": marks.ms("spliced", "first_logits"),
        "after_first": marks.ms("first_logits", "end"),
    }
    produced = {"tokens": sample.tokens, "out": out, "llm_inputs": llm_inputs, "report": report}
    return ms, produced


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def token_counts(vlm: VideoLLM, produced: dict[str, Any], retention: float) -> dict[str, Any]:
    """Token counts and FLOPs of one pass (``produced`` by :func:`time_run`) as row fields."""
    tokens, out, report = produced["tokens"], produced["out"], produced["report"]
    prompt = int(produced["llm_inputs"].attention_mask[0].sum())
    visual = out.num_tokens
    averaged = visual if report is None else report.layer_averaged_visual_tokens()
    dims = text_dims(vlm.model.config)
    if report is None:
        fastv, true = prefill_flops(dims, prompt), prefill_flops(dims, prompt, "true")
    else:
        after = prompt - (report.visual_in - report.visual_kept)
        fastv = prefill_flops(dims, prompt, layer=report.layer, tokens_after=after)
        true = prefill_flops(dims, prompt, "true", layer=report.layer, tokens_after=after)
    return {
        "grid": list(tokens.grid),
        "visual_tokens_in": tokens.num_tokens,
        "visual_tokens_out": visual,
        "target_count": target_count(tokens.grid, retention),
        "prompt_tokens": prompt,
        "text_tokens": prompt - visual,
        "layer_averaged_visual_tokens": round(float(averaged), 2),
        "layer_averaged_prompt_tokens": round(float(prompt - visual + averaged), 2),
        "llm_stage_layer": None if report is None else report.layer,
        "tflops": {
            "prefill_fastv": fastv / 1e12,
            "prefill_true": true / 1e12,
            "vision_true": vision_flops(vlm.model.config, tokens.grid) / 1e12,
        },
    }


def stage_summary(prepared: PreparedVideo, timed: list[dict[str, float]], per_token: list[float]) -> dict[str, Any]:
    """Median stage times of the ``timed`` runs (outputs of :func:`time_run`) and the TTFT range, as row fields."""
    ttfts = [ttft(ms) for ms in timed]
    return {
        "ms": {
            "decode_video": round(prepared.decode_ms, 3),
            "preprocess": round(prepared.preprocess_ms, 3),
            **{stage: _median([ms[stage] for ms in timed]) for stage in STAGES},
            "ttft": _median(ttfts),
            "decode_per_token": _median(per_token) if per_token else None,
        },
        "ttft_ms_min": round(min(ttfts), 3),
        "ttft_ms_max": round(max(ttfts), 3),
        "decoder": prepared.decoder,
    }


def ttft(ms: dict[str, float]) -> float:
    """TTFT of one run: the sum of its :data:`STAGES`."""
    return sum(ms[stage] for stage in STAGES)

"""The public entry point: wrap a video LLM with a compressor and ask it about videos.

>>> from vidcompress import wrap
>>> vlm = wrap("tiny-qwen2.5-vl", method="uniform", retention=0.25)      # or a hub id, a path, a loaded model
>>> answer = vlm.ask(video_frames, "what happens in the video ?", num_frames=8)   # doctest: +SKIP
>>> answer.text, answer.stats["visual_tokens_in"], answer.stats["visual_tokens_out"]  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import LogitsProcessorList, PreTrainedModel, ProcessorMixin

from .compressor import Compressor, Pipeline
from .cuda_graph import GraphedCompressor, graphed
from .models.vision_attention import VISION_ATTENTION_CHOICES, set_vision_attention
from .frame_stage import FrameSelection, complete_groups, resize_frames
from .registry import get_compressor
from .timing import FirstTokenClock, StageTimer
from .tokens import VideoTokens
from .video import VideoClip, VideoInput, load_video

__all__ = ["Answer", "VideoLLM", "wrap", "SUPPORTED_MODEL_TYPES"]

#: ``config.model_type`` → (transformers class name, adapter class name)
SUPPORTED_MODEL_TYPES = {
    "qwen2_5_vl": ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLAdapter"),
    "llava_onevision": ("LlavaOnevisionForConditionalGeneration", "LlavaOnevisionAdapter"),
}


@dataclass
class Answer:
    """A generated answer and what it cost.

    ``stats`` holds: ``method``, ``retention``, ``visual_tokens_in`` / ``visual_tokens_out``, ``frames`` (encoded),
    ``frames_decoded`` (the candidates sampled from the video) / ``frames_encoded`` (after the frame stage), ``grid``,
    ``prompt_tokens`` (LLM input length), ``new_tokens``, ``llm_stage`` (``None``, or the layer ``K``, the visual
    tokens left after it and the layer-averaged retention over all decoder layers), ``ms`` (per stage: ``decode_video``,
    ``frame_selection`` (only with a frame stage), ``preprocess``,
    ``vision_encoder``, ``compression``, ``prefill``, ``generation``), ``peak_memory_mb`` (``None`` on CPU) and
    ``random_weights`` (``True`` for the built-in tiny models: their answers mean nothing).
    """

    text: str
    token_ids: list[int]
    stats: dict[str, Any] = field(default_factory=dict)


class VideoLLM:
    """A video LLM with a compressor between its vision encoder and its language model.

    Build it with :func:`wrap`. ``ask`` runs one (video, question) pair; ``ask_batch`` several, left-padded.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        processor: ProcessorMixin,
        compressor: Compressor | Pipeline | GraphedCompressor,
        *,
        rope_compat: str = "reference",
        random_weights: bool = False,
    ) -> None:
        from .models import adapter_for

        self.model = model.eval()
        self.processor = processor
        self.compressor = compressor
        self.adapter = adapter_for(model, processor, rope_compat=rope_compat)
        self.random_weights = random_weights

    @property
    def method(self) -> str:
        return self.compressor.name

    def ask(
        self,
        video: VideoInput,
        question: str,
        *,
        num_frames: int | None = None,
        fps: float | None = None,
        max_frames: int | None = None,
        max_new_tokens: int = 64,
        **generate_kwargs: Any,
    ) -> Answer:
        """Answer ``question`` about ``video`` (a path, frames, an array or a :class:`VideoClip`)."""
        return self.ask_batch(
            [video],
            [question],
            num_frames=num_frames,
            fps=fps,
            max_frames=max_frames,
            max_new_tokens=max_new_tokens,
            **generate_kwargs,
        )[0]

    def ask_batch(
        self,
        videos: Sequence[VideoInput],
        questions: Sequence[str],
        *,
        num_frames: int | None = None,
        fps: float | None = None,
        max_frames: int | None = None,
        max_new_tokens: int = 64,
        **generate_kwargs: Any,
    ) -> list[Answer]:
        """Answer one question per video; the LLM runs them as one left-padded batch.

        With a frame stage, the ``num_frames`` / ``fps`` frames sampled from each video are the candidates: the
        frame-stage method chooses among them (timed as ``frame_selection``) and only the chosen frames, resized when
        it asks, reach the processor and the vision encoder (see :meth:`_select_frames`).
        """
        if isinstance(questions, str) or len(videos) != len(questions):
            raise ValueError("ask_batch takes a list of videos and a list of questions of the same length")
        if not videos:
            raise ValueError("ask_batch needs at least one video")
        for question in questions:
            if not isinstance(question, str) or not question.strip():
                raise ValueError(f"a question must be a non-empty string, got {question!r}")
        device = self.adapter.device
        timer = StageTimer(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

        with timer("decode_video"):
            clips = [load_video(v, num_frames=num_frames, fps=fps, max_frames=max_frames) for v in videos]
        frames_decoded = [clip.num_frames for clip in clips]
        frame_stage = self.compressor.stage("frame")
        if frame_stage is not None:
            with timer("frame_selection"):
                clips = [self._select_frames(frame_stage, clip, q) for clip, q in zip(clips, questions)]
        with timer("preprocess"):
            inputs = [self.adapter.preprocess(clip, self.adapter.prompt(q)) for clip, q in zip(clips, questions)]
        samples = []
        with timer("vision_encoder"):
            for sample_inputs, clip, question in zip(inputs, clips, questions):
                sample = self.adapter.encode(sample_inputs, with_attention=self.compressor.needs_attention)
                sample.tokens = sample.tokens.with_side_inputs(**self.side_inputs(sample.tokens, clip, question))
                samples.append(sample)
        with timer("compression"):
            outputs = [self.compressor(sample.tokens) for sample in samples]
        llm_inputs = self.adapter.splice(samples, outputs)

        clock = FirstTokenClock(device)
        generate_kwargs.setdefault("do_sample", False)
        generate_kwargs.setdefault("pad_token_id", self.adapter.tokenizer.pad_token_id)
        processors = LogitsProcessorList([clock, *generate_kwargs.pop("logits_processor", [])])
        with timer("llm"):
            start = time.perf_counter()
            new_tokens, llm_report = self.adapter.generate(
                llm_inputs,
                llm_stage=self.compressor.stage("llm"),
                decode_stage=self.compressor.stage("decode"),
                max_new_tokens=max_new_tokens,
                logits_processor=processors,
                **generate_kwargs,
            )
        first = clock.first if clock.first is not None else time.perf_counter()
        llm_ms = timer.ms.pop("llm")
        timer.add("prefill", (first - start) * 1e3)
        timer.add("generation", llm_ms - (first - start) * 1e3)
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None

        answers = []
        eos = self.adapter.tokenizer.eos_token_id
        for b, (sample, out) in enumerate(zip(samples, outputs)):
            ids = new_tokens[b].tolist()
            if eos in ids:  # generate pads finished rows after their end-of-sequence token
                ids = ids[: ids.index(eos) + 1]
            text = self.adapter.tokenizer.decode(ids, skip_special_tokens=True).strip()
            stats = {
                "method": self.method,
                "retention": self.compressor.retention,
                "visual_tokens_in": sample.tokens.num_tokens,
                "visual_tokens_out": out.num_tokens,
                "frames": clips[b].num_frames,
                "frames_decoded": frames_decoded[b],
                "frames_encoded": clips[b].num_frames,
                "grid": list(sample.tokens.grid),
                "prompt_tokens": int(llm_inputs.attention_mask[b].sum()),
                "new_tokens": len(ids),
                "ms": {key: round(value, 3) for key, value in timer.ms.items()},
                "peak_memory_mb": peak,
                "llm_stage": None
                if llm_report is None
                else {
                    "layer": llm_report.layer,
                    "visual_tokens_after_layer": llm_report.visual_kept,
                    "layer_averaged_retention": llm_report.layer_averaged_visual_tokens() / sample.tokens.num_tokens,
                },
                "random_weights": self.random_weights,
            }
            answers.append(Answer(text=text, token_ids=ids, stats=stats))
        return answers

    def _select_frames(self, frame_stage: Compressor, clip: VideoClip, question: str) -> VideoClip:
        """The clip of the frames ``frame_stage`` chooses among ``clip``'s candidates.

        * Temporal groups: on Qwen2.5-VL (two frames per group) every chosen frame brings its partner in its group of
          the candidate sequence (:func:`~vidcompress.frame_stage.complete_groups`), so the encoder sees whole
          groups and frames are never paired across a gap.
        * Timestamps: the chosen frames keep their real timestamps (``VideoTokens.timestamps``). The M-RoPE temporal
          ids assume uniform spacing (``second_per_grid_ts``): the processor gets the effective rate
          ``sampled_fps * chosen / candidates``, i.e. the chosen frames spread over the candidates' duration.
          Timestamp-based temporal ids for irregular selections (methods.md §16.6 / §17.4) are not implemented.
        * Size: a requested ``(height, width)`` is applied to every chosen frame before the processor, which still
          applies its own rounding and pixel limits (Qwen2.5-VL: multiples of 28 px within ``min/max_pixels``;
          LLaVA-OneVision resizes every frame to its fixed input size, so a smaller size saves no tokens there).
        """
        step = self.adapter.frames_per_step
        selection = frame_stage.select_frames(clip.frames, clip.timestamps, question, frames_per_step=step)
        if not isinstance(selection, FrameSelection):
            raise TypeError(f"{frame_stage.name}.select_frames returned {type(selection).__name__}, not FrameSelection")
        selection.check(clip.num_frames)
        indices = complete_groups(selection.indices, clip.num_frames, step)
        frames = clip.frames[indices]
        if selection.size is not None:
            frames = resize_frames(frames, selection.size)
        return VideoClip(
            frames=frames,
            timestamps=clip.timestamps[indices],
            sampled_fps=clip.sampled_fps * len(indices) / clip.num_frames,
            source=clip.source,
        )

    def side_inputs(self, tokens: VideoTokens, clip: VideoClip, question: str) -> dict[str, torch.Tensor]:
        """What the compressor reads beside the features: the timestamps of ``tokens``' temporal steps and, when the
        method needs it, the question's embeddings. Pass the result to :meth:`VideoTokens.with_side_inputs`."""
        inputs = {"timestamps": self._group_timestamps(clip, tokens.grid[0])}
        if self.compressor.needs_query:
            inputs["query"] = self.adapter.question_embeddings(question).to(tokens.features.dtype)
        return inputs

    def _group_timestamps(self, clip: VideoClip, steps: int) -> torch.Tensor:
        """Seconds of each temporal step: the first frame of each step (Qwen2.5-VL groups two frames)."""
        stamps = torch.as_tensor(clip.timestamps[:: self.adapter.frames_per_step][:steps], dtype=torch.float32)
        if stamps.shape[0] < steps:  # cannot happen with the stock processors; guard against a custom one
            raise ValueError(f"{clip.num_frames} frames give {stamps.shape[0]} steps, the encoder produced {steps}")
        return stamps.to(self.adapter.device)

    def __repr__(self) -> str:
        return f"VideoLLM(model={type(self.model).__name__}, compressor={self.compressor!r})"


def _load(model_id: str, device: str | torch.device | None, dtype: Any, attn_implementation: str | None):
    from transformers import AutoConfig, AutoProcessor
    import transformers

    config = AutoConfig.from_pretrained(model_id)
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        supported = ", ".join(sorted(SUPPORTED_MODEL_TYPES))
        raise ValueError(f"{model_id} is a {config.model_type!r} model; vidcompress supports {supported}")
    model_class = getattr(transformers, SUPPORTED_MODEL_TYPES[config.model_type][0])
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    kwargs: dict[str, Any] = {"dtype": dtype}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    model = model_class.from_pretrained(model_id, **kwargs).to(device)
    return model, AutoProcessor.from_pretrained(model_id)


def wrap(
    model: str | PreTrainedModel,
    method: str = "none",
    retention: float = 1.0,
    *,
    processor: ProcessorMixin | None = None,
    device: str | torch.device | None = None,
    dtype: Any = "auto",
    attn_implementation: str | None = None,
    rope_compat: str = "reference",
    vision_attention: str = "stock",
    cuda_graph: bool = False,
    torch_compile: bool = False,
    **params: Any,
) -> VideoLLM:
    """Wrap a video LLM with the compressor ``method`` at ``retention``.

    Args:
        model: a hub id or local path of a Qwen2.5-VL or LLaVA-OneVision checkpoint, an already loaded model, or a
            built-in tiny random-weight model (``"tiny-qwen2.5-vl"``, ``"tiny-llava-onevision"``).
        method: a registered method name or a ``+`` chain (see ``vidcompress methods``).
        retention: fraction of visual tokens at the LLM input, in (0, 1].
        processor: the model's processor (loaded from the model's path when omitted).
        device, dtype, attn_implementation: passed on when loading from a hub id or path.
        rope_compat: Qwen2.5-VL text-after-video positions, ``"reference"`` or ``"hf"`` (see
            :mod:`vidcompress.positions`).
        vision_attention: ``"stock"`` (the model's vision attention as loaded) or ``"batched"``: Qwen2.5-VL's
            windowed ViT runs all windows of a block in one batched sdpa call instead of a Python loop, with the
            same result (:mod:`vidcompress.models.vision_attention`; no effect on LLaVA-OneVision).
        cuda_graph: replay the token stage as one CUDA graph per input signature (:func:`vidcompress.graphed`): the
            first call of a grid captures it, later ones cost one launch instead of hundreds; no effect on CPU.
        torch_compile: with ``cuda_graph``, compile the token stage with ``torch.compile`` before capturing it
            (``graphed(..., torch_compile=True)``: the methods' bookkeeping fuses into fewer kernels; each grid
            compiles once, 10-120 s).
        **params: the method's own parameters.
    """
    if torch_compile and not cuda_graph:
        raise ValueError("torch_compile=True compiles the captured token stage: pass cuda_graph=True as well")
    compressor: Compressor | Pipeline | GraphedCompressor = get_compressor(method, retention=retention, **params)
    if cuda_graph:
        compressor = graphed(compressor, torch_compile=torch_compile)
    if vision_attention not in VISION_ATTENTION_CHOICES:
        raise ValueError(f"vision_attention must be one of {', '.join(VISION_ATTENTION_CHOICES)}, got {vision_attention!r}")
    random_weights = False
    if isinstance(model, str):
        from .models.tiny import TINY_MODELS

        if model in TINY_MODELS:
            model, built_processor = TINY_MODELS[model]()
            processor = processor or built_processor
            random_weights = True
            if device is not None:
                model = model.to(device)
        else:
            model, loaded_processor = _load(model, device, dtype, attn_implementation)
            processor = processor or loaded_processor
    elif processor is None:
        from transformers import AutoProcessor

        source = getattr(model, "name_or_path", "")
        if not source:
            raise ValueError("pass processor= with a model object that has no name_or_path")
        processor = AutoProcessor.from_pretrained(source)
    set_vision_attention(model, vision_attention)
    return VideoLLM(model, processor, compressor, rope_compat=rope_compat, random_weights=random_weights)

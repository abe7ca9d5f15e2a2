"""What every model adapter does, written once: prompt, preprocess, encode, splice, pad, generate.

A model family subclasses :class:`VideoLLMAdapter` and fills in how its video features, attention scores and
positions are obtained (``encode``). The splice — one placeholder per output token, the compressed features
scattered into the embeddings, positions carried over — and left-padded batching are shared.

Only public ``transformers`` entry points are used (``transformers.md`` §5): ``get_video_features``,
``get_input_embeddings``, ``generate(input_ids, inputs_embeds, attention_mask, position_ids)`` and forward hooks on
one vision block for attention scores. No class forward is patched.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from transformers import BatchFeature, PreTrainedModel, ProcessorMixin

from vidcompress.tokens import CompressedTokens, VideoTokens
from vidcompress.video import VideoClip

from .decode_stage import decode_pruning
from .llm_stage import LLMStageReport, layer_reduction
from .ppe_rotary import ppe_rotary

__all__ = ["EncodedSample", "LLMInputs", "VideoLLMAdapter"]


@dataclass
class EncodedSample:
    """One (video, question) pair after the vision encoder, before compression.

    Attributes:
        input_ids: ``[L]`` token ids of the full prompt, unpadded.
        video_start: index of the first video placeholder in ``input_ids``.
        video_end: index one past the last placeholder (the span includes trailing tokens such as LLaVA-OV's
            newline).
        tokens: the video's tokens, the compressor's input.
        trailing: ``[E, D]`` embeddings that follow the compressible tokens inside the span and are always kept
            (LLaVA-OV's ``image_newline``); ``E`` may be 0.
        positions: ``[3, L]`` M-RoPE positions of the full prompt (Qwen2.5-VL), or ``None`` (1-D RoPE renumbered
            contiguously by ``generate``).
    """

    input_ids: torch.Tensor
    video_start: int
    video_end: int
    tokens: VideoTokens
    trailing: torch.Tensor
    positions: torch.Tensor | None


@dataclass
class LLMInputs:
    """Left-padded inputs of the LLM after compression, ready for ``generate`` or a plain forward.

    ``position_sets`` (PPE): per batch row, the ``[V, P, 3]`` member positions of the row's ``V`` visual tokens, in
    the order of ``visual_mask``; ``generate`` rotates those tokens by them (:mod:`.ppe_rotary`). A plain forward
    ignores them.
    """

    input_ids: torch.Tensor
    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor | None
    visual_mask: torch.Tensor  # [B, L] bool: the compressed visual tokens (not LLaVA-OV's newline)
    position_sets: list[torch.Tensor] | None = None

    def video_indices(self) -> list[torch.Tensor]:
        """Per batch row, the ``[V]`` sequence indices of the compressed visual tokens."""
        return [torch.nonzero(row).squeeze(1) for row in self.visual_mask]

    def as_kwargs(self) -> dict[str, torch.Tensor]:
        kwargs = dict(input_ids=self.input_ids, inputs_embeds=self.inputs_embeds, attention_mask=self.attention_mask)
        if self.position_ids is not None:
            kwargs["position_ids"] = self.position_ids
        return kwargs


class VideoLLMAdapter(ABC):
    """Turns (model, processor, video, question) into :class:`VideoTokens`, and compressed tokens into LLM inputs."""

    #: ``transformers`` class name this adapter wraps.
    model_class: ClassVar[str]
    #: the LLM can rotate a token by several member positions (PPE ``position_sets``); needs 3-D M-RoPE.
    supports_position_sets: ClassVar[bool] = False

    def __init__(self, model: PreTrainedModel, processor: ProcessorMixin) -> None:
        self.model = model
        self.processor = processor
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is None:
            raise ValueError(f"the processor {type(processor).__name__} has no tokenizer")
        self.tokenizer = tokenizer

    @classmethod
    def supports(cls, model: PreTrainedModel) -> bool:
        return any(klass.__name__ == cls.model_class for klass in type(model).__mro__)

    # -- family-specific ------------------------------------------------------------------------------------------
    @property
    @abstractmethod
    def video_token_id(self) -> int:
        """Id of the video placeholder token."""

    @abstractmethod
    def preprocess(self, clip: VideoClip, prompt: str) -> BatchFeature:
        """Run the processor on one clip and its prompt (samples are padded together after compression)."""

    @abstractmethod
    def encode(self, inputs: BatchFeature, with_attention: bool) -> EncodedSample:
        """Vision encoder on one preprocessed sample; attention scores only when ``with_attention``."""

    @property
    def frames_per_step(self) -> int:
        """Input frames per temporal step of the token grid."""
        return 1

    # -- shared ---------------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.model.device

    def prompt(self, question: str) -> str:
        """The chat prompt for one video followed by ``question``."""
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def question_embeddings(self, question: str) -> torch.Tensor:
        """``[Q, D]`` word embeddings of the question (the FlashVLM-style query), same space as the features."""
        ids = self.tokenizer(question, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
        if ids.numel() == 0:
            raise ValueError("the question is empty")
        with torch.no_grad():
            return self.model.get_input_embeddings()(ids.to(self.device))

    def splice(self, samples: list[EncodedSample], outputs: list[CompressedTokens]) -> LLMInputs:
        """One placeholder per output token, compressed features scattered in, positions carried; left-padded."""
        if len(samples) != len(outputs):
            raise ValueError(f"{len(samples)} samples but {len(outputs)} compressed outputs")
        position_sets = self._position_sets(outputs)
        embed = self.model.get_input_embeddings()
        pad_id = self.tokenizer.pad_token_id
        rows = []
        for sample, out in zip(samples, outputs):
            ids = sample.input_ids
            span = torch.full(
                (out.num_tokens + sample.trailing.shape[0],), self.video_token_id, dtype=ids.dtype, device=ids.device
            )
            new_ids = torch.cat([ids[: sample.video_start], span, ids[sample.video_end :]])
            with torch.no_grad():
                embeds = embed(new_ids.to(self.device))
            start = sample.video_start
            visual = torch.cat([out.features, sample.trailing]).to(device=embeds.device, dtype=embeds.dtype)
            embeds = torch.cat([embeds[:start], visual, embeds[start + visual.shape[0] :]])
            positions = None
            if sample.positions is not None:
                kept = out.positions.T.to(sample.positions.device)
                positions = torch.cat(
                    [sample.positions[:, : sample.video_start], kept, sample.positions[:, sample.video_end :]], dim=1
                )
            rows.append((new_ids, embeds, positions, start, out.num_tokens))
        length = max(row[0].shape[0] for row in rows)
        batch = len(rows)
        hidden = rows[0][1].shape[1]
        input_ids = torch.full((batch, length), pad_id, dtype=torch.long, device=self.device)
        attention_mask = torch.zeros(batch, length, dtype=torch.long, device=self.device)
        with torch.no_grad():
            pad_embed = embed(torch.tensor([pad_id], device=self.device))[0]
        inputs_embeds = pad_embed.expand(batch, length, hidden).clone()
        has_positions = rows[0][2] is not None
        position_ids = torch.ones(3, batch, length, dtype=torch.long, device=self.device) if has_positions else None
        visual_mask = torch.zeros(batch, length, dtype=torch.bool, device=self.device)
        for b, (ids, embeds, positions, start, count) in enumerate(rows):
            n = ids.shape[0]
            visual_mask[b, length - n + start : length - n + start + count] = True
            input_ids[b, length - n :] = ids.to(self.device)
            attention_mask[b, length - n :] = 1
            inputs_embeds[b, length - n :] = embeds
            if position_ids is not None:
                position_ids[:, b, length - n :] = positions.to(self.device)
        return LLMInputs(input_ids, inputs_embeds, attention_mask, position_ids, visual_mask, position_sets)

    def _position_sets(self, outputs: list[CompressedTokens]) -> list[torch.Tensor] | None:
        """The outputs' ``position_sets`` (all or none of them carry sets), checked against the model's RoPE."""
        carried = [out.position_sets is not None for out in outputs]
        if not any(carried):
            return None
        if not self.supports_position_sets:
            raise ValueError(
                f"the compressed tokens carry PPE position_sets, but {self.model_class} has 1-D RoPE: "
                "PPE needs Qwen2.5-VL's M-RoPE (use a method without the 'ppe' positions stage)"
            )
        if not all(carried):
            raise ValueError("some compressed outputs of the batch carry position_sets and others do not")
        return [out.position_sets.to(self.device) for out in outputs if out.position_sets is not None]

    def generate(
        self, llm_inputs: LLMInputs, llm_stage: Any = None, decode_stage: Any = None, **generate_kwargs: Any
    ) -> tuple[torch.Tensor, LLMStageReport | None]:
        """``model.generate`` on spliced inputs, with the LLM stage of ``llm_stage`` (a compressor) when given, and
        the per-step decode stage of ``decode_stage`` (:mod:`.decode_stage`) when given.

        When ``llm_inputs.position_sets`` is set, the PPE rotary hook is active during the call as well.
        Returns the new tokens ``[B, new]`` and the LLM stage's report (``None`` without one).
        """
        if llm_stage is not None and decode_stage is not None:
            raise ValueError(
                f"{decode_stage.name!r} (decode stage) cannot be chained with {llm_stage.name!r} (LLM stage): the LLM "
                "stage shortens the KV cache of the layers the decode stage masks; use one of them"
            )
        try:
            with torch.no_grad(), ExitStack() as hooks:
                if decode_stage is not None:
                    hooks.enter_context(
                        decode_pruning(self.model.model.language_model, decode_stage, llm_inputs.visual_mask)
                    )
                if llm_inputs.position_sets is not None:
                    hooks.enter_context(ppe_rotary(self.model, llm_inputs.video_indices(), llm_inputs.position_sets))
                report = None
                if llm_stage is not None:
                    language_model = self.model.model.language_model
                    valid = llm_inputs.attention_mask.bool()
                    report = hooks.enter_context(
                        layer_reduction(language_model, llm_stage, llm_inputs.visual_mask, valid)
                    )
                output = self.model.generate(**llm_inputs.as_kwargs(), **generate_kwargs)
                return output[:, llm_inputs.input_ids.shape[1] :], report
        finally:
            self.reset_state()

    def reset_state(self) -> None:
        """Clear per-call module state that ``generate`` leaves behind (Qwen's ``rope_deltas``)."""

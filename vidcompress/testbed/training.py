"""What training the micro model needs besides the loop: processor-exact inputs, batches and the answer loss.

The model sees exactly what :func:`vidcompress.wrap(...).ask` gives it uncompressed: pixel patches made by the
processor's own ``rescale_and_normalize`` and ``patchify`` (so they can run batched on the GPU), prompt ids made by
the processor, and the project's own M-RoPE positions (``rope_compat="reference"``, as the adapter uses).

:func:`register_block_attention` adds an attention function to ``transformers``' public ``AttentionInterface`` for
the vision tower: the stock non-flash path runs one attention call per window, this one runs all equal-length
windows in one batched call (same arithmetic; training only, the shipped config keeps the default attention).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AttentionInterface, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

from vidcompress.positions import mrope_positions
from vidcompress.video import DEFAULT_INPUT_FPS

from .generator import FRAMES

__all__ = [
    "BLOCK_ATTENTION",
    "register_block_attention",
    "video_patches",
    "vision_plan",
    "PromptBuilder",
    "Batch",
    "answer_logits",
]

#: Name of the batched-window attention (it must contain "flash" so the vision tower passes ``cu_seqlens`` to it).
BLOCK_ATTENTION = "testbed_flash_blocks"


def _block_attention(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0, **kwargs):
    """Non-causal attention inside equal-length blocks given by ``cu_seq_lens_q``; ``query`` is ``[1, H, S, d]``."""
    bounds = kwargs["cu_seq_lens_q"]
    lengths = bounds[1:] - bounds[:-1]
    block = int(lengths[0])
    if not bool((lengths == block).all()):
        raise ValueError("block attention needs equal-length windows; use the default attention for this input")
    heads, total, dim = query.shape[1], query.shape[2], query.shape[3]

    def blocks(x: torch.Tensor) -> torch.Tensor:
        return x[0].reshape(heads, total // block, block, dim).transpose(0, 1)  # [n, H, block, d]

    out = F.scaled_dot_product_attention(blocks(query), blocks(key), blocks(value), scale=scaling)
    return out.transpose(0, 1).reshape(heads, total, dim).transpose(0, 1).unsqueeze(0), None  # [1, S, H, d]


def register_block_attention(model: Qwen2_5_VLForConditionalGeneration) -> None:
    """Use the batched-window attention in ``model``'s vision tower (its LLM keeps its own attention)."""
    AttentionInterface.register(BLOCK_ATTENTION, _block_attention)
    model.model.visual.config._attn_implementation = BLOCK_ATTENTION


def video_patches(processor: Qwen2_5_VLProcessor, videos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pixel_values_videos, video_grid_thw)`` of uint8 ``[B, T, H, W, 3]`` videos, as the processor makes them.

    Frames must already have a size the processor keeps (the generator's ``SIZE``); runs on ``videos.device``.
    """
    vp = processor.video_processor
    frames = videos.permute(0, 1, 4, 2, 3).float()
    frames = vp.rescale_and_normalize(frames, True, vp.rescale_factor, True, vp.image_mean, vp.image_std)
    patches, grid_t, grid_h, grid_w = vp.patchify(
        frames, patch_size=vp.patch_size, merge_size=vp.merge_size, temporal_patch_size=vp.temporal_patch_size
    )
    grid = torch.tensor([[grid_t, grid_h, grid_w]] * videos.shape[0], device=videos.device)
    return patches.reshape(-1, patches.shape[-1]), grid


def vision_plan(model: Qwen2_5_VLForConditionalGeneration, grid_thw: torch.Tensor) -> dict[str, object]:
    """The vision tower's per-call bookkeeping for ``grid_thw`` (rotary ids, attention segments, window order).

    ``transformers`` rebuilds these with a Python loop over the videos on every call; every training batch has the
    same grids, so they are made once with the same ``transformers.vision_utils`` functions and handed back to the
    tower as its precomputed keyword arguments by :func:`answer_logits` (a fresh copy each call: the tower pops them).
    """
    from transformers.vision_utils import (
        get_max_seqlen,
        get_vision_attention_seqlens,
        get_vision_position_ids,
        get_vision_window_index,
    )

    visual = model.model.visual
    config = visual.config
    cu_seqlens, max_seqlen = get_vision_attention_seqlens(grid_thw, config)
    window_index, cu_window_seqlens = get_vision_window_index(
        grid_thw, spatial_merge_size=visual.spatial_merge_size, window_size=visual.window_size,
        patch_size=visual.patch_size,
    )
    return {
        "position_ids": get_vision_position_ids(grid_thw, visual.spatial_merge_size),
        "cu_seqlens": cu_seqlens,
        "max_seqlen": max_seqlen,
        "window_index": window_index.to(grid_thw.device),
        "cu_window_seqlens": cu_window_seqlens,
        "max_window_seqlen": get_max_seqlen(cu_window_seqlens, config),
    }


@dataclass
class Batch:
    """Left-padded LLM inputs with the answer tokens as labels (``-100`` elsewhere)."""

    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L]
    position_ids: torch.Tensor  # [3, B, L]
    labels: torch.Tensor  # [B, L]
    answer_start: torch.Tensor  # [B] index of the first answer token

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(*(getattr(self, name).to(device) for name in self.__dataclass_fields__))


class PromptBuilder:
    """Prompt ids and positions of a question, made once by the processor (with a blank video) and cached."""

    def __init__(self, processor: Qwen2_5_VLProcessor, model_config, num_frames: int = FRAMES, size: int = 112):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.video_token_id = int(model_config.video_token_id)
        merge = model_config.vision_config.spatial_merge_size
        self.tokens_per_second = float(model_config.vision_config.tokens_per_second)
        self.merge = merge
        self.blank = np.zeros((num_frames, size, size, 3), dtype=np.uint8)
        self.fps = DEFAULT_INPUT_FPS
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor, int]] = {}

    def prompt(self, question: str) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``([L] ids, [3, L] positions, next position)`` of the chat prompt for ``question``."""
        if question not in self._cache:
            messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
            text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            inputs = self.processor(
                text=[text],
                videos=[self.blank],
                video_metadata=[{"total_num_frames": len(self.blank), "fps": self.fps}],
                do_sample_frames=False,
                return_tensors="pt",
            )
            ids = inputs["input_ids"][0]
            t, h, w = (int(v) for v in inputs["video_grid_thw"][0])
            interval = self.tokens_per_second * float(inputs["second_per_grid_ts"][0])
            positions, next_position = mrope_positions(
                ids, self.video_token_id, [(t, h // self.merge, w // self.merge)], [interval], "reference"
            )
            self._cache[question] = (ids, positions, next_position)
        return self._cache[question]

    def answer_ids(self, answer: str) -> list[int]:
        ids = self.tokenizer(answer, add_special_tokens=False)["input_ids"]
        if self.tokenizer.unk_token_id in ids:
            raise ValueError(f"answer {answer!r} has words outside the tokenizer's vocabulary")
        return ids + [self.tokenizer.eos_token_id]

    def batch(self, questions: list[str], answers: list[str]) -> Batch:
        """Left-padded prompt + answer + end-of-sequence; loss only on the answer and end tokens."""
        rows = []
        for question, answer in zip(questions, answers):
            ids, positions, next_position = self.prompt(question)
            target = torch.tensor(self.answer_ids(answer), dtype=ids.dtype)
            tail = torch.arange(len(target)) + next_position
            rows.append((torch.cat([ids, target]), torch.cat([positions, tail.expand(3, -1)], dim=1), len(ids)))
        length = max(len(row[0]) for row in rows)
        size = len(rows)
        input_ids = torch.full((size, length), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros(size, length, dtype=torch.long)
        position_ids = torch.ones(3, size, length, dtype=torch.long)
        labels = torch.full((size, length), -100, dtype=torch.long)
        answer_start = torch.zeros(size, dtype=torch.long)
        for b, (ids, positions, prompt_length) in enumerate(rows):
            pad = length - len(ids)
            input_ids[b, pad:] = ids
            attention_mask[b, pad:] = 1
            position_ids[:, b, pad:] = positions
            labels[b, pad + prompt_length :] = ids[prompt_length:]
            answer_start[b] = pad + prompt_length
        return Batch(input_ids, attention_mask, position_ids, labels, answer_start)


def answer_logits(
    model: Qwen2_5_VLForConditionalGeneration,
    batch: Batch,
    pixel_values: torch.Tensor,
    grid_thw: torch.Tensor,
    plan: dict[str, object] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss over answer tokens, [B, V] logits predicting the first answer token)``.

    The vision tower runs here (with ``plan``, from :func:`vision_plan` for this ``grid_thw``, if given) and its
    output replaces the video placeholders' embeddings, as the model's own forward does with
    ``pixel_values_videos``; the language model then gets ``inputs_embeds``, which every ``transformers`` 5.x
    release reads the same way.
    """
    visual = model.model.visual
    encoded = visual(pixel_values.type(visual.dtype), grid_thw=grid_thw, **dict(plan or {}))
    embeds = model.get_input_embeddings()(batch.input_ids)
    placeholders = (batch.input_ids == model.config.video_token_id).unsqueeze(-1)
    embeds = embeds.masked_scatter(placeholders, encoded.pooler_output.to(embeds.dtype))
    output = model(
        inputs_embeds=embeds,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
    )
    logits = output.logits.float()
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), batch.labels[:, 1:].flatten(), ignore_index=-100)
    rows = torch.arange(logits.shape[0], device=logits.device)
    return loss, logits[rows, batch.answer_start - 1]

"""Adapter for ``Qwen2_5_VLForConditionalGeneration`` (transformers 5.x).

* features: the model's own ``get_video_features`` → ``pooler_output`` in raster order ``(t, h/2, w/2)``;
  ``T`` = temporal groups (two frames each);
* attention received: a forward hook on the last full-attention ViT block recomputes ``softmax(q kᵀ)`` one
  temporal group at a time (query blocks bound the memory), averages heads and queries, then the four patches of
  each 2x2 merge unit, and undoes the window permutation (``methods.md`` §0.4 (a));
* positions: the project's own M-RoPE (:mod:`vidcompress.positions`), passed to ``generate`` as 3-row
  ``position_ids``; ``model.model.rope_deltas`` is reset after every call; PPE ``position_sets`` are applied by the
  rotary hook of :mod:`.ppe_rotary` (installed by ``generate``).
"""

from __future__ import annotations

from contextlib import contextmanager
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from transformers import BatchFeature

from vidcompress.positions import RopeCompat, mrope_positions
from vidcompress.tokens import VideoTokens
from vidcompress.video import VideoClip

from .base import EncodedSample, VideoLLMAdapter

__all__ = ["Qwen2_5_VLAdapter", "window_index"]

QUERY_BLOCK = 1024


def window_index(grid_thw: tuple[int, int, int], spatial_merge_size: int, window_size: int, patch_size: int) -> torch.Tensor:
    """Order in which the Qwen2.5-VL ViT visits the merge units of one video (its window permutation).

    Merge units (``spatial_merge_size``² patches, one LLM token each) are grouped into windows of
    ``window_size / (spatial_merge_size * patch_size)`` units per side, frame by frame, windows in raster order,
    units in raster order inside each window. ``argsort`` of the result maps ViT order back to raster order.
    """
    t, h, w = grid_thw
    units_h, units_w = h // spatial_merge_size, w // spatial_merge_size
    side = window_size // spatial_merge_size // patch_size
    index = torch.arange(t * units_h * units_w).reshape(t, units_h, units_w)
    pad_h, pad_w = (-units_h) % side, (-units_w) % side
    padded = F.pad(index, (0, pad_w, 0, pad_h), value=-1)
    windows_h, windows_w = (units_h + pad_h) // side, (units_w + pad_w) // side
    padded = padded.reshape(t, windows_h, side, windows_w, side).permute(0, 1, 3, 2, 4).reshape(-1)
    return padded[padded >= 0]


class _AttentionProbe:
    """Forward hook on one ViT attention module recording the mean attention each patch receives."""

    def __init__(self) -> None:
        self.received: torch.Tensor | None = None

    def __call__(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision

        hidden = args[0] if args else kwargs["hidden_states"]
        cu_seqlens = kwargs["cu_seqlens"]
        cos, sin = kwargs["position_embeddings"]
        length = hidden.shape[0]
        q, k, _ = module.qkv(hidden).reshape(length, 3, module.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
        q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)
        q, k = q.transpose(0, 1).float(), k.transpose(0, 1).float()  # [heads, S, d]
        received = torch.zeros(length, dtype=torch.float32, device=hidden.device)
        bounds = cu_seqlens.tolist()
        for start, end in zip(bounds[:-1], bounds[1:]):
            keys = k[:, start:end]
            for q_start in range(start, end, QUERY_BLOCK):
                q_end = min(end, q_start + QUERY_BLOCK)
                weights = torch.softmax(q[:, q_start:q_end] @ keys.transpose(1, 2) * module.scaling, dim=-1)
                received[start:end] += weights.sum(dim=(0, 1))
            received[start:end] /= module.num_heads * (end - start)
        self.received = received


class Qwen2_5_VLAdapter(VideoLLMAdapter):
    """Qwen2.5-VL: temporal groups of two frames, 2x2-merged tokens, 3-D M-RoPE.

    Args:
        model: a ``Qwen2_5_VLForConditionalGeneration``.
        processor: its ``Qwen2_5_VLProcessor``.
        rope_compat: ``"reference"`` (default: text after the video continues at ``max(t, h, w) + 1``, as the
            checkpoints were trained) or ``"hf"`` (the installed transformers' rule, for token-exact comparison with
            stock ``generate``).
    """

    model_class = "Qwen2_5_VLForConditionalGeneration"
    supports_position_sets = True

    def __init__(self, model, processor, rope_compat: RopeCompat = "reference") -> None:
        super().__init__(model, processor)
        if rope_compat not in ("reference", "hf"):
            raise ValueError(f"rope_compat must be 'reference' or 'hf', got {rope_compat!r}")
        self.rope_compat = rope_compat
        self.tokenizer.padding_side = "left"

    @property
    def video_token_id(self) -> int:
        return int(self.model.config.video_token_id)

    @property
    def vision_config(self):
        return self.model.config.vision_config

    @property
    def frames_per_step(self) -> int:
        return int(self.vision_config.temporal_patch_size)

    def preprocess(self, clip: VideoClip, prompt: str) -> BatchFeature:
        return self.processor(
            text=[prompt],
            videos=[clip.frames],
            video_metadata=[{"total_num_frames": clip.num_frames, "fps": clip.sampled_fps}],
            do_sample_frames=False,
            return_tensors="pt",
        )

    @contextmanager
    def _attention_probe(self, enabled: bool) -> Iterator[_AttentionProbe | None]:
        if not enabled:
            yield None
            return
        visual = self.model.model.visual
        full_blocks = list(self.vision_config.fullatt_block_indexes) or [len(visual.blocks) - 1]
        probe = _AttentionProbe()
        handle = visual.blocks[max(full_blocks)].attn.register_forward_hook(probe, with_kwargs=True)
        try:
            yield probe
        finally:
            handle.remove()

    def encode(self, inputs: BatchFeature, with_attention: bool) -> EncodedSample:
        grid_thw = tuple(int(v) for v in inputs["video_grid_thw"][0])
        pixels = inputs["pixel_values_videos"]
        merge = self.vision_config.spatial_merge_size
        with torch.no_grad(), self._attention_probe(with_attention) as probe:
            output = self.model.model.get_video_features(
                pixels.to(self.device), torch.tensor([grid_thw], device=self.device)
            )
        features = output.pooler_output[0]
        grid = (grid_thw[0], grid_thw[1] // merge, grid_thw[2] // merge)
        attention = None
        if probe is not None:
            assert probe.received is not None
            per_unit = probe.received.view(-1, merge * merge).mean(-1)
            order = window_index(grid_thw, merge, self.vision_config.window_size, self.vision_config.patch_size)
            attention = per_unit[torch.argsort(order.to(per_unit.device))].view(grid[0], -1)

        input_ids = inputs["input_ids"][0]
        interval = float(self.vision_config.tokens_per_second) * float(inputs["second_per_grid_ts"][0])
        positions, _ = mrope_positions(input_ids, self.video_token_id, [grid], [interval], self.rope_compat)
        video = (input_ids == self.video_token_id).nonzero().squeeze(1)
        start, end = int(video[0]), int(video[-1]) + 1
        video_positions = positions[:, start:end].T.reshape(grid[0], grid[1] * grid[2], 3)
        tokens = VideoTokens(
            features=features.reshape(grid[0], grid[1] * grid[2], -1),
            grid=grid,
            attention=attention,
            positions=video_positions.to(features.device),
        )
        return EncodedSample(
            input_ids=input_ids,
            video_start=start,
            video_end=end,
            tokens=tokens,
            trailing=features.new_zeros(0, features.shape[-1]),
            positions=positions,
        )

    def reset_state(self) -> None:
        self.model.model.rope_deltas = None

"""Adapter for ``LlavaOnevisionForConditionalGeneration`` (transformers 5.x).

* features: the model's own ``get_video_features`` (SigLIP → projector → bilinear 2x pooling), ``[F, h*w, D]``
  per frame, without the one ``image_newline`` that closes the video; the newline is always kept after the
  compressed tokens (appended by the adapter on transformers ≤ 5.17, where ``forward`` adds it instead);
* attention received: a forward hook on the SigLIP layer that produces the selected features recomputes
  ``softmax(q kᵀ)`` frame by frame, averages heads and queries, and pools the map bilinearly exactly like the
  features (``methods.md`` §0.4 (a));
* positions: 1-D RoPE; ``generate`` renumbers the shortened sequence contiguously, as the LLaVA-NeXT-based
  references do.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from transformers import BatchFeature

from vidcompress.tokens import VideoTokens
from vidcompress.video import VideoClip

from .base import EncodedSample, VideoLLMAdapter

__all__ = ["LlavaOnevisionAdapter"]

FRAME_BLOCK = 8


class _AttentionProbe:
    """Forward hook on a SigLIP attention module recording the mean attention each patch receives, per frame."""

    def __init__(self) -> None:
        self.received: torch.Tensor | None = None

    def __call__(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: object) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        frames, length, _ = hidden.shape
        received = torch.empty(frames, length, dtype=torch.float32, device=hidden.device)
        for start in range(0, frames, FRAME_BLOCK):
            block = hidden[start : start + FRAME_BLOCK]
            shape = (block.shape[0], length, module.num_heads, module.head_dim)
            q = module.q_proj(block).view(shape).transpose(1, 2).float()
            k = module.k_proj(block).view(shape).transpose(1, 2).float()
            weights = torch.softmax(q @ k.transpose(-1, -2) * module.scale, dim=-1)  # [f, heads, S, S]
            received[start : start + FRAME_BLOCK] = weights.mean(dim=(1, 2))
        self.received = received


class LlavaOnevisionAdapter(VideoLLMAdapter):
    """LLaVA-OneVision: one frame per temporal step, pooled SigLIP tokens, one trailing newline, 1-D RoPE."""

    model_class = "LlavaOnevisionForConditionalGeneration"

    def __init__(self, model, processor) -> None:
        super().__init__(model, processor)
        self.tokenizer.padding_side = "left"

    @property
    def video_token_id(self) -> int:
        return int(self.model.config.video_token_id)

    def preprocess(self, clip: VideoClip, prompt: str) -> BatchFeature:
        return self.processor(text=[prompt], videos=[clip.frames], return_tensors="pt")

    def _feature_layer(self) -> torch.nn.Module:
        tower = self.model.model.vision_tower
        layers = getattr(tower, "vision_model", tower).encoder.layers
        selected = self.model.config.vision_feature_layer
        if not isinstance(selected, int):
            raise ValueError(f"attention scores need a single vision_feature_layer, the config has {selected!r}")
        # hidden_states[0] is the embedding output, hidden_states[i] the output of layers[i - 1]
        return layers[selected] if selected < 0 else layers[selected - 1]

    @contextmanager
    def _attention_probe(self, enabled: bool) -> Iterator[_AttentionProbe | None]:
        if not enabled:
            yield None
            return
        probe = _AttentionProbe()
        handle = self._feature_layer().self_attn.register_forward_hook(probe, with_kwargs=True)
        try:
            yield probe
        finally:
            handle.remove()

    def encode(self, inputs: BatchFeature, with_attention: bool) -> EncodedSample:
        config = self.model.config
        pixels = inputs["pixel_values_videos"].to(self.device)
        frames = pixels.shape[1]
        with torch.no_grad(), self._attention_probe(with_attention) as probe:
            output = self.model.model.get_video_features(
                pixels,
                vision_feature_layer=config.vision_feature_layer,
                vision_feature_select_strategy=config.vision_feature_select_strategy,
            )
        features = output.pooler_output[0]
        input_ids = inputs["input_ids"][0]
        video = (input_ids == self.video_token_id).nonzero().squeeze(1)
        start, end = int(video[0]), int(video[-1]) + 1
        placeholders = end - start
        if features.shape[0] == placeholders - 1:  # transformers <= 5.17 appends the newline in forward
            features = torch.cat([features, self.model.model.image_newline[None].to(features.dtype)])
        if features.shape[0] != placeholders:
            raise ValueError(f"{features.shape[0]} video features for {placeholders} placeholders")
        body, newline = features[:-1], features[-1:]
        per_frame = body.shape[0] // frames
        side = math.isqrt(per_frame)
        if side * side != per_frame:
            raise ValueError(f"{per_frame} tokens per frame do not form a square grid")
        attention = None
        if probe is not None:
            assert probe.received is not None
            patches = probe.received
            if config.vision_feature_select_strategy == "default":  # drop the CLS column, as the features do
                patches = patches[:, 1:]
            patch_side = math.isqrt(patches.shape[1])
            maps = patches.view(frames, 1, patch_side, patch_side)
            attention = F.interpolate(maps, size=(side, side), mode="bilinear").view(frames, per_frame)
        tokens = VideoTokens(
            features=body.reshape(frames, per_frame, -1),
            grid=(frames, side, side),
            attention=attention,
        )
        return EncodedSample(
            input_ids=input_ids,
            video_start=start,
            video_end=end,
            tokens=tokens,
            trailing=newline,
            positions=None,
        )

"""Model adapters (one per model family) and tiny random-weight builders for tests."""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedModel, ProcessorMixin

from .base import EncodedSample, LLMInputs, VideoLLMAdapter
from .llava_onevision import LlavaOnevisionAdapter
from .ppe_rotary import ppe_rotary, video_rows
from .qwen2_5_vl import Qwen2_5_VLAdapter

__all__ = ["ADAPTERS", "adapter_for", "EncodedSample", "LLMInputs", "VideoLLMAdapter", "LlavaOnevisionAdapter", "Qwen2_5_VLAdapter", "ppe_rotary", "video_rows"]

ADAPTERS: list[type[VideoLLMAdapter]] = [Qwen2_5_VLAdapter, LlavaOnevisionAdapter]


def adapter_for(model: PreTrainedModel, processor: ProcessorMixin, rope_compat: str = "reference") -> VideoLLMAdapter:
    """The adapter for ``model``'s family; raises ``ValueError`` for an unsupported model."""
    for adapter in ADAPTERS:
        if adapter.supports(model):
            kwargs: dict[str, Any] = {"rope_compat": rope_compat} if adapter is Qwen2_5_VLAdapter else {}
            return adapter(model, processor, **kwargs)
    names = ", ".join(adapter.model_class for adapter in ADAPTERS)
    raise ValueError(f"no adapter for {type(model).__name__}; supported: {names}")

"""The model and video under test: one full-size model and one prepared video in memory at a time."""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

import torch

from vidcompress.api import VideoLLM, wrap
from vidcompress.models.vision_attention import BATCHED_VISION_ATTENTION

from .measure import BENCH_QUESTION, PreparedVideo, prepare_video
from .models import FULL_MODELS, build_processor, build_random_model, load_checkpoint

__all__ = ["ModelSlot", "TINY_MODELS"]

TINY_MODELS = ("tiny-qwen2.5-vl", "tiny-llava-onevision")


class ModelSlot:
    """Holds one model and one prepared video at a time; building the next model frees the previous."""

    def __init__(
        self, device: torch.device, checkpoints: dict[str, str], attn_implementation: str, vision_attention: str
    ) -> None:
        self.device = device
        self.checkpoints = checkpoints
        self.attn_implementation = attn_implementation
        self.vision_attention = vision_attention
        self.name: str | None = None
        self.vlm: VideoLLM | None = None
        self.prepared: PreparedVideo | None = None

    def get(self, name: str) -> tuple[VideoLLM, dict[str, Any] | None]:
        """The model ``name`` and, when it was just built, a description of it."""
        if name == self.name and self.vlm is not None:
            return self.vlm, None
        self.release()
        start = time.perf_counter()
        random_weights = name not in self.checkpoints
        if name in TINY_MODELS:
            from vidcompress.models.tiny import TINY_MODELS as BUILDERS

            model, processor = BUILDERS[name]()
            model = model.to(self.device)
        elif random_weights:
            model = build_random_model(name, self.device, torch.bfloat16, self.attn_implementation)
            processor = build_processor(name, model.config)
        else:
            model, processor = load_checkpoint(self.checkpoints[name], self.device, torch.bfloat16, self.attn_implementation)
        _synchronize(self.device)
        self.vlm = wrap(model, method="none", processor=processor, vision_attention=self.vision_attention)
        self.name = name
        text = model.config.text_config
        info = {
            "checkpoint": self.checkpoints.get(name) or (FULL_MODELS[name].checkpoint if name in FULL_MODELS else name),
            "random_weights": random_weights,
            "parameters": sum(p.numel() for p in model.parameters()),
            "dtype": str(next(model.parameters()).dtype),
            "attn_implementation": {
                "vision": model.config.vision_config._attn_implementation,
                "text": text._attn_implementation,
            },
            "vision_attention": "batched" if model.config.vision_config._attn_implementation == BATCHED_VISION_ATTENTION else "stock",
            "build_seconds": round(time.perf_counter() - start, 2),
            "weights_mb": round(torch.cuda.memory_allocated(self.device) / 2**20, 1) if self.device.type == "cuda" else None,
        }
        return self.vlm, info

    def video(self, path: Path, frames: int, repeats: int) -> PreparedVideo:
        """``frames`` frames of ``path`` prepared for the current model (kept until another count is asked for)."""
        if self.prepared is None or self.prepared.frames != frames:
            self.prepared = None
            self.prepared = prepare_video(self.vlm, path, frames, BENCH_QUESTION, repeats if frames <= 128 else 1)
        return self.prepared

    def free(self) -> None:
        """Return cached GPU memory (after an out-of-memory error)."""
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def release(self) -> None:
        """Drop the model and the video."""
        self.vlm, self.name, self.prepared = None, None, None
        self.free()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)

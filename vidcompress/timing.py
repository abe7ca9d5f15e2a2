"""Wall-clock timing of pipeline stages, synchronised with the GPU when one is used."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from transformers import LogitsProcessor

__all__ = ["StageTimer", "FirstTokenClock"]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StageTimer:
    """Accumulates milliseconds per named stage. ``with timer("vision_encoder"): ...``"""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.ms: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        _synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            _synchronize(self.device)
            self.ms[stage] = self.ms.get(stage, 0.0) + (time.perf_counter() - start) * 1e3

    def add(self, stage: str, milliseconds: float) -> None:
        self.ms[stage] = self.ms.get(stage, 0.0) + milliseconds


class FirstTokenClock(LogitsProcessor):
    """A pass-through logits processor that notes when the first logits exist, i.e. when prefill has finished."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.first: float | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.first is None:
            _synchronize(self.device)
            self.first = time.perf_counter()
        return scores

"""``f2c``: F2C — question-relevant key clips chosen before the encoder, resolution traded for clip length."""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from vidcompress.compressor import Compressor
from vidcompress.frame_stage import FrameSelection
from vidcompress.ops.greedy import mmr_select
from vidcompress.ops.similarity import unit_vectors
from vidcompress.registry import register_compressor

__all__ = ["F2C", "FrameScorer", "ContrastiveScorer"]


@runtime_checkable
class FrameScorer(Protocol):
    """Embeds frames and text in one space (a contrastive image-text model)."""

    def embed_frames(self, frames: np.ndarray) -> torch.Tensor:
        """``[T, E]`` embeddings of ``uint8`` frames ``[T, H, W, 3]``."""
        ...

    def embed_text(self, text: str) -> torch.Tensor:
        """``[E]`` embedding of ``text``."""
        ...


def _pooled(output: Any) -> torch.Tensor:
    """Projected embeddings from ``get_*_features`` (a tensor, or an output whose ``pooler_output`` holds them)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ContrastiveScorer:
    """A CLIP / SigLIP model (``transformers`` ``AutoModel`` + ``AutoProcessor``) as a :class:`FrameScorer`.

    Args:
        model: a model with ``get_image_features`` and ``get_text_features`` (``CLIPModel``, ``SiglipModel``, ...).
        processor: its processor (images and text).
        batch_size: frames per image-tower forward.
    """

    def __init__(self, model: Any, processor: Any, batch_size: int = 32) -> None:
        self.model = model.eval()
        self.processor = processor
        self.batch_size = int(batch_size)

    @classmethod
    def from_pretrained(cls, name_or_path: str, device: str | torch.device | None = None) -> ContrastiveScorer:
        """Load a hub id or local path; on the GPU when one is available unless ``device`` says otherwise."""
        from transformers import AutoModel, AutoProcessor

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(AutoModel.from_pretrained(name_or_path).to(device), AutoProcessor.from_pretrained(name_or_path))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def embed_frames(self, frames: np.ndarray) -> torch.Tensor:
        chunks = []
        with torch.no_grad():
            for start in range(0, frames.shape[0], self.batch_size):
                batch = self.processor(images=list(frames[start : start + self.batch_size]), return_tensors="pt")
                pixels = batch["pixel_values"].to(self.device, dtype=self.model.dtype)
                chunks.append(_pooled(self.model.get_image_features(pixel_values=pixels)).float())
        return torch.cat(chunks)

    def embed_text(self, text: str) -> torch.Tensor:
        # SigLIP was trained on text padded to its full length; CLIP pools at the end-of-text token, so no padding
        padding = "max_length" if "siglip" in str(getattr(self.model.config, "model_type", "")) else True
        batch = self.processor(text=[text], return_tensors="pt", padding=padding, truncation=True)
        batch = {key: value.to(self.device) for key, value in batch.items() if key in ("input_ids", "attention_mask")}
        with torch.no_grad():
            return _pooled(self.model.get_text_features(**batch))[0].float()


def anchor_count(budget: float, candidates: int, clip_length: int, trade_resolution: bool) -> int:
    """Anchors: as many as full-resolution frames fit the budget (each becomes a lower-resolution clip), or, without
    the resolution trade, as many clips of ``clip_length`` full-resolution frames as fit."""
    frames = budget * candidates
    count = round(frames) if trade_resolution else round(frames / clip_length)
    return max(1, min(candidates, count))


def expand_to_clips(anchors: np.ndarray, candidates: int, clip_length: int, frames_per_step: int) -> np.ndarray:
    """Sorted union of the clips around ``anchors``: ``clip_length`` frames (rounded up to whole temporal groups)
    centred on each anchor's group, shifted inside the video at its ends."""
    groups = math.ceil(candidates / frames_per_step)
    clip_groups = min(groups, math.ceil(clip_length / frames_per_step))
    starts = np.clip(anchors // frames_per_step - clip_groups // 2, 0, groups - clip_groups)
    members = (starts[:, None] + np.arange(clip_groups)[None]) * frames_per_step
    frames = (members[:, :, None] + np.arange(frames_per_step)[None, None]).reshape(-1)
    return np.unique(frames[frames < candidates])


def traded_size(height: int, width: int, area: float, multiple: int) -> tuple[int, int] | None:
    """``(height, width)`` scaled by ``sqrt(area)`` and floored to ``multiple`` px (at least one ``multiple``);
    ``None`` when ``area >= 1`` (full resolution)."""
    if area >= 1.0:
        return None
    scale = math.sqrt(area)

    def floored(side: int) -> int:
        return max(multiple, int(side * scale) // multiple * multiple)

    return floored(height), floored(width)


@register_compressor(
    "f2c",
    stages=("frame",),
    needs_query=True,
    paper="From Frames to Clips: Training-free Adaptive Key Clip Selection for Long-Form Video Understanding, "
    "arXiv 2510.02262 (reconstruction)",
    reference=None,
)
class F2C(Compressor):
    """F2C: score candidate frames against the question, expand the best into clips, shrink them to a fixed budget.

    **Reconstruction** (methods.md §17): F2C has no public code; the paper's diversity steps and its adaptive
    clip-length module are not public. Results with this method must not be reported as F2C reproductions.

    Frame stage only (before the vision encoder, which then runs on fewer pixels):

    1. A contrastive image-text model (``scorer``) embeds every candidate frame and the question (for a
       multiple-choice question, pass the question with its options); relevance ``r_t = cos(frame_t, question)``.
    2. Anchors by maximal marginal relevance (methods.md §10's rule, as ``mmr`` does for tokens): first the most
       relevant frame, then ``argmax λ·r̂_t − (1 − λ)·max_{s ∈ S} cos(frame_t, frame_s)`` with ``r̂`` the relevance
       min-max normalised to [0, 1] (CLIP cosines span a narrow range) and ``λ = mmr_lambda`` (0.5). methods.md
       writes the step as ``r − λ·max cos``; ours is the classic MMR weighting.
    3. Each anchor expands to a clip of ``clip_length`` frames centred on it (whole temporal groups on Qwen2.5-VL);
       overlapping clips merge.
    4. Budget: ``budget`` is the fraction of the candidate video's pixel volume (frames × height × width) that is
       encoded; on Qwen2.5-VL visual tokens are proportional to it, so it is about the fraction of visual tokens at
       the LLM input that uniform sampling would give. With ``trade_resolution`` (default) there are
       ``round(budget·T)`` anchors — the frame count of uniform sampling at that budget — and the chosen frames are
       shrunk by the area factor ``budget·T / frames chosen`` (floored to ``size_multiple`` px, Qwen2.5-VL's token),
       so clips of ``L`` frames cost what ``L`` times fewer full-resolution frames would. Without it there are
       ``round(budget·T / L)`` anchors at full resolution. The paper picks the clip length adaptively; here it is
       the parameter ``clip_length``.

    LLaVA-OneVision resizes every frame to its fixed input size and pools to a fixed grid, so a smaller frame saves
    no tokens there: use ``trade_resolution=False`` (the pooling-size lever of methods.md §17.3 is not implemented).
    ``retention`` stays 1.0 (F2C acts before the encoder); chain a token-stage method (``"f2c+divprune"``) to
    compress the encoded tokens too.

    Scorer: a hub id or local path of a CLIP / SigLIP checkpoint (loaded once per instance with ``AutoModel`` /
    ``AutoProcessor``, on the GPU when one is available), or any object with ``embed_frames`` / ``embed_text``
    (:class:`FrameScorer`, e.g. :class:`ContrastiveScorer` around a loaded model). It is required: the paper's
    encoder is an external model, and the training-free fallback on the VLM's own tower is not implemented.

    Args:
        retention: must be 1.0 (see above).
        exact: accepted for the common interface.
        scorer: hub id, path or :class:`FrameScorer` (required when selecting frames).
        budget: fraction in (0, 1] of the candidate pixel volume to encode.
        clip_length: frames per clip, ``>= 1``.
        mmr_lambda: weight in [0, 1] of relevance against redundancy.
        trade_resolution: shrink the chosen frames to hold the budget (``True``) or keep full resolution.
        size_multiple: pixels the traded size is floored to (28 on Qwen2.5-VL).
    """

    def __init__(
        self,
        retention: float = 1.0,
        *,
        exact: bool = True,
        scorer: str | FrameScorer | None = None,
        budget: float = 0.25,
        clip_length: int = 4,
        mmr_lambda: float = 0.5,
        trade_resolution: bool = True,
        size_multiple: int = 28,
    ) -> None:
        super().__init__(retention, exact=exact)
        if self.retention != 1.0:
            raise ValueError(
                "f2c chooses frames before the encoder, so its input retention is 1.0; set budget=, or chain it with "
                f"a token-stage method (e.g. 'f2c+divprune'); got retention={retention!r}"
            )
        if scorer is not None and not isinstance(scorer, (str, FrameScorer)):
            raise ValueError(
                f"scorer must be a hub id, a path or an object with embed_frames / embed_text, got {scorer!r}"
            )
        if not 0.0 < float(budget) <= 1.0:
            raise ValueError(f"budget must lie in (0, 1], got {budget!r}")
        for name, value in (("clip_length", clip_length), ("size_multiple", size_multiple)):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 <= float(mmr_lambda) <= 1.0:
            raise ValueError(f"mmr_lambda must lie in [0, 1], got {mmr_lambda!r}")
        self.scorer = scorer
        self.budget = float(budget)
        self.clip_length = int(clip_length)
        self.mmr_lambda = float(mmr_lambda)
        self.trade_resolution = bool(trade_resolution)
        self.size_multiple = int(size_multiple)
        self._loaded: FrameScorer | None = None

    def frame_scorer(self) -> FrameScorer:
        """The scorer, loaded on first use when given by name."""
        if self._loaded is None:
            if self.scorer is None:
                raise ValueError("f2c needs a frame scorer: pass scorer= a CLIP / SigLIP hub id, path or FrameScorer")
            scorer = self.scorer
            self._loaded = ContrastiveScorer.from_pretrained(scorer) if isinstance(scorer, str) else scorer
        return self._loaded

    def select_frames(
        self, frames: np.ndarray, timestamps: np.ndarray, question: str, *, frames_per_step: int = 1
    ) -> FrameSelection:
        scorer = self.frame_scorer()
        candidates, height, width = frames.shape[:3]
        embeddings = unit_vectors(scorer.embed_frames(frames).float())
        text = unit_vectors(scorer.embed_text(question).float().to(embeddings.device))
        relevance = embeddings @ text
        spread = relevance.max() - relevance.min()
        normalised = (relevance - relevance.min()) / spread if spread > 0 else torch.zeros_like(relevance)
        count = anchor_count(self.budget, candidates, self.clip_length, self.trade_resolution)
        anchors = mmr_select(embeddings[None], normalised[None], count, mmr_lambda=self.mmr_lambda)[0]
        chosen = expand_to_clips(anchors.cpu().numpy(), candidates, self.clip_length, frames_per_step)
        size = None
        if self.trade_resolution:
            size = traded_size(height, width, self.budget * candidates / len(chosen), self.size_multiple)
        return FrameSelection(indices=chosen, size=size, scores=relevance.cpu().numpy())

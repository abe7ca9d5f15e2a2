"""Exact, batched attention for Qwen2.5-VL's windowed vision tower (no flash-attn needed).

Under ``sdpa`` or ``eager``, ``transformers``' ``Qwen2_5_VLVisionAttention`` splits every block's queries, keys and
values by ``cu_seqlens`` and runs one attention call per window (window blocks) or per temporal group (full blocks)
in a Python loop: at 32 frames of 448 px that is 256 calls in each of the 28 window blocks. Only flash-type
implementations receive ``cu_seqlens`` (``cu_seq_lens_q``) and do it in one call.

:func:`use_batched_vision_attention` registers :func:`batched_segment_attention` through ``transformers``' public
``AttentionInterface`` under :data:`BATCHED_VISION_ATTENTION` and selects it for the vision tower only. It groups the
segments by length and runs each group as one batched ``scaled_dot_product_attention`` call (one call in all when
every window has the same size, as at 448 px), so the result is the stock sdpa path's, segment for segment.

Side effects of the name, which must contain ``"flash"`` for ``transformers`` to pass ``cu_seqlens``:

* the vision tower computes ``max_seqlen`` with ``.item()`` (two host synchronisations per forward, one per
  ``cu_seqlens`` tensor; the stock sdpa path synchronises once per block instead);
* only ``config.vision_config`` changes: the language model keeps its own attention implementation (``sdpa``), and
  nothing else reads the vision config's implementation.

The attention-weight probes of :mod:`vidcompress.models.qwen2_5_vl` hook the attention module itself and are
unaffected. LLaVA-OneVision's SigLIP tower already runs one attention call per frame batch; nothing to do there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, PreTrainedModel

__all__ = [
    "BATCHED_VISION_ATTENTION",
    "VISION_ATTENTION_CHOICES",
    "batched_segment_attention",
    "use_batched_vision_attention",
    "set_vision_attention",
]

#: Registered name of :func:`batched_segment_attention` (``"flash"`` in it makes the vision tower pass ``cu_seqlens``).
BATCHED_VISION_ATTENTION = "vidcompress_flash_batched_segments"
#: Values of ``wrap(..., vision_attention=...)`` and ``vidcompress bench --vision-attention``.
VISION_ATTENTION_CHOICES = ("batched", "stock")

_PLAN_CACHE_SIZE = 4


@dataclass(frozen=True)
class _Group:
    """Segments of one length: ``index`` ``[n, length]`` token positions, or ``None`` when they tile ``[start, stop)``."""

    length: int
    count: int
    start: int
    index: torch.Tensor | None


class _PlanCache:
    """Segment groups per ``cu_seqlens`` tensor, so the boundaries cross to the host once per forward, not per block.

    Entries keep their tensor alive, so an ``is`` match cannot be a recycled object.
    """

    def __init__(self) -> None:
        self.entries: list[tuple[torch.Tensor, list[_Group]]] = []

    def get(self, bounds: torch.Tensor) -> list[_Group]:
        for tensor, groups in self.entries:
            if tensor is bounds:
                return groups
        groups = _plan(bounds)
        self.entries = [(bounds, groups), *self.entries[: _PLAN_CACHE_SIZE - 1]]
        return groups


def _plan(bounds: torch.Tensor) -> list[_Group]:
    """Group the segments ``[bounds[i], bounds[i+1])`` by length (one host synchronisation)."""
    edges = bounds.tolist()
    starts, lengths = edges[:-1], [b - a for a, b in zip(edges[:-1], edges[1:])]
    by_length: dict[int, list[int]] = {}
    for start, length in zip(starts, lengths):
        if length > 0:
            by_length.setdefault(length, []).append(start)
    groups = []
    for length, group_starts in by_length.items():
        first, count = group_starts[0], len(group_starts)
        if group_starts == list(range(first, first + count * length, length)):  # contiguous run: a view suffices
            groups.append(_Group(length, count, first, None))
            continue
        offsets = torch.arange(length)
        index = (torch.tensor(group_starts)[:, None] + offsets).to(bounds.device)
        groups.append(_Group(length, count, first, index))
    return groups


_CACHE = _PlanCache()


def batched_segment_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Non-causal attention within each segment of ``cu_seq_lens_q``; ``query``/``key``/``value`` are ``[1, H, S, d]``.

    Returns ``([1, S, H, d], None)`` like the flash implementations. Segments of equal length run as one batched
    ``scaled_dot_product_attention`` call; a contiguous run of them is a reshape, scattered ones are gathered.
    """
    if attention_mask is not None:
        raise ValueError("batched segment attention takes segments from cu_seq_lens_q, not an attention mask")
    bounds = kwargs.get("cu_seq_lens_q")
    if bounds is None:
        raise ValueError("batched segment attention needs cu_seq_lens_q (it serves Qwen2.5-VL's vision tower only)")
    q, k, v = query[0], key[0], value[0]  # [H, S, d]
    heads, total, dim = q.shape
    groups = _CACHE.get(bounds)
    if len(groups) == 1 and groups[0].index is None and groups[0].start == 0 and groups[0].count * groups[0].length == total:
        return _attend_run(q, k, v, groups[0], scaling, dropout).unsqueeze(0), None
    out = q.new_empty(total, heads, dim)
    for group in groups:
        if group.index is None:
            stop = group.start + group.count * group.length
            out[group.start : stop] = _attend_run(q, k, v, group, scaling, dropout)
            continue
        flat = group.index.reshape(-1)

        def gather(x: torch.Tensor) -> torch.Tensor:
            return x[:, flat].reshape(heads, group.count, group.length, dim).transpose(0, 1)

        attended = F.scaled_dot_product_attention(gather(q), gather(k), gather(v), dropout_p=dropout, scale=scaling)
        out[flat] = attended.permute(0, 2, 1, 3).reshape(-1, heads, dim)
    return out.unsqueeze(0), None


def _attend_run(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group: _Group, scaling: float | None, dropout: float
) -> torch.Tensor:
    """Attention over ``group.count`` contiguous segments of ``group.length`` tokens; returns ``[tokens, H, d]``."""
    heads, dim = q.shape[0], q.shape[2]
    stop = group.start + group.count * group.length

    def blocks(x: torch.Tensor) -> torch.Tensor:
        return x[:, group.start : stop].reshape(heads, group.count, group.length, dim).transpose(0, 1)

    attended = F.scaled_dot_product_attention(blocks(q), blocks(k), blocks(v), dropout_p=dropout, scale=scaling)
    return attended.permute(0, 2, 1, 3).reshape(-1, heads, dim)


def use_batched_vision_attention(model: PreTrainedModel) -> bool:
    """Run ``model``'s vision tower with :func:`batched_segment_attention`; ``False`` (nothing changed) when the model
    has no windowed Qwen2.5-VL-style vision tower. The language model keeps its attention implementation."""
    if getattr(model.config, "model_type", None) != "qwen2_5_vl":
        return False
    AttentionInterface.register(BATCHED_VISION_ATTENTION, batched_segment_attention)
    model.config.vision_config._attn_implementation = BATCHED_VISION_ATTENTION
    return True


def set_vision_attention(model: PreTrainedModel, choice: str) -> bool:
    """Apply ``choice`` (one of :data:`VISION_ATTENTION_CHOICES`); ``True`` when the batched attention is in use."""
    if choice not in VISION_ATTENTION_CHOICES:
        raise ValueError(f"vision_attention must be one of {', '.join(VISION_ATTENTION_CHOICES)}, got {choice!r}")
    return choice == "batched" and use_batched_vision_attention(model)

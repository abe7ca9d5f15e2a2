"""The decode stage: at every decoding step, layers ``>= L`` attend to a per-step subset of the cached visual keys.

DyCoke's dynamic KV pruning, expressed with forward hooks only (same layout and call convention as
:mod:`.llm_stage`):

* a forward hook on ``layers[L-1].self_attn`` computes, at decoding steps only (query length 1), the current token's
  attention over every cached key of that layer (rotary applied, GQA heads repeated, the incoming mask applied,
  mean over heads), and asks the method which prompt keys layers ``>= L`` may attend to;
* forward pre-hooks on ``layers[L:]`` replace the attention mask of decoding steps by one that also hides the
  dropped visual keys. The full cache is still stored and filled (the reference gathers the kept keys out of the full
  cache at every step), so no memory is saved; the prefill is untouched.

The mask keeps the kind the attention implementation expects: a boolean mask for ``sdpa`` (built when the incoming
mask is ``None``, i.e. no padding), an additive float mask for ``eager``. Other implementations are refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from .llm_stage import _rotate_half

__all__ = ["DecodeStageReport", "decode_pruning"]

SUPPORTED_ATTENTION = ("sdpa", "eager")


@dataclass
class DecodeStageReport:
    """What the decode stage did: per decoding step, the ``[B, S]`` prompt keys layers ``>= layer`` attended to."""

    layer: int
    num_layers: int
    keeps: list[torch.Tensor] = field(default_factory=list)


def _allowed_keys(mask: torch.Tensor | None, batch: int, length: int, device: torch.device) -> torch.Tensor:
    """``[B, KV]`` bool: the keys the single query of a decoding step may attend to under ``mask``."""
    if mask is None:
        return torch.ones(batch, length, dtype=torch.bool, device=device)
    row = mask[:, 0, -1]
    if mask.dtype == torch.bool:
        return row.expand(batch, length)
    return (row > torch.finfo(mask.dtype).min / 2).expand(batch, length)


def _step_attention(
    attn: torch.nn.Module,
    hidden: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    keys: torch.Tensor,
    allowed: torch.Tensor,
) -> torch.Tensor:
    """``[B, KV]`` attention of the one query in ``hidden`` ``[B, 1, D]`` over the cached (rotated) ``keys``
    ``[B, KV_heads, KV, head_dim]``, mean over heads, computed in float32."""
    batch = hidden.shape[0]
    q = attn.q_proj(hidden).view(batch, 1, -1, attn.head_dim).transpose(1, 2).float()
    cos, sin = cos.unsqueeze(1).float(), sin.unsqueeze(1).float()
    q = q * cos + _rotate_half(q) * sin
    k = keys.float().repeat_interleave(q.shape[1] // keys.shape[1], dim=1)
    scores = (q @ k.transpose(-1, -2))[:, :, 0] * attn.scaling  # [B, H, KV]
    weights = torch.softmax(scores.masked_fill(~allowed[:, None], -float("inf")), dim=-1)
    return weights.mean(dim=1)


class _DecodeHooks:
    """The hook state of one ``generate`` call."""

    def __init__(self, stage: Any, language_model: torch.nn.Module, visual_mask: torch.Tensor) -> None:
        layers = language_model.layers
        self.stage = stage
        self.layer = int(stage.decode_layer)
        name = getattr(stage, "name", type(stage).__name__)
        if not 1 <= self.layer < len(layers):
            raise ValueError(
                f"{name}: decode_layer {self.layer} must lie in [1, {len(layers) - 1}] for a model with "
                f"{len(layers)} decoder layers (layers >= decode_layer attend to the kept visual tokens only)"
            )
        self.implementation = language_model.config._attn_implementation
        if self.implementation not in SUPPORTED_ATTENTION:
            raise ValueError(
                f"{name}: the decode stage supports the attention implementations {SUPPORTED_ATTENTION}, "
                f"the model uses {self.implementation!r}"
            )
        self.visual_mask = visual_mask
        self.prompt_length = visual_mask.shape[1]
        self.previous_attention: torch.Tensor | None = None
        self.keep: torch.Tensor | None = None
        self.key_length = 0
        self.step_mask: tuple[torch.Tensor | None, torch.Tensor] | None = None  # (incoming mask, replacement)
        self.report = DecodeStageReport(layer=self.layer, num_layers=len(layers))

    def score(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        if hidden.shape[1] != 1:  # the prefill
            return
        # transformers >= 5.25 passes the cache as ``cache``; earlier 5.x releases as ``past_key_values``
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is None:
            raise ValueError("the decode stage needs generate's KV cache (use_cache=True)")
        keys = cache.layers[self.layer - 1].keys
        batch, length = hidden.shape[0], keys.shape[2]
        allowed = _allowed_keys(kwargs.get("attention_mask"), batch, length, hidden.device)
        cos, sin = kwargs["position_embeddings"]
        attention = _step_attention(module, hidden, cos, sin, keys, allowed)[:, : self.prompt_length]
        keep = self.stage.prune_in_decode(attention, self.visual_mask, self.previous_attention, self.keep)
        self.previous_attention, self.keep = attention, keep
        self.key_length = length
        self.step_mask = None
        self.report.keeps.append(keep)

    def restrict(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        hidden = args[0] if args else kwargs["hidden_states"]
        if hidden.shape[1] != 1 or self.keep is None:
            return args, kwargs
        incoming = kwargs.get("attention_mask")
        if self.step_mask is None or self.step_mask[0] is not incoming:
            self.step_mask = (incoming, self._mask(incoming, hidden.dtype))
        kwargs["attention_mask"] = self.step_mask[1]
        return args, kwargs

    def _mask(self, incoming: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        """The incoming decoding-step mask with the dropped visual keys hidden as well, of the same kind."""
        keep = self.keep
        generated = torch.ones(keep.shape[0], self.key_length - self.prompt_length, dtype=torch.bool,
                               device=keep.device)
        attend = torch.cat([keep, generated], dim=1)[:, None, None, :]  # [B, 1, 1, KV]
        if incoming is None:
            if self.implementation == "sdpa":
                return attend
            incoming = torch.zeros(attend.shape, dtype=dtype, device=attend.device)
        if incoming.dtype == torch.bool:
            return incoming & attend
        return incoming.masked_fill(~attend, torch.finfo(incoming.dtype).min)


@contextmanager
def decode_pruning(
    language_model: torch.nn.Module, stage: Any, visual_mask: torch.Tensor
) -> Iterator[DecodeStageReport]:
    """Install the decode-stage hooks of ``stage`` on ``language_model`` for one ``generate`` call.

    ``stage`` provides ``decode_layer`` (``L``) and ``prune_in_decode(attention, visual_mask, previous_attention,
    previous_keep)``. ``visual_mask`` ``[B, S]`` marks the prompt's visual tokens.
    """
    hooks = _DecodeHooks(stage, language_model, visual_mask)
    layers = language_model.layers
    handles = [layers[hooks.layer - 1].self_attn.register_forward_hook(hooks.score, with_kwargs=True)]
    for layer in layers[hooks.layer :]:
        handles.append(layer.register_forward_pre_hook(hooks.restrict, with_kwargs=True))
    try:
        yield hooks.report
    finally:
        for handle in handles:
            handle.remove()

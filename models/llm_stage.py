"""The LLM stage: remove (or merge) visual tokens inside the decoder at layer ``K``, with forward hooks only.

One mechanism serves every LLM-stage method and both model families (Qwen2.5-VL's text model and LLaVA-OV's Qwen2
decoder share the layout ``language_model.layers[i].self_attn.{q,k}_proj`` and call each layer as
``layer(hidden_states, attention_mask=..., position_embeddings=(cos, sin), position_ids=..., cache=...)``, the cache
keyword being ``past_key_values`` before transformers 5.25):

* a forward hook on ``layers[K-1].self_attn`` recomputes, during prefill only, the attention that the requested
  queries (last token, or the text after the video) pay to every position — rotary applied, GQA heads repeated,
  padding masked — so the rest of the model keeps its fast attention kernel (``transformers.md`` §8);
* a forward pre-hook on ``layers[K]`` asks the method for its :class:`~vidcompress.llm_stage.LayerReduction` and
  gathers the hidden states;
* forward pre-hooks on ``layers[K:]`` slice the rotary ``(cos, sin)``, the text ``position_ids`` and the attention
  mask to the kept positions during prefill, and slice the key axis of the mask at every decoding step, because the
  KV cache of layers ``>= K`` only ever holds the kept positions.

Survivors keep their original positions (the FastV convention); decoding continues from the uncompressed numbering.
Works with ``sdpa`` and ``eager`` attention (masks of any dtype are indexed, never rebuilt).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from vidcompress.llm_stage import AttentionQuery, LayerInputs, LayerReduction

__all__ = ["LLMStageReport", "layer_reduction"]


@dataclass
class LLMStageReport:
    """What the LLM stage did, filled in during prefill."""

    layer: int
    num_layers: int
    visual_in: int = 0
    visual_kept: int = 0
    keep: torch.Tensor | None = None  # [B, S'] positions that survived layer K

    def layer_averaged_visual_tokens(self) -> float:
        """Visual tokens per layer, averaged over all decoder layers."""
        return (self.layer * self.visual_in + (self.num_layers - self.layer) * self.visual_kept) / self.num_layers


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def _query_attention(
    attn: torch.nn.Module,
    hidden: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    queries: torch.Tensor,
    valid: torch.Tensor,
) -> torch.Tensor:
    """``[B, S]`` attention paid by the ``queries`` positions (``[B, S]`` bool) to every key, mean over heads/queries.

    Recomputes ``q`` and ``k`` exactly as the attention module does (projection, rotary, GQA repetition) for the one
    layer that scores; causal and padding masks applied. Only the query rows from the first chosen position on are
    formed (one row for the last token), so the score matrix is ``[B, H, Q, S]``, not ``[B, H, S, S]``.
    """
    batch, length, _ = hidden.shape
    head_dim = attn.head_dim
    first = int(queries.any(0).int().argmax())  # the chosen queries lie in the suffix [first, S)
    cos, sin = cos.unsqueeze(1).float(), sin.unsqueeze(1).float()
    q = attn.q_proj(hidden[:, first:]).view(batch, length - first, -1, head_dim).transpose(1, 2).float()
    k = attn.k_proj(hidden).view(batch, length, -1, head_dim).transpose(1, 2).float()
    q = q * cos[:, :, first:] + _rotate_half(q) * sin[:, :, first:]
    k = k * cos + _rotate_half(k) * sin
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    scores = (q @ k.transpose(-1, -2)) * attn.scaling  # [B, H, Q, S]
    positions = torch.arange(length, device=hidden.device)
    allowed = (positions[None, :] <= positions[first:, None])[None, None] & valid[:, None, None, :]
    weights = torch.softmax(scores.masked_fill(~allowed, -float("inf")), dim=-1).nan_to_num(0.0)
    per_query = weights.mean(dim=1)  # [B, Q, S]
    chosen = queries[:, first:].float()
    return (per_query * chosen[:, :, None]).sum(1) / chosen.sum(1, keepdim=True).clamp(min=1)


def _gather_seq(value: torch.Tensor, keep: torch.Tensor, dim: int) -> torch.Tensor:
    """Index ``value`` along ``dim`` with the per-row positions ``keep`` ``[B, S']`` (batch is dim 0)."""
    if value.shape[0] != keep.shape[0]:
        value = value.expand(keep.shape[0], *value.shape[1:])
    shape = [keep.shape[0]] + [1] * (value.ndim - 1)
    shape[dim] = keep.shape[1]
    index = keep.view(shape).expand(*[value.shape[i] if i != dim else keep.shape[1] for i in range(value.ndim)])
    return torch.gather(value, dim, index)


class _LayerHooks:
    """The hook state of one ``generate`` call."""

    def __init__(
        self,
        stage: Any,
        layers: torch.nn.ModuleList,
        visual_mask: torch.Tensor,
        valid_mask: torch.Tensor,
    ) -> None:
        self.stage = stage
        self.layer = int(stage.llm_layer)
        if not 1 <= self.layer < len(layers):
            raise ValueError(
                f"{getattr(stage, 'name', type(stage).__name__)}: LLM-stage layer {self.layer} must lie in "
                f"[1, {len(layers) - 1}] for a model with {len(layers)} decoder layers, got {self.layer}"
            )
        self.layers = layers
        self.visual_mask = visual_mask
        self.valid_mask = valid_mask
        self.length = visual_mask.shape[1]
        self.query: AttentionQuery = stage.llm_attention_query
        self.attention: torch.Tensor | None = None
        self.keep: torch.Tensor | None = None
        self.report = LLMStageReport(layer=self.layer, num_layers=len(layers))

    def _queries(self) -> torch.Tensor:
        if self.query == "last":
            queries = torch.zeros_like(self.visual_mask)
            queries[:, -1] = True
            return queries
        last_visual = torch.where(
            self.visual_mask, torch.arange(self.length, device=self.visual_mask.device), -1
        ).max(1, keepdim=True).values
        return (torch.arange(self.length, device=self.visual_mask.device)[None] > last_visual) & self.valid_mask

    def score(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        if hidden.shape[1] != self.length or self.query == "none" or self.keep is not None:
            return
        cos, sin = kwargs["position_embeddings"]
        self.attention = _query_attention(module, hidden, cos, sin, self._queries(), self.valid_mask)

    def reduce(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        hidden = args[0] if args else kwargs.pop("hidden_states")
        rest = args[1:]
        if hidden.shape[1] == self.length and self.keep is None:
            decision: LayerReduction = self.stage.reduce_in_llm(
                LayerInputs(self.layer, hidden, self.visual_mask, self.valid_mask, self.attention)
            )
            keep = decision.keep.to(hidden.device)
            self._check(keep)
            self.keep = keep
            self.report.keep = keep
            hidden = decision.hidden_states if decision.hidden_states is not None else _gather_seq(hidden, keep, 1)
            self.report.visual_in = int(self.visual_mask[0].sum())
            self.report.visual_kept = int(_gather_seq(self.visual_mask, keep, 1)[0].sum())
        return (hidden, *rest), self.slice_kwargs(kwargs)

    def _check(self, keep: torch.Tensor) -> None:
        if keep.ndim != 2 or keep.shape[0] != self.visual_mask.shape[0]:
            raise ValueError(f"keep must be [batch, S'], got {tuple(keep.shape)}")
        if keep.shape[1] > 1 and not bool((keep[:, 1:] > keep[:, :-1]).all()):
            raise ValueError("keep positions must be strictly increasing")
        kept = torch.zeros_like(self.visual_mask)
        kept.scatter_(1, keep, True)
        if bool((~kept & ~self.visual_mask).any()):
            raise ValueError("an LLM-stage method may only remove visual tokens")

    def slice_kwargs(self, kwargs: dict) -> dict:
        """Restrict rotary, positions and mask to the kept positions (prefill) or the cached keys (decoding)."""
        keep = self.keep
        if keep is None:
            return kwargs
        mask = kwargs.get("attention_mask")
        prefill = kwargs["position_embeddings"][0].shape[1] == self.length
        if prefill:
            cos, sin = kwargs["position_embeddings"]
            kwargs["position_embeddings"] = (_gather_seq(cos, keep, 1), _gather_seq(sin, keep, 1))
            position_ids = kwargs.get("position_ids")
            if isinstance(position_ids, torch.Tensor) and position_ids.shape[-1] == self.length:
                kwargs["position_ids"] = _gather_seq(position_ids.expand(keep.shape[0], -1), keep, 1)
            if isinstance(mask, torch.Tensor):
                kwargs["attention_mask"] = _gather_seq(_gather_seq(mask, keep, mask.ndim - 2), keep, mask.ndim - 1)
        elif isinstance(mask, torch.Tensor):
            extra = mask.shape[-1] - self.length  # decoded tokens so far, all cached
            new = torch.arange(self.length, mask.shape[-1], device=keep.device).expand(keep.shape[0], extra)
            kwargs["attention_mask"] = _gather_seq(mask, torch.cat([keep, new], dim=1), mask.ndim - 1)
        return kwargs

    def slice_only(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return args, self.slice_kwargs(kwargs)


@contextmanager
def layer_reduction(
    language_model: torch.nn.Module,
    stage: Any,
    visual_mask: torch.Tensor,
    valid_mask: torch.Tensor,
) -> Iterator[LLMStageReport]:
    """Install the LLM-stage hooks of ``stage`` on ``language_model`` for one prefill and its decoding steps.

    ``stage`` provides ``llm_layer`` (``K``), ``llm_attention_query`` and ``reduce_in_llm(LayerInputs)``.
    """
    layers = language_model.layers
    hooks = _LayerHooks(stage, layers, visual_mask, valid_mask)
    handles = [layers[hooks.layer - 1].self_attn.register_forward_hook(hooks.score, with_kwargs=True)]
    handles.append(layers[hooks.layer].register_forward_pre_hook(hooks.reduce, with_kwargs=True))
    for layer in layers[hooks.layer + 1 :]:
        handles.append(layer.register_forward_pre_hook(hooks.slice_only, with_kwargs=True))
    try:
        yield hooks.report
    finally:
        for handle in handles:
            handle.remove()

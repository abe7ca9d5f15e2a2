"""What an LLM-stage method sees at layer ``K`` and what it returns.

An LLM-stage method (FastV, the inner stages of FlashVID / HoliTom / ToDRE) decides once, during prefill, which
positions of the sequence survive from layer ``K`` on, and may replace their hidden states (merging). The model
adapter's hooks (``vidcompress.models.llm_stage``) then slice hidden states, rotary embeddings, attention mask and
KV cache consistently for the rest of prefill and for every decoding step; the method never touches the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["AttentionQuery", "LayerInputs", "LayerReduction", "keep_top_visual"]

#: Which queries' attention at layer ``K - 1`` a method needs: the last prompt token's (FastV), the mean over the
#: text tokens after the video (task relevance, ToDRE / PruneVid), or none.
AttentionQuery = Literal["last", "text", "none"]


@dataclass(frozen=True)
class LayerInputs:
    """The prefill state entering layer ``K``.

    Attributes:
        layer: ``K``.
        hidden_states: ``[B, S, D]`` input of layer ``K``.
        visual_mask: ``[B, S]`` bool, the compressible visual tokens (LLaVA-OV's newline is not one).
        valid_mask: ``[B, S]`` bool, ``False`` on left padding.
        attention: ``[B, S]`` attention received by each position at layer ``K - 1`` from the requested queries
            (softmax over keys, mean over heads and queries), or ``None`` when the method asked for none.
    """

    layer: int
    hidden_states: torch.Tensor
    visual_mask: torch.Tensor
    valid_mask: torch.Tensor
    attention: torch.Tensor | None


@dataclass(frozen=True)
class LayerReduction:
    """A method's decision at layer ``K``.

    Attributes:
        keep: ``[B, S']`` long, strictly increasing sequence positions that survive; every non-visual position must
            be kept (text, padding, the last token), so ``S - S'`` visual tokens are removed in each row.
        hidden_states: optional ``[B, S', D]`` replacement hidden states of the kept positions (merging methods);
            ``None`` keeps the gathered ones.
    """

    keep: torch.Tensor
    hidden_states: torch.Tensor | None = None


def keep_top_visual(inputs: LayerInputs, scores: torch.Tensor, keep_visual: int) -> torch.Tensor:
    """``[B, S']`` positions that keep every non-visual token and the ``keep_visual`` best-scored visual tokens.

    Ties are broken by position (earlier first) so the choice is deterministic.
    """
    visual_counts = inputs.visual_mask.sum(1)
    if bool((visual_counts != visual_counts[0]).any()):
        raise ValueError("every row of a batch must hold the same number of visual tokens for an LLM stage")
    if not 0 <= keep_visual <= int(visual_counts[0]):
        raise ValueError(f"cannot keep {keep_visual} of {int(visual_counts[0])} visual tokens")
    # non-visual positions sort first (-inf), then visual ones by descending score; the stable sort keeps
    # positional order among equal keys
    key = torch.where(inputs.visual_mask, -scores.float(), torch.full_like(scores, -float("inf"), dtype=torch.float))
    ranked = torch.sort(key, dim=1, stable=True).indices
    survivors = scores.shape[1] - int(visual_counts[0]) + keep_visual
    return torch.sort(ranked[:, :survivors], dim=1).values

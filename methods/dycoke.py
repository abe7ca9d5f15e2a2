"""``dycoke``: DyCoke's temporal token merging (TTM) token stage and its decode-time dynamic KV pruning."""

from __future__ import annotations

import math

import torch

from vidcompress.assemble import select_tokens
from vidcompress.compressor import Compressor
from vidcompress.methods.uniform import frame_budgets
from vidcompress.ops.budgets import descending_rank, int_tensor_on
from vidcompress.ops.temporal import unit
from vidcompress.registry import register_compressor
from vidcompress.tokens import CompressedTokens, VideoTokens


def reference_frames(num_frames: int) -> list[int]:
    """Frame each frame is pruned against (``-1`` for the frames kept whole), in the reference schedule.

    Pairs ``(0, 1), (2, 3), ...``: the second frame of a pair is pruned against the first. Then for
    ``i = 0, 4, 8, ... < T - 4`` frame ``i + 2`` is pruned against frame ``i``. Frames ``4j`` stay whole, and so does
    frame ``T - 2`` when ``T - 2`` is not reached by the second pass.
    """
    reference = [-1] * num_frames
    for first in range(0, num_frames - 1, 2):
        reference[first + 1] = first
    for anchor in range(0, num_frames - 4, 4):
        reference[anchor + 2] = anchor
    return reference


DECODE_REUSE = ("reference", "previous")


@register_compressor(
    "dycoke",
    stages=("token", "decode"),
    paper="DyCoke: Dynamic Compression of Tokens for Fast Video Large Language Models (CVPR 2025, arXiv 2411.15024)",
    reference="KD-TAO/DyCoke",
)
class DyCoke(Compressor):
    """DyCoke TTM: a pruned frame keeps the tokens least similar to the same position in its reference frame.

    Token stage of DyCoke (``llava_arch.py: dycole_ttm``): despite the name "merging", nothing is averaged. With the
    reference schedule (:func:`reference_frames`) frames ``4j`` (and frame ``T - 2``) stay whole and every other frame
    keeps ``int((1 - prune_ratio) * N)`` tokens; ``prune_ratio`` is the paper's ``K`` (default 0.7).

    Retention: the native count is ``F_whole * N + (T - F_whole) * int((1 - K) * N)`` (``exact=False``). By default
    (``exact=True``) the count is ``target_count`` at any retention. At or above the floor ``F_whole * N`` (9/32 =
    28 % at 32 frames) the whole frames stay whole and the remaining budget ``target_count - F_whole * N`` is split
    evenly over the pruned frames, each keeping its least similar tokens. Below the floor the pruned frames keep
    nothing and the anchor frames are reconciled as a pure pruner (methods.md §0.7): the budget is split evenly over
    them and each drops its lowest-priority tokens, those most similar to the frame's own mean token (the least
    distinctive). ``prune_anchor_frames=True`` (our extension) instead splits the budget over all frames whenever it
    is below the floor, every frame keeping its least similar tokens (an anchor frame: least similar to its mean).
    Ties go to the lower index.

    Decode stage (``modeling_qwen2.py: PrunableDynamicCache``; on by default, as in the reference;
    ``decode_pruning=False`` turns it off): at every decoding step the current token's attention at layer
    ``decode_layer - 1`` (the paper's ``L - 1``; mean over heads) over the visual tokens is compared with the previous
    step's by cosine similarity. At the first step, or when the similarity is below ``decode_similarity`` (0.9), the
    ``int(V * (1 - decode_prune_ratio))`` visual tokens with the highest attention are chosen (``decode_prune_ratio``
    is the paper's ``P``, default 0.8 as in the reference's evaluation script; ``decode_layer`` defaults to its
    ``L = 3``), and layers ``>= decode_layer`` attend, at that step, only to those visual tokens plus all text and
    generated tokens. The full cache is stored (no memory is saved, as in the reference); the prefill is untouched.
    Reference quirk reproduced by default (``decode_reuse="reference"``): at a step whose similarity is at least the
    threshold no selection applies, so that step attends to every visual token; ``decode_reuse="previous"`` (the
    paper's description) reuses the previous step's selection instead. Differences: the visual span comes from the
    splice (the reference hard-codes the prompt offset; LLaVA-OV's trailing newline counts as text here), the scores
    are recomputed in a hook from the cached keys, so any kernel keeps running (the reference needs explicit
    weights), padded batches work (the reference: batch 1) and each row decides for itself, and ties go to the lower
    index. Models with at most ``decode_layer`` decoder layers are refused at generation time (the built-in tiny models
    have 2: use ``decode_layer=1``). The decode stage cannot be chained with an LLM-stage method (``dycoke+fastv``).
    """

    def __init__(
        self,
        retention: float = 1.0,
        *,
        exact: bool = True,
        prune_ratio: float = 0.7,
        prune_anchor_frames: bool = False,
        decode_pruning: bool = True,
        decode_layer: int = 3,
        decode_prune_ratio: float = 0.8,
        decode_similarity: float = 0.9,
        decode_reuse: str = "reference",
    ) -> None:
        super().__init__(retention, exact=exact)
        if not 0.0 <= prune_ratio < 1.0:
            raise ValueError(f"prune_ratio (DyCoke's K) must lie in [0, 1), got {prune_ratio!r}")
        if isinstance(decode_layer, bool) or int(decode_layer) != decode_layer or decode_layer < 1:
            raise ValueError(f"decode_layer (DyCoke's L) must be an integer >= 1 (scores come from L - 1), "
                             f"got {decode_layer!r}")
        if not 0.0 <= decode_prune_ratio < 1.0:
            raise ValueError(f"decode_prune_ratio (DyCoke's P) must lie in [0, 1), got {decode_prune_ratio!r}")
        if not (math.isfinite(decode_similarity) and -1.0 <= decode_similarity <= 1.0):
            raise ValueError(f"decode_similarity (a cosine threshold) must lie in [-1, 1], got {decode_similarity!r}")
        if decode_reuse not in DECODE_REUSE:
            raise ValueError(f"decode_reuse must be one of {DECODE_REUSE}, got {decode_reuse!r}")
        self.prune_ratio = float(prune_ratio)
        self.prune_anchor_frames = bool(prune_anchor_frames)
        self.decode_pruning = bool(decode_pruning)
        self.decode_layer = int(decode_layer)
        self.decode_prune_ratio = float(decode_prune_ratio)
        self.decode_similarity = float(decode_similarity)
        self.decode_reuse = decode_reuse

    @property
    def stages(self) -> tuple[str, ...]:
        """The registered stages, without ``decode`` when ``decode_pruning=False``."""
        return tuple(stage for stage in self.info.stages if stage != "decode" or self.decode_pruning)

    def compress(self, tokens: VideoTokens, count: int) -> CompressedTokens:
        t, h, w = tokens.grid
        n = h * w
        reference = reference_frames(t)
        whole = [frame for frame in range(t) if reference[frame] < 0]
        pruned = [frame for frame in range(t) if reference[frame] >= 0]
        budgets = self._budgets(t, n, whole, pruned, count)
        normed = unit(tokens.features)
        own_mean = unit(normed.mean(1))
        # similarity of every token to what it is compared with: its reference frame, or its own frame's mean
        against = torch.stack(
            [normed[ref] if ref >= 0 else own_mean[frame].expand(n, -1) for frame, ref in enumerate(reference)]
        )
        similarity = (normed * against).sum(-1)  # [T, N]
        order = torch.sort(similarity, dim=1, stable=True).indices  # least similar first
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(n, device=order.device).expand(t, n).contiguous())
        keep = (rank < int_tensor_on(tuple(budgets), rank.device)[:, None]).reshape(-1)
        flat = torch.arange(t * n, device=keep.device)
        # the kept flat indices, ascending; their number sum(budgets) is known on the host (no nonzero, no sync)
        kept = torch.sort(torch.where(keep, flat, t * n)).values[: sum(budgets)]
        return select_tokens(tokens, kept)

    def prune_in_decode(
        self,
        attention: torch.Tensor,
        visual_mask: torch.Tensor,
        previous_attention: torch.Tensor | None,
        previous_keep: torch.Tensor | None,
    ) -> torch.Tensor:
        """``[B, S]`` bool: the prompt keys layers ``>= decode_layer`` attend to at this decoding step.

        A row re-selects its top ``int(V * (1 - P))`` visual tokens by ``attention`` at the first step or when the
        cosine similarity of its visual attention to the previous step's is below ``decode_similarity``; otherwise it
        attends to every visual token (``decode_reuse="reference"``) or keeps its previous selection
        (``"previous"``). Text is always attended to. Runs on the device without host synchronisation.
        """
        visual_attention = torch.where(visual_mask, attention.float(), 0.0)
        batch = attention.shape[0]
        if previous_attention is None:
            reselect = torch.ones(batch, dtype=torch.bool, device=attention.device)
        else:
            previous = torch.where(visual_mask, previous_attention.float(), 0.0)
            similarity = torch.nn.functional.cosine_similarity(visual_attention, previous, dim=1)
            reselect = similarity < self.decode_similarity
        budgets = (visual_mask.sum(1, dtype=torch.float64) * (1.0 - self.decode_prune_ratio)).floor()
        ranked = descending_rank(torch.where(visual_mask, attention.float(), -torch.inf))
        selected = ~visual_mask | (ranked < budgets[:, None])
        if self.decode_reuse == "previous" and previous_keep is not None:
            fallback = previous_keep
        else:
            fallback = torch.ones_like(visual_mask)
        return torch.where(reselect[:, None], selected, fallback)

    def _budgets(self, t: int, n: int, whole: list[int], pruned: list[int], count: int) -> list[int]:
        """Tokens kept per frame."""
        if not self.exact:
            native = int((1.0 - self.prune_ratio) * n)
            return [n if frame in whole else native for frame in range(t)]
        floor = len(whole) * n
        if count < floor:
            frames = list(range(t)) if self.prune_anchor_frames else whole
            budgets = [0] * t
            for frame, budget in zip(frames, frame_budgets(len(frames), count)):
                budgets[frame] = budget
            return budgets
        budgets = [n] * t
        if pruned:
            for frame, budget in zip(pruned, frame_budgets(len(pruned), count - floor)):
                budgets[frame] = budget
        return budgets

"""``dycoke``: DyCoke's temporal token merging (TTM) token stage (the decode-time KV pruning is not provided)."""

from __future__ import annotations

import torch

from vidcompress.assemble import select_tokens
from vidcompress.compressor import Compressor
from vidcompress.methods.uniform import frame_budgets
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


@register_compressor(
    "dycoke",
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

    Not provided: the paper's decode-time dynamic KV-cache pruning (``dycoke_l`` / ``dycoke_p``). At every decoding
    step it re-scores the visual tokens by the current token's attention at layer ``L - 1`` and attends, in layers
    ``>= L``, to the cached keys of the top ``1 - P`` visual tokens only (it stores the full cache, so it saves no
    memory). Hooks could express it (mask the dropped keys per step), but the LLM-stage mechanism decides once at
    prefill and the adapter's ``generate`` installs no per-step ("decode") stage; adding one touches the adapter and
    the public API, which this method does not do. The registry therefore lists the token stage only.
    """

    def __init__(
        self,
        retention: float = 1.0,
        *,
        exact: bool = True,
        prune_ratio: float = 0.7,
        prune_anchor_frames: bool = False,
    ) -> None:
        super().__init__(retention, exact=exact)
        if not 0.0 <= prune_ratio < 1.0:
            raise ValueError(f"prune_ratio (DyCoke's K) must lie in [0, 1), got {prune_ratio!r}")
        self.prune_ratio = float(prune_ratio)
        self.prune_anchor_frames = bool(prune_anchor_frames)

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
        keep = rank < torch.tensor(budgets, device=rank.device)[:, None]
        return select_tokens(tokens, torch.nonzero(keep.reshape(-1)).squeeze(1))

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

"""``ppe``: Chat-UniVi DPC-kNN merging per frame, each merged token carrying up to ``P`` member positions (PPE)."""

from __future__ import annotations

import dataclasses
import math

import torch

from vidcompress.assemble import merge_tokens
from vidcompress.compressor import Compressor
from vidcompress.ops.dpc_knn import dpc_knn
from vidcompress.ops.reconcile import group_by_representative
from vidcompress.registry import register_compressor
from vidcompress.tokens import CompressedTokens, VideoTokens

__all__ = ["MEMBER_CHOICES", "PPE", "attach_position_sets"]

MEMBER_CHOICES = ("reference", "nearest", "spread")


def _member_order(tokens: VideoTokens, out: CompressedTokens, member_choice: str) -> torch.Tensor:
    """``[M]`` flat indices of the input tokens sorted by (output row, member key); dropped tokens come last."""
    source = out.source
    row = torch.where(source >= 0, source, out.num_tokens)
    members = torch.arange(source.shape[0], device=source.device)
    if member_choice == "nearest":
        features = tokens.flat_features.float()
        representative = out.representatives[row.clamp(max=out.num_tokens - 1)]
        key = (features - features[representative]).norm(dim=-1)
        key = key.masked_fill(members == representative, -1.0)  # the representative first
        by_key = torch.sort(key, stable=True).indices
        members, row = members[by_key], row[by_key]
    return members[torch.sort(row, stable=True).indices]


def _slot_ranks(sizes: torch.Tensor, slots: int, member_choice: str) -> torch.Tensor:
    """``[K, P]`` rank (within each row's sorted members) that fills each slot; ``-1`` means the representative."""
    size = sizes[:, None]
    slot = torch.arange(slots, device=sizes.device)[None, :]
    if member_choice == "reference":
        return size - 1 - slot % size
    if member_choice == "spread":
        spread = (2 * slot + 1) * size // (2 * slots)
        return torch.where(size >= slots, spread, torch.where(slot < size, slot, -1))
    return torch.where(slot < size, slot, -1)


def attach_position_sets(
    tokens: VideoTokens, out: CompressedTokens, max_members: int = 8, member_choice: str = "reference"
) -> CompressedTokens:
    """``out`` with ``position_sets`` ``[K, P, 3]`` built from its ``source``: up to ``P = max_members`` members each.

    Works for the output of any method (merging or pruning): the members of row ``k`` are the input tokens whose
    ``source`` is ``k``. ``member_choice``:

    * ``"reference"`` (PPE's ``select_pos_topk``): members in raster order, the last one first, then the previous
      ones; a row with fewer than ``P`` members cycles through them again (the reference sorts with an unstable
      sort, so its order among members is arbitrary; here it is by index);
    * ``"nearest"``: the representative, then the members nearest to it in feature space; padded by repeating the
      representative's position;
    * ``"spread"``: ``P`` members evenly spaced in raster order (the centres of ``P`` equal rank bins); a row with
      fewer members lists them all in raster order, then repeats the representative's position.

    Slot ``i`` drives the ``i``-th slice of each rotary band (``vidcompress.models.ppe_rotary``).
    """
    if isinstance(max_members, bool) or not isinstance(max_members, int) or max_members < 1:
        raise ValueError(f"max_members must be a positive integer, got {max_members!r}")
    if member_choice not in MEMBER_CHOICES:
        raise ValueError(f"member_choice must be one of {MEMBER_CHOICES}, got {member_choice!r}")
    if out.source.shape[0] != tokens.num_tokens:
        raise ValueError(f"out.source covers {out.source.shape[0]} tokens, the input has {tokens.num_tokens}")
    ordered = _member_order(tokens, out, member_choice)
    member = out.source >= 0
    sizes = torch.zeros(out.num_tokens, dtype=torch.long, device=member.device)
    sizes.index_add_(0, out.source.clamp(min=0), member.long())
    first = torch.cumsum(sizes, 0) - sizes
    rank = _slot_ranks(sizes, max_members, member_choice)
    picked = ordered[first[:, None] + rank.clamp(min=0)]
    picked = torch.where(rank >= 0, picked, out.representatives[:, None])
    return dataclasses.replace(out, position_sets=tokens.flat_positions[picked])


def frame_budgets(num_frames: int, count: int) -> list[int]:
    """``count`` clusters split over frames as evenly as possible (extra clusters on evenly spaced frames)."""
    return [((frame + 1) * count) // num_frames - (frame * count) // num_frames for frame in range(num_frames)]


@register_compressor(
    "ppe",
    stages=("token", "positions"),
    paper="PPE: Positional Preservation Embedding for Token Compression in MLLMs (ICLR 2026, arXiv 2510.22936)",
    reference="MouxiaoHuang/PPE",
)
class PPE(Compressor):
    """Chat-UniVi DPC-kNN merging per frame whose merged tokens keep up to ``max_members`` member positions.

    Paper: "PPE: Positional Preservation Embedding for Token Compression in MLLMs", ICLR 2026, arXiv 2510.22936;
    reference ``MouxiaoHuang/PPE`` (``src/models/chatunivi.py``). Per frame (temporal group on Qwen2.5-VL): DPC-kNN
    (``methods.md`` §0.5) with ``k`` neighbours (the reference lowers ``k`` to ``min(3, max(C // 2, 1))`` when
    ``k > C`` clusters), merged token = uniform cluster mean, representative = cluster centre; ``position_sets``
    from :func:`attach_position_sets`. On Qwen2.5-VL the adapter hands the sets to the LLM through
    :func:`vidcompress.models.ppe_rotary.ppe_rotary`; LLaVA-OneVision (1-D RoPE) rejects them with a ``ValueError``:
    the paper and its code define PPE for M-RoPE only (the 1-D split in ``methods.md`` §13 is our unvalidated
    reconstruction, not offered).

    As a modifier (``"flashvid+ppe"``, ``"holitom+ppe"``: the ``positions`` stage) PPE leaves the token stage to the
    other method and only attaches ``position_sets`` to its output (:meth:`modify_positions`); the members of a row
    are the input tokens whose ``source`` is that row, so a pruning method's kept tokens get single-member sets.

    Counting: the paper keeps ``ceil(n · 0.45)`` clusters per frame ("55 % reduction"); ``exact=False`` keeps
    ``ceil(n · retention)`` per frame, the default splits ``target_count`` evenly over the frames (counts differ by
    at most one). Differences from the reference: the density noise (scale 1e-6, unseeded) is replaced by an
    index tie-break; the cascade inside the LLM (``ppe_cascade.json``) is not part of this token-stage method.
    """

    def __init__(
        self,
        retention: float = 1.0,
        *,
        exact: bool = True,
        k: int = 5,
        max_members: int = 8,
        member_choice: str = "reference",
    ) -> None:
        super().__init__(retention, exact=exact)
        for name, value in (("k", k), ("max_members", max_members)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if member_choice not in MEMBER_CHOICES:
            raise ValueError(f"member_choice must be one of {MEMBER_CHOICES}, got {member_choice!r}")
        self.k = k
        self.max_members = max_members
        self.member_choice = member_choice

    def compress(self, tokens: VideoTokens, count: int) -> CompressedTokens:
        frames, height, width = tokens.grid
        n = height * width
        if self.exact:
            clusters = frame_budgets(frames, count)
        else:
            clusters = [max(math.ceil(n * self.retention), 1)] * frames
        neighbours = [self.k if self.k <= c else min(max(c // 2, 1), 3) for c in clusters]
        _, centre = dpc_knn(tokens.features, clusters, neighbours)
        frame_offset = torch.arange(frames, device=centre.device)[:, None] * n
        rep_of = torch.where(centre >= 0, centre + frame_offset, centre).reshape(-1)
        # every frame has exactly its cluster count of centres, each its own representative
        grouping = group_by_representative(rep_of, num_groups=sum(clusters))
        merged = merge_tokens(tokens, grouping.group, grouping.representative)
        return self.modify_positions(tokens, merged)

    def modify_positions(self, tokens: VideoTokens, out: CompressedTokens) -> CompressedTokens:
        """``out`` (any method's output for ``tokens``) with ``max_members`` member positions per row attached."""
        return attach_position_sets(tokens, out, self.max_members, self.member_choice)

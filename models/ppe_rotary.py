"""PPE on the LLM side (Qwen2.5-VL): merged video tokens rotated by several member positions at once.

A merged token carries ``P`` member positions (``CompressedTokens.position_sets`` ``[K, P, 3]``). In 3-D M-RoPE the
``d/2`` frequency pairs of a head are split into three bands (``mrope_section``, ``[16, 24, 24]`` on the 7B): the T
band is rotated by ``t``, the H band by ``h``, the W band by ``w``. PPE cuts every band into ``P`` contiguous slices
and rotates slice ``i`` by member ``i``'s coordinate (pair ``j`` of a band of ``S`` pairs uses member
``floor(j · P / S)``: contiguous slices of ``S / P`` pairs when ``P`` divides ``S``, as in the reference's
``[S / P] * P`` sub-sections; evenly spaced members when ``S < P``, where the reference falls back to one pair per
sub-section).

No transformers code is copied or patched: :func:`ppe_rotary` registers a forward hook on the text model's rotary
module (``model.model.language_model.rotary_emb``), whose output is the ``(cos, sin)`` pair ``[B, L, d]`` that
every decoder layer receives. During the prefill (sequence length > 1) the hook evaluates the module's own
``forward`` once per member slot, on the stock ``position_ids`` with the video tokens' columns replaced by that
slot's member positions, and takes each frequency pair from the slot that drives it; rows of other tokens are left
as they were. When every member of a token equals its stock position the result equals the stock ``cos`` / ``sin``
bit for bit.

Decode steps stay untouched: ``generate`` feeds one new token per step (sequence length 1), and the hook returns
``None`` for such calls, so the stock output is used. The video tokens' keys were rotated with the PPE ``cos`` /
``sin`` during the prefill and live rotated in the KV cache, so later steps attend to them as PPE placed them;
the positions of new tokens continue from the uncompressed numbering, as without PPE.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from vidcompress.tokens import CompressedTokens

__all__ = ["PPERotaryHook", "member_of_pair", "ppe_rotary", "video_rows"]


def member_of_pair(mrope_section: Sequence[int], slots: int, device: torch.device | None = None) -> torch.Tensor:
    """``[sum(mrope_section)]`` long: the member slot driving each frequency pair (pair ``j`` of a band of ``S``
    pairs uses slot ``floor(j · slots / S)``)."""
    if slots < 1:
        raise ValueError(f"the number of member slots must be positive, got {slots}")
    return torch.cat([torch.arange(size, device=device) * slots // size for size in mrope_section])


def video_rows(
    input_ids: torch.Tensor, video_token_id: int, outputs: Sequence[CompressedTokens]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Sequence indices of the video placeholders of each batch row, and the rows' ``position_sets``.

    Args:
        input_ids: ``[B, L]`` spliced (left-padded) ids, one placeholder per output token.
        video_token_id: the placeholder id.
        outputs: the compressor output of each row, with ``position_sets``.
    """
    if input_ids.ndim != 2 or input_ids.shape[0] != len(outputs):
        raise ValueError(f"input_ids must be [{len(outputs)}, L], got shape {tuple(input_ids.shape)}")
    indices, sets = [], []
    for row, out in zip(input_ids, outputs):
        if out.position_sets is None:
            raise ValueError("a compressed output has no position_sets (use a PPE method or attach_position_sets)")
        where = torch.nonzero(row == video_token_id).squeeze(1)
        if where.numel() != out.num_tokens:
            raise ValueError(f"a row holds {where.numel()} video placeholders for {out.num_tokens} output tokens")
        indices.append(where)
        sets.append(out.position_sets)
    return indices, sets


class PPERotaryHook:
    """Forward hook on a Qwen2.5-VL text rotary module that gives video tokens PPE ``cos`` / ``sin`` in the prefill.

    Args:
        video_indices: per batch row, ``[V_b]`` long sequence indices of the video tokens (in the padded sequence).
        position_sets: per batch row, ``[V_b, P, 3]`` long ``(t, h, w)`` member positions; ``P`` equal in all rows.

    ``prefill_calls`` counts the calls the hook rewrote (one per prefill forward).
    """

    def __init__(self, video_indices: Sequence[torch.Tensor], position_sets: Sequence[torch.Tensor]) -> None:
        if len(video_indices) != len(position_sets) or not video_indices:
            raise ValueError(f"{len(video_indices)} index rows but {len(position_sets)} position-set rows")
        slots = {int(sets.shape[1]) for sets in position_sets if sets.ndim == 3}
        for indices, sets in zip(video_indices, position_sets):
            if indices.ndim != 1 or sets.ndim != 3 or sets.shape[0] != indices.shape[0] or sets.shape[2] != 3:
                raise ValueError(
                    f"each row needs indices [V] and position sets [V, P, 3], got {tuple(indices.shape)} and "
                    f"{tuple(sets.shape)}"
                )
        if len(slots) != 1:
            raise ValueError(f"every row must carry the same number of members P, got {sorted(slots)}")
        self.video_indices = [indices.long() for indices in video_indices]
        self.position_sets = [sets.long() for sets in position_sets]
        self.slots = slots.pop()
        self.prefill_calls = 0

    def member_position_ids(self, position_ids: torch.Tensor, slot: int) -> torch.Tensor:
        """``position_ids`` ``[3, B, L]`` with each row's video columns set to member ``slot``'s positions."""
        member = position_ids.clone()
        for row, (indices, sets) in enumerate(zip(self.video_indices, self.position_sets)):
            member[:, row, indices.to(member.device)] = sets[:, slot, :].T.to(member.device)
        return member

    def __call__(
        self, module: torch.nn.Module, args: tuple, kwargs: dict, output: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        hidden = args[0] if args else kwargs["x"]
        position_ids = args[1] if len(args) > 1 else kwargs["position_ids"]
        cos, sin = output
        batch, length = cos.shape[:2]
        if length == 1:
            return None
        if batch != len(self.video_indices):
            raise ValueError(f"the PPE hook holds {len(self.video_indices)} rows, the prefill has {batch}")
        if any(int(indices.max()) >= length for indices in self.video_indices if indices.numel()):
            raise ValueError(f"a video index lies beyond the prefill length {length}")
        position_ids = position_ids.expand(3, -1, -1)
        members = [module.forward(hidden, self.member_position_ids(position_ids, slot)) for slot in range(self.slots)]
        pairs = member_of_pair(module.mrope_section, self.slots, cos.device)
        column = torch.cat([pairs, pairs]).view(1, 1, 1, -1).expand(1, batch, length, -1)
        is_video = torch.zeros(batch, length, 1, dtype=torch.bool, device=cos.device)
        for row, indices in enumerate(self.video_indices):
            is_video[row, indices.to(cos.device)] = True
        rewritten = []
        for stock, per_slot in ((cos, [m[0] for m in members]), (sin, [m[1] for m in members])):
            composed = torch.stack(per_slot).gather(0, column).squeeze(0)
            rewritten.append(torch.where(is_video, composed, stock))
        self.prefill_calls += 1
        return rewritten[0], rewritten[1]


@contextmanager
def ppe_rotary(
    model: torch.nn.Module, video_indices: Sequence[torch.Tensor], position_sets: Sequence[torch.Tensor]
) -> Iterator[PPERotaryHook]:
    """Within the block, prefill forwards of the Qwen2.5-VL ``model`` rotate video tokens by their member positions.

    Args:
        model: a ``Qwen2_5_VLForConditionalGeneration``.
        video_indices, position_sets: see :class:`PPERotaryHook` (:func:`video_rows` builds them from spliced
            inputs and compressor outputs).

    >>> with ppe_rotary(model, *video_rows(inputs.input_ids, video_token_id, outputs)):  # doctest: +SKIP
    ...     model.generate(**inputs.as_kwargs(), max_new_tokens=8)
    """
    rotary = model.model.language_model.rotary_emb
    if not hasattr(rotary, "mrope_section"):
        raise ValueError(f"{type(rotary).__name__} has no mrope_section: PPE needs Qwen2.5-VL's 3-D M-RoPE")
    hook = PPERotaryHook(video_indices, position_sets)
    handle = rotary.register_forward_hook(hook, with_kwargs=True)
    try:
        yield hook
    finally:
        handle.remove()

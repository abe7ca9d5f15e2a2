"""VisPruner's diversity partition (FlashVLM's background half), every frame in one launch.

Given per frame a list ``residual`` of token indices, each round splits it into even and odd positions, scores
every even token by its largest cosine to an odd token, drops the ``min(step, len - keep)`` most redundant even
tokens (stable: ties drop the earlier position first) and continues with the surviving even tokens in descending
redundancy order (stable) followed by the odd tokens in their order, until ``keep`` tokens remain.

The PyTorch path (``partition_reference``) runs the rounds on the host, batched over frames; the Triton path runs
all rounds of a frame in one program, reading cosines from the per-frame matrix ``S`` ``[T, N, N]`` and keeping the
residual list in two small ping-pong buffers, so a whole partition is one launch instead of ~6 per round.
"""

from __future__ import annotations

import torch

from ._dispatch import resolve_use_triton

__all__ = ["diversity_partition", "partition_reference"]


def partition_reference(similarity: torch.Tensor, residual: torch.Tensor, keep: int, step: int) -> torch.Tensor:
    """PyTorch path: ``[B, keep]`` surviving token indices from ``residual`` ``[B, R]`` and ``similarity``
    ``[B, N, N]`` float32 (the cosine of the tokens of each row's frame)."""
    rows = torch.arange(similarity.shape[0], device=similarity.device)[:, None, None]
    while (drop := min(step, residual.shape[1] - keep)) > 0:
        even, odd = residual[:, ::2], residual[:, 1::2]
        redundancy = similarity[rows, even[:, :, None], odd[:, None, :]].amax(dim=-1)
        order = torch.sort(redundancy, dim=1, descending=True, stable=True).indices[:, drop:]
        residual = torch.cat([even.gather(1, order), odd], dim=1)
    return residual


def diversity_partition(
    similarity: torch.Tensor, residual: torch.Tensor, keep: int, step: int, *, use_triton: bool | None = None
) -> torch.Tensor:
    """Partition each row of ``residual`` ``[B, R]`` (token indices into its frame) down to ``keep`` tokens.

    Args:
        similarity: ``[B, N, N]`` float32 cosine matrix of each row's frame.
        residual: ``[B, R]`` int64 candidate token indices in their current order.
        keep: tokens left per row, ``0 <= keep <= R``.
        step: most even tokens dropped per round, ``>= 1``.
        use_triton: ``None`` chooses (Triton on CUDA), ``True`` / ``False`` force.

    Returns:
        ``[B, keep]`` int64 token indices in partition order.
    """
    if similarity.ndim != 3 or similarity.shape[1] != similarity.shape[2] or similarity.dtype != torch.float32:
        raise ValueError(
            f"similarity must be a float32 [B, N, N] tensor, got {similarity.dtype} {tuple(similarity.shape)}"
        )
    if residual.ndim != 2 or residual.shape[0] != similarity.shape[0] or residual.dtype != torch.long:
        raise ValueError(f"residual must be an int64 [B={similarity.shape[0]}, R] tensor, got {tuple(residual.shape)}")
    if isinstance(keep, bool) or not isinstance(keep, int) or not 0 <= keep <= residual.shape[1]:
        raise ValueError(f"keep must be an int in [0, R={residual.shape[1]}], got {keep!r}")
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ValueError(f"step must be a positive int, got {step!r}")
    if keep == 0:
        return residual[:, :0]
    if not resolve_use_triton(similarity, use_triton):
        return partition_reference(similarity, residual, keep, step)
    from ._triton.partition import launch_partition

    return launch_partition(similarity.contiguous(), residual.contiguous(), keep, step)

"""DPC-kNN density and centre score from a batch of distance matrices, every row of every batch entry at once.

Given distances ``d`` ``[B, n, n]``, a validity mask ``[B, n]`` and ``k`` neighbours per batch entry
(``methods.md`` §0.5; the caller :func:`vidcompress.ops.dpc_knn.density_peaks` computes ``d``):

* density ``rho_i = exp(-mean of the k_i smallest d_ij^2)`` over valid ``j`` (the token itself included), with
  ``k_i = min(k, valid tokens)``; ``0`` for invalid tokens;
* ``delta_i = min d_ij`` over valid ``j`` denser than ``i`` (higher density, or equal density and a lower index);
  the densest token takes the entry's largest valid distance;
* score ``rho_i * delta_i``, ``-inf`` for invalid tokens.

The PyTorch path is a ``topk`` and a dozen ``[B, n, n]`` element-wise passes; the Triton path is two launches of
one program per (block of rows, batch entry): the first extracts the ``k`` smallest distances of each row from
registers (``k`` arg-min passes over the row; at most :data:`MAX_K`) and the row's largest distance, the second the
denser-neighbour minimum. Both paths sum the ``k`` squares in ascending order; they agree to float32 rounding.
"""

from __future__ import annotations

import torch

from ._dispatch import resolve_use_triton

__all__ = ["MAX_K", "MAX_TOKENS", "density_scores", "density_scores_reference"]

#: Largest ``k`` the Triton path extracts from registers (larger ``k`` takes the PyTorch path).
MAX_K = 64
#: Largest row length the Triton path holds in one program.
MAX_TOKENS = 8192


def density_scores_reference(
    distances: torch.Tensor, k: torch.Tensor, k_max: int, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch path of :func:`density_scores`."""
    rows, n, _ = distances.shape
    device = distances.device
    pair_valid = valid[:, :, None] & valid[:, None, :]
    knn_dist = distances.masked_fill(~pair_valid, float("inf"))
    k_max = min(k_max, n)
    nearest = torch.topk(knn_dist, k_max, dim=-1, largest=False).values  # [B, n, k_max], ascending
    k_row = torch.minimum(k, valid.sum(-1).clamp(min=1))
    use = (torch.arange(k_max, device=device)[None, None, :] < k_row[:, None, None]) & torch.isfinite(nearest)
    mean_sq = torch.where(use, nearest.square(), torch.zeros_like(nearest)).sum(-1) / use.sum(-1).clamp(min=1)
    density = torch.where(valid, torch.exp(-mean_sq), torch.zeros_like(mean_sq))
    index = torch.arange(n, device=device)
    denser = (density[:, None, :] > density[:, :, None]) | (
        (density[:, None, :] == density[:, :, None]) & (index[None, None, :] < index[None, :, None])
    )
    denser &= pair_valid
    row_max = distances.masked_fill(~pair_valid, 0.0).flatten(1).max(-1).values  # [B]
    delta = distances.masked_fill(~denser, float("inf")).min(-1).values
    delta = torch.where(torch.isinf(delta), row_max[:, None].expand_as(delta), delta)
    score = torch.where(valid, density * delta, torch.full_like(delta, float("-inf")))
    return density, score


def density_scores(
    distances: torch.Tensor,
    k: torch.Tensor,
    k_max: int,
    valid: torch.Tensor,
    *,
    use_triton: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(density, score)``, both ``[B, n]`` float32, of the distance matrices ``distances`` ``[B, n, n]`` (float32).

    Args:
        distances: symmetric non-negative distances.
        k: ``[B]`` int64 neighbours per batch entry (at least 1; clipped to the entry's valid tokens).
        k_max: a host upper bound of ``k`` (``k`` is not read back).
        valid: ``[B, n]`` bool tokens that take part.
        use_triton: ``None`` chooses (Triton on CUDA when ``k_max <= MAX_K`` and ``n <= MAX_TOKENS``), ``True`` /
            ``False`` force.
    """
    rows, n, _ = distances.shape
    fits = min(k_max, n) <= MAX_K and 0 < n <= MAX_TOKENS and rows > 0
    if not fits or not resolve_use_triton(distances, use_triton):
        return density_scores_reference(distances, k, k_max, valid)
    from ._triton.density_peaks import launch_density_scores

    return launch_density_scores(
        distances.float().contiguous(), k.to(torch.long).contiguous(), min(k_max, n), valid.contiguous()
    )

"""Entropic optimal transport: a batched Sinkhorn solver in torch.

The plan between a source distribution ``mu`` (rows) and a target distribution ``nu`` (columns) under a cost ``C``
is ``P = diag(r) · K · diag(c)`` with the Gibbs kernel ``K = exp(-C / epsilon)``; Sinkhorn alternates
``r = mu / (K c)`` and ``c = nu / (Kᵀ r)`` until ``r`` settles. After the last update the column sums equal ``nu``
exactly and the row sums approach ``mu``.
"""

from __future__ import annotations

import torch

from vidcompress.kernels.sinkhorn import sinkhorn_scalings

__all__ = ["gibbs_kernel", "sinkhorn"]


def gibbs_kernel(cost: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``exp(-cost / epsilon)`` in float32; ``epsilon`` must be positive."""
    if not epsilon > 0:
        raise ValueError(f"the entropic regularisation epsilon must be positive, got {epsilon!r}")
    return torch.exp(-cost.float() / epsilon)


def sinkhorn(
    kernel: torch.Tensor,
    row_marginal: torch.Tensor,
    col_marginal: torch.Tensor,
    max_iter: int = 100,
    tol: float = 1e-2,
    joint_stop: bool = True,
) -> torch.Tensor:
    """Transport plans of a batch of entropic OT problems.

    Args:
        kernel: ``[B, m, n]`` Gibbs kernel ``exp(-C / epsilon)``, positive.
        row_marginal: ``[B, m]`` source masses (each row sums to the same total as ``col_marginal``).
        col_marginal: ``[B, n]`` target masses.
        max_iter: at most this many (r, c) updates.
        tol: stop once the mean absolute change of the row scalings ``r`` in one update is below ``tol``
            (``tol=0`` runs all ``max_iter`` updates). Decided on the device, with no host sync
            (:func:`vidcompress.kernels.sinkhorn.sinkhorn_scalings`, a Triton kernel on CUDA).
        joint_stop: the change is averaged over the whole batch and all problems stop together (AOT's intra-frame
            call, which batches every frame); ``False`` stops each problem on its own change, as separate calls
            would (AOT's inter-frame calls).

    Returns:
        ``[B, m, n]`` float32 plans ``r[:, :, None] * K * c[:, None, :]``.
    """
    if kernel.ndim != 3:
        raise ValueError(f"kernel must be [B, m, n], got shape {tuple(kernel.shape)}")
    batch, rows, cols = kernel.shape
    if tuple(row_marginal.shape) != (batch, rows) or tuple(col_marginal.shape) != (batch, cols):
        raise ValueError(
            f"marginals must be [{batch}, {rows}] and [{batch}, {cols}], "
            f"got {tuple(row_marginal.shape)} and {tuple(col_marginal.shape)}"
        )
    if max_iter < 1:
        raise ValueError(f"max_iter must be at least 1, got {max_iter}")
    r, c = sinkhorn_scalings(kernel.float(), row_marginal.float(), col_marginal.float(), max_iter, tol, joint_stop)
    return r.unsqueeze(-1) * kernel.float() * c.unsqueeze(-2)

"""Entropic optimal transport: a batched Sinkhorn solver in torch.

The plan between a source distribution ``mu`` (rows) and a target distribution ``nu`` (columns) under a cost ``C``
is ``P = diag(r) · K · diag(c)`` with the Gibbs kernel ``K = exp(-C / epsilon)``; Sinkhorn alternates
``r = mu / (K c)`` and ``c = nu / (Kᵀ r)`` until ``r`` settles. After the last update the column sums equal ``nu``
exactly and the row sums approach ``mu``.
"""

from __future__ import annotations

import torch

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
            (``tol=0`` runs all ``max_iter`` updates). The loop always runs ``max_iter`` times, on the device, with
            no host sync; a stopped problem keeps the scalings of its last update.
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
    kernel = kernel.float()
    mu, nu = row_marginal.float(), col_marginal.float()
    r, c = torch.ones_like(mu), torch.ones_like(nu)
    running = torch.ones(() if joint_stop else (batch, 1), dtype=torch.bool, device=kernel.device)
    transposed = kernel.transpose(1, 2)
    for _ in range(max_iter):  # a fixed count: a stopped problem keeps its scalings, nothing is read back
        r_new = mu / torch.bmm(kernel, c.unsqueeze(-1)).squeeze(-1)
        c_new = nu / torch.bmm(transposed, r_new.unsqueeze(-1)).squeeze(-1)
        change = (r_new - r).abs()
        r = torch.where(running, r_new, r)
        c = torch.where(running, c_new, c)
        if joint_stop:
            running = running & ~(change.mean() < tol)
        else:
            running = running & (change.mean(dim=1, keepdim=True) >= tol)
    return r.unsqueeze(-1) * kernel * c.unsqueeze(-2)

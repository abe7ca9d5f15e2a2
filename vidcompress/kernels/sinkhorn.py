"""Sinkhorn scalings of a batch of entropic OT problems, every iteration on the device, no host sync.

``P = diag(r) · K · diag(c)``: the updates ``r = mu / (K c)``, ``c = nu / (Kᵀ r)`` run ``max_iter`` times at most;
a problem stops once the mean absolute change of ``r`` in an update is below ``tol``, jointly for the batch or each
on its own, keeping the scalings of that update. The stopping iteration is decided on the device.

The Triton path keeps each problem's kernel in registers (one program per problem, up to ``MAX_ELEMENTS``
entries): a first launch runs every update and records the changes, the stopping iteration of every problem is
found from them, and a second launch runs that many updates. The PyTorch path runs the updates batched, with a
device-side "still running" mask.
"""

from __future__ import annotations

import torch

from ._dispatch import resolve_use_triton

__all__ = ["MAX_ELEMENTS", "sinkhorn_scalings", "sinkhorn_reference"]

#: Largest padded ``m x n`` kernel a Triton program holds (256 x 256).
MAX_ELEMENTS = 1 << 16


def sinkhorn_reference(
    kernel: torch.Tensor, mu: torch.Tensor, nu: torch.Tensor, max_iter: int, tol: float, joint_stop: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch path of :func:`sinkhorn_scalings`."""
    r, c = torch.ones_like(mu), torch.ones_like(nu)
    running = torch.ones(() if joint_stop else (kernel.shape[0], 1), dtype=torch.bool, device=kernel.device)
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
    return r, c


def _stopping_updates(change: torch.Tensor, rows: int, tol: float, joint_stop: bool) -> torch.Tensor:
    """``[B]`` number of updates each problem runs, from the recorded ``[max_iter, B]`` change sums."""
    max_iter, batch = change.shape
    if joint_stop:
        stop = (change.sum(1, keepdim=True) / (batch * rows) < tol).expand(max_iter, batch)
    else:
        stop = ~(change / rows >= tol)  # NaN stops a problem, as in the PyTorch path
    return torch.where(stop.any(0), stop.long().argmax(0) + 1, max_iter)


def sinkhorn_scalings(
    kernel: torch.Tensor,
    mu: torch.Tensor,
    nu: torch.Tensor,
    max_iter: int,
    tol: float,
    joint_stop: bool,
    *,
    use_triton: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scalings ``(r [B, m], c [B, n])`` of the float32 Gibbs kernels ``[B, m, n]`` and marginals ``mu``, ``nu``.

    ``use_triton``: ``None`` chooses (Triton on CUDA, when a kernel fits in ``MAX_ELEMENTS``), ``True`` / ``False``
    force.
    """
    batch, rows, cols = kernel.shape
    fits = _padded(rows) * _padded(cols) <= MAX_ELEMENTS
    if not fits or not resolve_use_triton(kernel, use_triton):
        return sinkhorn_reference(kernel, mu, nu, max_iter, tol, joint_stop)
    from ._triton.sinkhorn import launch_sinkhorn

    kernel, mu, nu = kernel.contiguous(), mu.contiguous(), nu.contiguous()
    change = torch.empty(max_iter, batch, dtype=torch.float32, device=kernel.device)
    every = torch.full((batch,), max_iter, dtype=torch.long, device=kernel.device)
    launch_sinkhorn(kernel, mu, nu, every, change)
    return launch_sinkhorn(kernel, mu, nu, _stopping_updates(change, rows, tol, joint_stop), None)


def _padded(size: int) -> int:
    return 1 << max(0, size - 1).bit_length()

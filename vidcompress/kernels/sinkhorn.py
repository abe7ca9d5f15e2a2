"""Sinkhorn scalings of a batch of entropic OT problems, every iteration on the device, no host sync.

``P = diag(r) · K · diag(c)``: the updates ``r = mu / (K c)``, ``c = nu / (Kᵀ r)`` run ``max_iter`` times at most;
a problem stops once the mean absolute change of ``r`` in an update is below ``tol``, jointly for the batch or each
on its own, keeping the scalings of that update. The stopping iteration is decided on the device.

The Triton path keeps each problem's kernel in registers (one program per problem, up to ``MAX_ELEMENTS``
entries), one launch per call: with separate stopping each program stops itself; with joint stopping each program
records its change and its scalings after every update (``HISTORY_BYTES`` at most) and stops soon after the batch
could (the programs read each other's record), and the scalings of the joint stopping update are gathered from
that history. A history above ``HISTORY_BYTES`` takes two launches instead: one records the changes, the second
runs the stopping number of updates. The PyTorch path runs the updates batched, with a device-side "still running"
mask.
"""

from __future__ import annotations

import torch

from ._dispatch import resolve_use_triton

__all__ = ["HISTORY_BYTES", "MAX_ELEMENTS", "sinkhorn_reference", "sinkhorn_scalings"]

#: Largest padded ``m x n`` kernel a Triton program holds (256 x 256).
MAX_ELEMENTS = 1 << 16
#: Largest history of scalings (``max_iter x B x (m + n)`` float32) a joint-stopping Triton call keeps (AOT's
#: intra-frame call at LLaVA-OV size, 100 x 32 x 196: 2.5 MB).
HISTORY_BYTES = 64 << 20


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


def _joint_updates(change: torch.Tensor, rows: int, tol: float) -> torch.Tensor:
    """0-dim number of updates the batch runs, from the recorded ``[max_iter, B]`` change sums (complete up to the
    first update that stops the batch)."""
    max_iter, batch = change.shape
    stop = change.sum(1) / (batch * rows) < tol
    return torch.where(stop.any(), stop.long().argmax() + 1, max_iter)


def sinkhorn_scalings(
    kernel: torch.Tensor,
    mu: torch.Tensor,
    nu: torch.Tensor,
    max_iter: int,
    tol: float,
    joint_stop: bool,
    *,
    use_triton: bool | None = None,
    num_warps: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scalings ``(r [B, m], c [B, n])`` of the float32 Gibbs kernels ``[B, m, n]`` and marginals ``mu``, ``nu``.

    ``use_triton``: ``None`` chooses (Triton on CUDA, when a non-empty kernel fits in ``MAX_ELEMENTS``), ``True`` /
    ``False`` force. ``num_warps``: Triton launch parameter overriding the default (for tuning sweeps).
    """
    batch, rows, cols = kernel.shape
    fits = 0 < kernel.numel() and _padded(rows) * _padded(cols) <= MAX_ELEMENTS  # empty: the PyTorch path
    if not fits or not resolve_use_triton(kernel, use_triton):
        return sinkhorn_reference(kernel, mu, nu, max_iter, tol, joint_stop)
    from ._triton.sinkhorn import launch_sinkhorn

    kernel, mu, nu = kernel.contiguous(), mu.contiguous(), nu.contiguous()
    if not joint_stop:
        return launch_sinkhorn(kernel, mu, nu, max_iter, own_tol=tol, num_warps=num_warps)
    change = torch.empty(max_iter, batch, dtype=torch.float32, device=kernel.device)
    if max_iter * batch * (rows + cols) * 4 > HISTORY_BYTES:
        launch_sinkhorn(kernel, mu, nu, max_iter, joint_tol=tol, change=change, num_warps=num_warps)
        updates = _joint_updates(change, rows, tol)
        return launch_sinkhorn(kernel, mu, nu, updates.expand(batch), num_warps=num_warps)
    history = torch.empty(max_iter, batch, rows + cols, dtype=torch.float32, device=kernel.device)
    launch_sinkhorn(kernel, mu, nu, max_iter, joint_tol=tol, change=change, history=history, num_warps=num_warps)
    scalings = history.index_select(0, _joint_updates(change, rows, tol).view(1) - 1).squeeze(0)
    return scalings[:, :rows], scalings[:, rows:]


def _padded(size: int) -> int:
    return 1 << max(0, size - 1).bit_length()

"""Sinkhorn scalings: one program per problem keeps its Gibbs kernel in registers and runs every iteration.

The kernel is read from a copy whose rows are zero-padded to ``BLOCK_N`` columns: aligned rows let Triton load four
columns per thread, a layout whose row sums need a quarter of the warp shuffles of the one-column-per-thread layout
that unaligned rows get (AOT's 154 x 42 kernels at 8 warps: 460 instead of 1110 PTX instructions per update, 4 times
fewer shuffles).

Joint stopping: the programs of a batch cannot wait for each other (they need not all be resident), but each one
publishes its change of every update in the ``change`` record (which starts at ``-1``, "not yet published") and
reads the record of the oldest update it has not decided yet, at most once per update: once every program has
published that update and the batch's mean change is below ``tol`` with a margin, the program stops. The stopping
update itself is decided afterwards, in torch, from the record: the margin makes it no later than any update a
program stopped at, so every program has recorded (and kept in ``history``) every update up to it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

__all__ = ["MAX_POLLED", "default_num_warps", "launch_sinkhorn"]

#: Largest batch whose programs stop jointly (a larger one records every update).
MAX_POLLED = 1024


@triton.jit
def _sinkhorn_kernel(
    kernel_ptr,
    mu_ptr,
    nu_ptr,
    r_ptr,
    c_ptr,
    updates_ptr,
    change_ptr,
    history_ptr,
    batch,
    rows,
    cols,
    max_updates,
    updates_stride,
    tol,
    inv_rows,
    joint_tol,
    inv_batch_rows,
    UPDATES_ON_DEVICE: tl.constexpr,
    OWN_STOP: tl.constexpr,
    JOINT_STOP: tl.constexpr,
    RECORD: tl.constexpr,
    HISTORY: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_B: tl.constexpr,
):
    problem = tl.program_id(0).to(tl.int64)
    i = tl.arange(0, BLOCK_M)
    j = tl.arange(0, BLOCK_N)
    others = tl.arange(0, BLOCK_B)
    row_live = i < rows
    col_live = j < cols
    gibbs = tl.load(kernel_ptr + (problem * rows + i[:, None]) * BLOCK_N + j[None, :], mask=row_live[:, None])
    mu = tl.load(mu_ptr + problem * rows + i, mask=row_live, other=0.0)
    nu = tl.load(nu_ptr + problem * cols + j, mask=col_live, other=0.0)
    r = tl.where(row_live, 1.0, 0.0)
    c = tl.where(col_live, 1.0, 0.0)
    if UPDATES_ON_DEVICE:
        limit = tl.load(updates_ptr + problem * updates_stride).to(tl.int32)
    else:
        limit = max_updates
    step = tl.full((), 0, tl.int32)
    undecided = tl.full((), 0, tl.int32)  # JOINT_STOP: the oldest update whose joint change this program has not seen
    running = step < limit
    while running:
        if JOINT_STOP:  # loaded before the update, used after it
            published = tl.load(
                change_ptr + undecided * batch + others, mask=others < batch, other=0.0, volatile=True
            )
        r_new = mu / tl.where(row_live, tl.sum(gibbs * c[None, :], axis=1), 1.0)  # padded lanes: 0 / 1
        c = nu / tl.where(col_live, tl.sum(gibbs * r_new[:, None], axis=0), 1.0)
        running = step + 1 < limit
        if OWN_STOP or RECORD:
            change = tl.sum(tl.abs(r_new - r), axis=0)
            if RECORD:
                tl.store(change_ptr + step * batch + problem, change)
            if OWN_STOP:
                # the mean as torch's CUDA division by a scalar computes it (times the float32 reciprocal); NaN stops
                running = running & (change * inv_rows >= tol)
        if HISTORY:
            slot = history_ptr + (step * batch + problem) * (rows + cols)
            tl.store(slot + i, r_new, mask=row_live)
            tl.store(slot + rows + j, c, mask=col_live)
        if JOINT_STOP:
            complete = tl.sum((published == -1.0).to(tl.int32), axis=0) == 0
            running = running & ~(complete & (tl.sum(published, axis=0) * inv_batch_rows < joint_tol))
            undecided += complete.to(tl.int32)
        r = r_new
        step += 1
    tl.store(r_ptr + problem * rows + i, r, mask=row_live)
    tl.store(c_ptr + problem * cols + j, c, mask=col_live)


def default_num_warps(rows: int, cols: int) -> int:
    """Warps of a program holding an ``rows x cols`` kernel (padded to powers of two)."""
    elements = triton.next_power_of_2(rows) * triton.next_power_of_2(cols)
    return 4 if elements <= 8192 else 8 if elements <= 32768 else 16


def launch_sinkhorn(
    kernel: torch.Tensor,
    mu: torch.Tensor,
    nu: torch.Tensor,
    updates: int | torch.Tensor,
    *,
    own_tol: float | None = None,
    joint_tol: float | None = None,
    change: torch.Tensor | None = None,
    history: torch.Tensor | None = None,
    num_warps: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``updates`` updates of every problem (an int, or ``[B]`` int64 on the device: a count per problem, maybe
    an expanded 0-dim tensor) and return the scalings ``(r [B, m], c [B, n])`` after the last.

    ``own_tol``: a problem also stops after the update whose mean ``|r_new - r|`` is not ``>= own_tol`` (NaN
    stops). ``change`` ``[updates, B]`` receives the sum of ``|r_new - r|`` of every update, ``history``
    ``[updates, B, m + n]`` the scalings ``r, c`` after every update (both need an int ``updates``; entries of the
    updates a problem does not run are left as they are, ``-1`` in ``change`` with ``joint_tol``). ``joint_tol``
    (needs ``change``): the problems stop soon after an update whose mean change over the batch is below it (see
    the module docstring; not beyond ``MAX_POLLED`` problems), every update up to the first such one recorded.
    ``num_warps``: ``None`` is :func:`default_num_warps`. All inputs contiguous float32, ``B, m, n >= 1``; a kernel
    ``[B, m, n]`` whose ``n`` is not a power of two is read from a zero-padded copy (see the module docstring).
    """
    batch, rows, cols = kernel.shape
    block_n = triton.next_power_of_2(cols)
    r, c = torch.empty_like(mu), torch.empty_like(nu)
    on_device = isinstance(updates, torch.Tensor)
    joint = joint_tol is not None and batch <= MAX_POLLED
    if joint:
        change.fill_(-1.0)
    # the in-kernel test of the joint mean is only a hint for stopping early; torch's test of the record decides.
    # Summed in another order, the two means differ by a factor below 1 + 2 (B + 1) 2^-24: the margin is 8 times that
    margin = 1.0 - (batch + 1) * 2.0**-20
    _sinkhorn_kernel[(batch,)](
        F.pad(kernel, (0, block_n - cols)) if block_n > cols else kernel, mu, nu, r, c,
        updates if on_device else r,
        r if change is None else change,
        r if history is None else history,
        batch, rows, cols,
        0 if on_device else updates,
        updates.stride(0) if on_device else 0,
        0.0 if own_tol is None else own_tol,
        1.0 / rows,  # the float32 reciprocal once passed (the float64 quotient rounds to the correctly rounded one)
        joint_tol * margin if joint else 0.0,
        1.0 / (batch * rows),
        UPDATES_ON_DEVICE=on_device,
        OWN_STOP=own_tol is not None,
        JOINT_STOP=joint,
        RECORD=change is not None,
        HISTORY=history is not None,
        BLOCK_M=triton.next_power_of_2(rows),
        BLOCK_N=block_n,
        BLOCK_B=triton.next_power_of_2(batch) if joint else 1,
        num_warps=default_num_warps(rows, cols) if num_warps is None else num_warps,
    )
    return r, c

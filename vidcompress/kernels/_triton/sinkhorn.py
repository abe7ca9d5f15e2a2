"""Sinkhorn scalings: one program per problem keeps its Gibbs kernel in registers and runs every iteration."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["launch_sinkhorn"]


@triton.jit
def _sinkhorn_kernel(
    kernel_ptr,
    mu_ptr,
    nu_ptr,
    iterations_ptr,
    r_ptr,
    c_ptr,
    change_ptr,
    batch,
    rows,
    cols,
    RECORD: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    problem = tl.program_id(0).to(tl.int64)
    i = tl.arange(0, BLOCK_M)
    j = tl.arange(0, BLOCK_N)
    row_live = i < rows
    col_live = j < cols
    gibbs = tl.load(
        kernel_ptr + problem * rows * cols + i[:, None] * cols + j[None, :],
        mask=row_live[:, None] & col_live[None, :],
        other=0.0,
    )
    mu = tl.load(mu_ptr + problem * rows + i, mask=row_live, other=0.0)
    nu = tl.load(nu_ptr + problem * cols + j, mask=col_live, other=0.0)
    r = tl.where(row_live, 1.0, 0.0)
    c = tl.where(col_live, 1.0, 0.0)
    for step in range(tl.load(iterations_ptr + problem)):
        r_new = mu / tl.where(row_live, tl.sum(gibbs * c[None, :], axis=1), 1.0)  # padded lanes: 0 / 1
        c = nu / tl.where(col_live, tl.sum(gibbs * r_new[:, None], axis=0), 1.0)
        if RECORD:
            tl.store(change_ptr + step * batch + problem, tl.sum(tl.abs(r_new - r), axis=0))
        r = r_new
    tl.store(r_ptr + problem * rows + i, r, mask=row_live)
    tl.store(c_ptr + problem * cols + j, c, mask=col_live)


def launch_sinkhorn(
    kernel: torch.Tensor,
    mu: torch.Tensor,
    nu: torch.Tensor,
    iterations: torch.Tensor,
    change: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``iterations[b]`` updates of problem ``b``; ``change`` ``[max_iter, B]``, when given, receives the sum of
    ``|r_new - r|`` of every update. All inputs contiguous float32 (``iterations`` int64)."""
    batch, rows, cols = kernel.shape
    r, c = torch.empty_like(mu), torch.empty_like(nu)
    block_m, block_n = triton.next_power_of_2(rows), triton.next_power_of_2(cols)
    warps = 4 if block_m * block_n <= 8192 else 8 if block_m * block_n <= 32768 else 16
    _sinkhorn_kernel[(batch,)](
        kernel, mu, nu, iterations, r, c, r if change is None else change, batch, rows, cols,
        RECORD=change is not None, BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps,
    )
    return r, c

"""Adjacent-frame cosine similarity of a video ``[T, N, D]``: all frame pairs in one launch.

* ``aligned``: ``cos(x[t + lag, n], x[t, n])`` per position; one program per (block of positions, frame pair),
  dot product and both squared norms accumulated together in float32 over ``BLOCK_D`` slices.
* ``best match``: for each token of frame ``t + lag`` the most similar token of frame ``t``; one program per (block
  of tokens, frame pair) walks the candidate blocks, computes the cosine tile with ``tl.dot`` and keeps a running
  (max, first arg-max), so the ``N x N`` matrix is never stored.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._dispatch import interpreter_active

__all__ = ["launch_aligned_cosine", "launch_best_match"]


@triton.jit
def _aligned_cosine_kernel(
    x_ptr,
    out_ptr,
    num_tokens,
    dim,
    lag,
    threshold,
    eps,
    stride_t,
    stride_n,
    THRESHOLD: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pair = tl.program_id(1).to(tl.int64)
    tokens = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    token_mask = tokens < num_tokens
    previous = x_ptr + pair * stride_t + tokens[:, None].to(tl.int64) * stride_n
    current = previous + lag * stride_t
    dot = tl.zeros([BLOCK_N], dtype=tl.float32)
    norm_current = tl.zeros([BLOCK_N], dtype=tl.float32)
    norm_previous = tl.zeros([BLOCK_N], dtype=tl.float32)
    for start in range(0, dim, BLOCK_D):
        cols = start + tl.arange(0, BLOCK_D)
        mask = token_mask[:, None] & (cols < dim)[None, :]
        a = tl.load(current + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        b = tl.load(previous + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dot += tl.sum(a * b, axis=1)
        norm_current += tl.sum(a * a, axis=1)
        norm_previous += tl.sum(b * b, axis=1)
    cosine = dot / tl.maximum(tl.sqrt(norm_current) * tl.sqrt(norm_previous), eps)
    destination = out_ptr + pair * num_tokens + tokens
    if THRESHOLD:
        tl.store(destination, (cosine > threshold).to(tl.int8), mask=token_mask)
    else:
        tl.store(destination, cosine, mask=token_mask)


@triton.jit
def _best_match_kernel(
    x_ptr,
    allowed_ptr,
    index_ptr,
    value_ptr,
    num_tokens,
    dim,
    lag,
    eps,
    stride_t,
    stride_n,
    HAS_ALLOWED: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_I: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pair = tl.program_id(1).to(tl.int64)
    rows = tl.program_id(0) * BLOCK_I + tl.arange(0, BLOCK_I)
    row_mask = rows < num_tokens
    children = x_ptr + (pair + lag) * stride_t + rows[:, None].to(tl.int64) * stride_n
    best_value = tl.full([BLOCK_I], float("-inf"), dtype=tl.float32)
    best_index = tl.full([BLOCK_I], -1, dtype=tl.int64)
    for j_start in range(0, num_tokens, BLOCK_J):
        cands = j_start + tl.arange(0, BLOCK_J)
        cand_mask = cands < num_tokens
        # the candidates' tile is loaded already transposed ([BLOCK_D, BLOCK_J]), so the dot needs no tl.trans
        parents = x_ptr + pair * stride_t + cands[None, :].to(tl.int64) * stride_n
        dots = tl.zeros([BLOCK_I, BLOCK_J], dtype=tl.float32)
        norm_child = tl.zeros([BLOCK_I], dtype=tl.float32)
        norm_parent = tl.zeros([BLOCK_J], dtype=tl.float32)
        for start in range(0, dim, BLOCK_D):
            cols = start + tl.arange(0, BLOCK_D)
            col_in = cols < dim
            a = tl.load(children + cols[None, :], mask=row_mask[:, None] & col_in[None, :], other=0.0)
            b = tl.load(parents + cols[:, None], mask=col_in[:, None] & cand_mask[None, :], other=0.0)
            a32 = a.to(tl.float32)
            b32 = b.to(tl.float32)
            if UPCAST:
                dots = tl.dot(a32, b32, dots, input_precision=PRECISION)
            else:
                dots = tl.dot(a, b, dots, input_precision=PRECISION)
            norm_child += tl.sum(a32 * a32, axis=1)
            norm_parent += tl.sum(b32 * b32, axis=0)
        scale = tl.maximum(tl.sqrt(norm_child)[:, None] * tl.sqrt(norm_parent)[None, :], eps)
        cosine = dots / scale
        usable = cand_mask
        if HAS_ALLOWED:
            usable = usable & (tl.load(allowed_ptr + pair * num_tokens + cands, mask=cand_mask, other=0) != 0)
        cosine = tl.where(usable[None, :], cosine, float("-inf"))
        block_value, block_arg = tl.max(cosine, axis=1, return_indices=True, return_indices_tie_break_left=True)
        better = block_value > best_value
        best_value = tl.where(better, block_value, best_value)
        best_index = tl.where(better, (j_start + block_arg).to(tl.int64), best_index)
    destination = pair * num_tokens + rows
    tl.store(index_ptr + destination, best_index, mask=row_mask)
    tl.store(value_ptr + destination, best_value, mask=row_mask)


def launch_aligned_cosine(
    x: torch.Tensor,
    lag: int,
    eps: float,
    out: torch.Tensor,
    threshold: float | None = None,
    block_n: int = 16,
    block_d: int = 256,
    num_warps: int = 4,
) -> torch.Tensor:
    """``out`` ``[T - lag, N]`` float32 (cosine) or int8 (``cosine > threshold``); ``x`` has unit stride along D."""
    pairs, num_tokens = out.shape
    if pairs == 0:
        return out
    block_d = min(block_d, triton.next_power_of_2(x.shape[2]))
    grid = (triton.cdiv(num_tokens, block_n), pairs)
    _aligned_cosine_kernel[grid](
        x,
        out,
        num_tokens,
        x.shape[2],
        lag,
        0.0 if threshold is None else float(threshold),
        eps,
        x.stride(0),
        x.stride(1),
        THRESHOLD=threshold is not None,
        BLOCK_N=block_n,
        BLOCK_D=block_d,
        num_warps=num_warps,
    )
    return out


def launch_best_match(
    x: torch.Tensor,
    lag: int,
    eps: float,
    allowed: torch.Tensor | None,
    index: torch.Tensor,
    value: torch.Tensor,
    block_i: int = 64,
    block_j: int = 64,
    block_d: int = 64,
    num_warps: int = 4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill ``index`` (int64) and ``value`` (float32), both ``[T - lag, N]``; ``allowed`` is ``[T, N]`` int8.

    ``num_stages=1`` (no asynchronous software pipeline of the D loop): the H100 run of 2026-11-23 disagreed with
    the reference at llava-ov-7b/64f only — 2 of 12 348 arg-max indices, value error 2.4e-3. That is not a tie (a
    tie changes the index, not the value, ~1e-7 here) nor a tolerance issue (other sizes: 4e-7); it is the size of
    one 64-wide D chunk of a dot of random unit vectors (std 64^0.5 / 3584 = 2.2e-3) missing or counted twice, and
    64f is the only benchmark size whose grid (4 x 63 programs) exceeds the 132 SMs, i.e. where two programs
    share an SM. Both point at the pipelined shared-memory path of the dot (the transposed operand) rather than at
    the kernel's arithmetic, so the kernel now loads the candidate tile pre-transposed and runs unpipelined; the
    benchmark's ``best match`` row reports mismatches attributed against an fp64 recomputation to confirm it.
    """
    pairs, num_tokens = index.shape
    if pairs == 0:
        return index, value
    # Triton 3.8's interpreter computes bf16 tl.dot wrongly; there the exact fp32 products are used instead (the same
    # values a bf16 x bf16 -> fp32 tensor-core dot accumulates).
    upcast = x.dtype == torch.bfloat16 and interpreter_active()
    block_d = max(16, min(block_d, triton.next_power_of_2(x.shape[2])))
    grid = (triton.cdiv(num_tokens, block_i), pairs)
    _best_match_kernel[grid](
        x,
        allowed if allowed is not None else index,
        index,
        value,
        num_tokens,
        x.shape[2],
        lag,
        eps,
        x.stride(0),
        x.stride(1),
        HAS_ALLOWED=allowed is not None,
        PRECISION="ieee" if x.dtype == torch.float32 or upcast else "tf32",
        UPCAST=upcast,
        BLOCK_I=block_i,
        BLOCK_J=block_j,
        BLOCK_D=block_d,
        num_warps=num_warps,
        num_stages=1,  # see launch_best_match's docstring
    )
    return index, value

"""PruneVid's run refinement: one program holds the frame labels and runs every merge step; gathers between frames,
runs and labels are masked reductions over a ``[BLOCK, BLOCK]`` frame x frame tile."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["launch_refine_runs"]


@triton.jit
def _refine_runs_kernel(labels_ptr, out_ptr, frames, BLOCK: tl.constexpr):
    t = tl.arange(0, BLOCK)
    live = t < frames
    label = tl.load(labels_ptr + t, mask=live, other=-1)
    row = t[:, None]
    col = t[None, :]
    for _ in range(frames - 1):
        previous = tl.sum(tl.where(col == row - 1, label[None, :], 0), axis=1)
        start = live & ((t == 0) | (label != previous))
        run = tl.sum(tl.where((col <= row) & start[None, :], 1, 0), axis=1) - 1  # run of every frame
        in_run = run[None, :] == row  # [run r, frame]
        length = tl.sum(tl.where(in_run & live[None, :], 1, 0), axis=1)  # per run
        run_label = tl.sum(tl.where(in_run & start[None, :], label[None, :], 0), axis=1)
        exists = length > 0
        better = (length[None, :] > length[:, None]) | ((length[None, :] == length[:, None]) & (col < row))
        same = (run_label[None, :] == run_label[:, None]) & exists[None, :]
        shadowed = tl.max(tl.where(same & better, 1, 0), axis=1) > 0
        last = tl.max(tl.where(live, run, 0), axis=0)
        orphan = exists & (shadowed | (length == 1)) & (last > 0)
        first = tl.min(tl.where(orphan, t, BLOCK), axis=0)
        left_length = tl.sum(tl.where(t == first - 1, length, 0), axis=0)
        right_length = tl.sum(tl.where(t == first + 1, length, 0), axis=0)
        use_left = (first > 0) & ((first == last) | (left_length >= right_length))
        neighbour = tl.where(use_left, first - 1, first + 1)
        target = tl.sum(tl.where(t == neighbour, run_label, 0), axis=0)
        label = tl.where((run == first) & (first < BLOCK) & live, target, label)
    tl.store(out_ptr + t, label, mask=live)


def launch_refine_runs(labels: torch.Tensor) -> torch.Tensor:
    """Refined ``[T]`` int64 labels of contiguous int64 ``labels``."""
    out = torch.empty_like(labels)
    frames = labels.shape[0]
    block = max(16, triton.next_power_of_2(frames))
    _refine_runs_kernel[(1,)](labels, out, frames, BLOCK=block, num_warps=4 if block <= 64 else 8)
    return out

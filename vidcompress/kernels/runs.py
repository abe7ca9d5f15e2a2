"""PruneVid's refinement of per-frame cluster labels into contiguous segments, on the device without a host sync.

Each cluster keeps its longest run of consecutive frames (the first on ties); its other runs, and every run of a
cluster whose longest run is one frame, join the neighbouring run that is longer (the left one on ties), one at a
time from the left, until every run is the only, and longer than one frame, run of its label (or one run is left).
Every step merges two runs, so ``T - 1`` fixed steps (a finished refinement stays as it is) replace the
data-dependent loop. The Triton path runs every step in one program (``T <= MAX_FRAMES``); the PyTorch path runs
the steps as batched tensor ops.
"""

from __future__ import annotations

import torch

from ._dispatch import resolve_use_triton

__all__ = ["MAX_FRAMES", "run_ids", "refine_runs", "refine_runs_reference"]

#: Most frames the Triton program holds (its ``[T, T]`` tiles live in registers).
MAX_FRAMES = 256


def run_ids(labels: torch.Tensor) -> torch.Tensor:
    """``[T]`` index of the run of equal consecutive labels each frame lies in."""
    return torch.cat([labels.new_zeros(1), (labels[1:] != labels[:-1]).long().cumsum(0)])


def _merge_first_orphan(labels: torch.Tensor) -> torch.Tensor:
    """One step: the first orphan run takes the label of its longer neighbour (unchanged if there is none)."""
    frames = labels.shape[0]
    run = run_ids(labels)
    index = torch.arange(frames, device=labels.device)
    length = torch.zeros(frames, dtype=torch.long, device=labels.device).index_add_(0, run, torch.ones_like(run))
    run_label = torch.zeros_like(labels).scatter_(0, run, labels)
    exists = length > 0
    better = (length[None, :] > length[:, None]) | (
        (length[None, :] == length[:, None]) & (index[None, :] < index[:, None])
    )
    shadowed = ((run_label[None, :] == run_label[:, None]) & exists[None, :] & better).any(1)
    last = run[-1:]  # 1-element tensors index without a read-back
    orphan = exists & (shadowed | (length == 1)) & (last > 0)
    first = orphan.long().argmax(0, keepdim=True)
    left, right = (first - 1).clamp(min=0), (first + 1).clamp(max=frames - 1)
    use_left = (first > 0) & ((first == last) | (length[left] >= length[right]))
    target = run_label[torch.where(use_left, left, right)]
    return torch.where((run == first) & orphan.any(), target, labels)


def refine_runs_reference(labels: torch.Tensor) -> torch.Tensor:
    """PyTorch path of :func:`refine_runs`."""
    for _ in range(labels.shape[0] - 1):
        labels = _merge_first_orphan(labels)
    return labels


def refine_runs(labels: torch.Tensor, *, use_triton: bool | None = None) -> torch.Tensor:
    """Refined ``[T]`` labels (each final run one label); ``use_triton``: ``None`` chooses, ``True`` / ``False``
    force (the PyTorch path past ``MAX_FRAMES``)."""
    labels = labels.long()
    if labels.shape[0] > MAX_FRAMES or not resolve_use_triton(labels, use_triton):
        return refine_runs_reference(labels)
    from ._triton.runs import launch_refine_runs

    return launch_refine_runs(labels.contiguous())

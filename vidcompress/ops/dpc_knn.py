"""Density-peak clustering with k nearest neighbours (DPC-kNN), batched over rows (frames, windows).

Used by FlashVID, HoliTom, FastVID and PruneVid (methods.md §0.5). For ``n`` tokens of width ``D`` in a row:

1. ``d_ij = ||x_i - x_j|| / sqrt(D)``;
2. density ``rho_i = exp(-mean_{j in kNN(i)} d_ij^2)``, the ``k`` nearest including the token itself;
3. ``delta_i = min d_ij`` over tokens ``j`` of higher density; the densest token takes the row's largest distance;
4. ``score_i = rho_i * delta_i``; the ``C`` best scores are the cluster centres;
5. every token joins its nearest centre; a centre always joins itself.

The references break density ties with unseeded noise of scale 1e-6; here a tie is broken by index (the lower
index counts as denser, and ranks first among equal scores), so the result is deterministic. Rows have their own
number of valid tokens, clusters and neighbours, so one distance matrix (:func:`~vidcompress.kernels.pairwise`) and
one density pass (:func:`~vidcompress.kernels.density_scores`) serve a whole batch of frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..kernels import density_scores, pairwise
from .budgets import int_tensor_on
from .sorting import COUNTING_SORT_MAX, counting_rank

__all__ = ["DensityPeaks", "pairwise_distances", "density_peaks", "rank_desc", "dpc_knn"]


PerRow = int | Sequence[int] | torch.Tensor


def _per_row(value: PerRow, rows: int, device: torch.device) -> tuple[torch.Tensor, tuple[int, ...] | None]:
    """``value`` as a ``[rows]`` long tensor on ``device``, plus its host values when the caller gave host ints
    (an int or a sequence), so that checks and sizes need no read-back."""
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=torch.long).reshape(rows), None
    host = (int(value),) * rows if isinstance(value, int) else tuple(int(v) for v in value)
    if len(host) != rows:
        raise ValueError(f"expected {rows} per-row values, got {len(host)}")
    return int_tensor_on(host, device), host


def pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    """``[B, n, n]`` float32 Euclidean distances divided by ``sqrt(D)``: one batched ``cdist`` on CPU,
    :func:`~vidcompress.kernels.pairwise` on CUDA (tensor cores; ``x`` read in its own dtype; its docstring gives the
    accuracy against float64)."""
    return pairwise(x, kind="euclidean", divide_by=math.sqrt(x.shape[-1]))


@dataclass(frozen=True)
class DensityPeaks:
    """Per-token density statistics of a batch of rows: ``[B, n]`` each; invalid tokens hold ``0`` / ``-inf``."""

    distances: torch.Tensor  # [B, n, n] float32
    density: torch.Tensor  # rho
    score: torch.Tensor  # rho * delta, -inf for invalid tokens


def density_peaks(
    x: torch.Tensor, k: PerRow, valid: torch.Tensor | None = None, *, max_k: int | None = None
) -> DensityPeaks:
    """Density ``rho`` and centre score ``rho * delta`` of every token of ``x`` ``[B, n, D]``.

    Args:
        x: features, any float dtype (computed in float32).
        k: neighbours for the density (the token itself included), an int or one per row (host ints need no
            synchronisation; a tensor is read back for its check and maximum); clipped to the number of valid tokens
            of the row.
        valid: optional ``[B, n]`` bool mask of the tokens that take part; the others are ignored.
        max_k: a host upper bound of a tensor ``k``: then ``k`` is neither read back nor checked (every entry must
            be at least 1).
    """
    rows, n, _ = x.shape
    device = x.device
    valid = torch.ones(rows, n, dtype=torch.bool, device=device) if valid is None else valid.to(device)
    k, k_host = _per_row(k, rows, device)
    if k_host is None:
        k_host = (max_k,) if max_k is not None else tuple(k.tolist())  # host sync without max_k
    if min(k_host, default=1) < 1:
        raise ValueError(f"DPC-kNN needs k >= 1 neighbours, got {list(k_host)}")
    distances = pairwise_distances(x)
    density, score = density_scores(distances, k, min(max(k_host, default=1), n), valid)
    return DensityPeaks(distances=distances, density=density, score=score)


def rank_desc(score: torch.Tensor) -> torch.Tensor:
    """``[B, n]`` rank of each entry in descending order of ``score``, ties broken by the lower index first; short
    rows by counting (a segmented CUDA sort costs ~25 us on an H100 even for 32 rows of 196)."""
    if score.shape[-1] <= COUNTING_SORT_MAX:
        return counting_rank(-score)
    order = torch.sort(score, dim=-1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(-1, order, torch.arange(score.shape[-1], device=score.device).expand_as(order).contiguous())
    return rank


def _check_cluster_counts(clusters: Sequence[int], available: Sequence[int]) -> None:
    if any(c < 0 or c > a for c, a in zip(clusters, available)):
        raise ValueError(f"DPC-kNN cluster counts {list(clusters)} must lie in [0, valid tokens {list(available)}]")


def dpc_knn(
    x: torch.Tensor,
    num_clusters: PerRow,
    k: PerRow,
    valid: torch.Tensor | None = None,
    *,
    max_k: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster each row of ``x`` ``[B, n, D]`` into ``num_clusters`` (int or one per row) density-peak clusters.

    Sync-free when ``num_clusters`` and ``k`` are host ints and ``valid`` is ``None``; tensors (or a ``valid`` mask)
    are read back to the host once to check that every count lies in ``[0, valid tokens]``, unless ``max_k`` (a host
    upper bound of a tensor ``k``) is given: then nothing is read back or checked, and the caller guarantees
    ``0 <= num_clusters <= valid tokens`` and ``k >= 1``.

    Returns:
        ``(centre, assignment)``: ``centre`` ``[B, n]`` bool marks the cluster centres; ``assignment`` ``[B, n]`` long
        holds the in-row index of the centre each token joined (``-1`` for invalid tokens and rows without
        clusters). Ties in the nearest centre go to the lowest centre index.
    """
    rows, n, _ = x.shape
    device = x.device
    valid_given = valid is not None
    valid = torch.ones(rows, n, dtype=torch.bool, device=device) if valid is None else valid.to(device)
    clusters, clusters_host = _per_row(num_clusters, rows, device)
    if max_k is None and (clusters_host is None or valid_given):
        _check_cluster_counts(clusters.tolist(), valid.sum(-1).tolist())  # host sync
    elif clusters_host is not None:
        _check_cluster_counts(clusters_host, [n] * rows)
    peaks = density_peaks(x, k, valid, max_k=max_k)
    centre = (rank_desc(peaks.score) < clusters[:, None]) & valid
    to_centre = peaks.distances.masked_fill(~centre[:, None, :], float("inf"))
    assignment = to_centre.argmin(-1)
    index = torch.arange(n, device=device).expand(rows, n)
    assignment = torch.where(centre, index, assignment)
    has_centre = centre.any(-1, keepdim=True)
    assignment = torch.where(valid & has_centre, assignment, torch.full_like(assignment, -1))
    return centre, assignment

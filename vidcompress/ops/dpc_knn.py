"""DPC-kNN: density-peak clustering with a k-nearest-neighbour density (``methods.md`` §0.5).

For ``n`` tokens ``x`` of width ``D`` (one problem per frame, batched):

1. ``d_ij = ‖x_i − x_j‖ / √D``;
2. density ``ρ_i = exp(−mean_{j ∈ kNN(i)} d_ij²)``, the ``k`` nearest including the token itself;
3. ``δ_i = min_{j denser than i} d_ij``, and the largest distance of the problem for the densest token;
4. the ``C`` tokens of highest ``ρ·δ`` are the centres; every token joins its nearest centre.

The references add noise of scale 1e-6 to ``ρ`` to break ties; here "denser" breaks equal densities by index
(the lower index counts as denser) and every ranking breaks ties by index, so the result is deterministic.
"""

from __future__ import annotations

import torch

__all__ = ["DensityPeaks", "density_peaks", "dpc_knn"]


class DensityPeaks:
    """Per-token quantities of DPC-kNN for a batch of problems (all ``[B, n]`` except ``distance``)."""

    def __init__(self, distance: torch.Tensor, density: torch.Tensor, delta: torch.Tensor) -> None:
        self.distance = distance  # [B, n, n]
        self.density = density
        self.delta = delta

    @property
    def score(self) -> torch.Tensor:
        """``ρ · δ``, the centre score."""
        return self.density * self.delta


def density_peaks(features: torch.Tensor, k: int) -> DensityPeaks:
    """Distances, densities and distances-to-denser of ``features`` ``[B, n, D]`` (computed in float32)."""
    if features.ndim != 3:
        raise ValueError(f"features must be [B, n, D], got shape {tuple(features.shape)}")
    n, width = features.shape[1], features.shape[2]
    if not 1 <= k <= n:
        raise ValueError(f"the number of neighbours k must lie in [1, {n}], got {k}")
    x = features.float()
    distance = torch.cdist(x, x) / width**0.5
    nearest = torch.topk(distance, k=k, dim=-1, largest=False).values
    density = torch.exp(-(nearest**2).mean(dim=-1))
    index = torch.arange(n, device=x.device)
    # denser[b, i, j]: token j counts as denser than token i (equal densities: the lower index is denser)
    denser = (density[:, None, :] > density[:, :, None]) | (
        (density[:, None, :] == density[:, :, None]) & (index[None, :] < index[:, None])
    )
    largest = distance.flatten(1).max(dim=1).values[:, None, None]
    delta = torch.where(denser, distance, largest).min(dim=-1).values
    return DensityPeaks(distance, density, delta)


def dpc_knn(features: torch.Tensor, num_clusters: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster each problem of ``features`` ``[B, n, D]`` into ``num_clusters[b]`` clusters.

    Args:
        features: ``[B, n, D]`` tokens, one clustering problem per row.
        num_clusters: ``[B]`` long, clusters per problem, each in ``[0, n]`` (0 leaves the problem unclustered).
        k: neighbours of the density estimate, in ``[1, n]``.

    Returns:
        ``(centre, is_centre)``: ``[B, n]`` long index (within the problem) of each token's centre, ``-1`` where the
        problem has no cluster; ``[B, n]`` bool marking the centres. A token joins its nearest centre (ties: the
        lower index); a centre always joins itself.
    """
    batch, n = features.shape[:2]
    num_clusters = num_clusters.to(device=features.device, dtype=torch.long)
    if tuple(num_clusters.shape) != (batch,) or bool(((num_clusters < 0) | (num_clusters > n)).any()):
        raise ValueError(f"num_clusters must be [{batch}] values in [0, {n}], got {num_clusters.tolist()}")
    peaks = density_peaks(features, k)
    order = torch.sort(peaks.score, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n, device=order.device).expand(batch, n))
    is_centre = rank < num_clusters[:, None]
    to_centre = peaks.distance.masked_fill(~is_centre[:, None, :], float("inf"))
    centre = to_centre.argmin(dim=-1)
    index = torch.arange(n, device=features.device).expand(batch, n)
    centre = torch.where(is_centre, index, centre)
    centre = torch.where(num_clusters[:, None] > 0, centre, torch.full_like(centre, -1))
    return centre, is_centre

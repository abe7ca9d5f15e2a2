"""Cosine similarities between tokens, batched over frames (or any leading batch dimension).

Every function computes in float32 whatever the input dtype, and works on the input's device. Inputs are
``[B, N, D]`` batches (a video is ``[T, N, D]`` per frame, or ``[1, T*N, D]`` as one global pool).
"""

from __future__ import annotations

import torch

__all__ = ["unit_vectors", "cosine_similarity", "nearest_neighbor_distance", "query_relevance", "minmax"]

#: Elements of one similarity block in :func:`nearest_neighbor_distance` (64 Mi floats = 256 MiB).
BLOCK_ELEMENTS = 1 << 26


def unit_vectors(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``x / (‖x‖ + eps)`` along the last dimension, in float32."""
    x = x.to(torch.float32)
    return x / (x.norm(dim=-1, keepdim=True) + eps)


def cosine_similarity(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Cosine similarity ``[..., N, M]`` between ``x [..., N, D]`` and ``y [..., M, D]`` (``y = x`` if omitted)."""
    ux = unit_vectors(x)
    uy = ux if y is None else unit_vectors(y)
    return ux @ uy.transpose(-1, -2)


def nearest_neighbor_distance(features: torch.Tensor, candidates: torch.Tensor | None = None) -> torch.Tensor:
    """Cosine distance ``1 − cos`` from every token to its nearest *other* candidate token of the same batch row.

    Args:
        features: ``[B, N, D]``.
        candidates: optional ``[B, N]`` bool; only candidates count as neighbours (default: all tokens).

    Returns:
        ``[B, N]`` float32; ``+inf`` where a row has no other candidate. The ``N × N`` matrix is computed in row
        blocks, so memory stays bounded on long videos.
    """
    batch, n, _ = features.shape
    unit = unit_vectors(features)
    device = unit.device
    rows_per_block = max(1, BLOCK_ELEMENTS // max(1, batch * n))
    columns = torch.arange(n, device=device)
    nearest = torch.empty(batch, n, dtype=torch.float32, device=device)
    for start in range(0, n, rows_per_block):
        rows = columns[start : start + rows_per_block]
        sim = unit[:, rows] @ unit.transpose(1, 2)  # [B, r, N]
        excluded = rows[:, None] == columns[None, :]  # the token itself
        if candidates is None:
            sim = sim.masked_fill(excluded, -torch.inf)
        else:
            sim = sim.masked_fill(excluded | ~candidates[:, None, :], -torch.inf)
        nearest[:, rows] = 1.0 - sim.amax(dim=2)
    return nearest


def query_relevance(features: torch.Tensor, query: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """Soft-pooled cosine similarity of every token to a question: ``Σ_q softmax_q(M / τ) · M``, ``M = cos(f, q)``.

    This is FlashVLM's text-relevance before its sharpening steps: close to the best match over question tokens,
    smoothed by the temperature ``τ``.

    Args:
        features: ``[B, N, D]``.
        query: ``[Q, D]`` question token embeddings in the features' space.
        temperature: softmax temperature over the question tokens.

    Returns:
        ``[B, N]`` float32 in ``[-1, 1]``.
    """
    sim = unit_vectors(features) @ unit_vectors(query).T  # [B, N, Q]
    return (torch.softmax(sim / temperature, dim=-1) * sim).sum(dim=-1)


def minmax(x: torch.Tensor, dim: int = -1, eps: float = 1e-6) -> torch.Tensor:
    """``(x − min) / (max − min + eps)`` along ``dim``, the normalisation the references use (a flat row gives 0)."""
    low = x.amin(dim=dim, keepdim=True)
    high = x.amax(dim=dim, keepdim=True)
    return (x - low) / (high - low + eps)

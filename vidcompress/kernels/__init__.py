"""GPU hot-path kernels (Triton), each with a PyTorch reference path used on CPU and for checking.

Every kernel takes ``use_triton``: ``None`` (default) runs Triton on CUDA tensors when ``triton`` imports and the
PyTorch path otherwise; ``True`` / ``False`` force a path; ``VIDCOMPRESS_DISABLE_TRITON=1`` forces PyTorch.
Every kernel writes every element of its output (optionally a caller-supplied ``out``), reads nothing back to the
host (except the optional ``validate`` checks), and accumulates in float32 whatever the input dtype.

* :mod:`.segment_mean` — merge tokens into ``K`` groups (sorted segment reduction, no atomics).
* :mod:`.adjacent_similarity` — cosine between frames: position-aligned, thresholded, and best match.
* :mod:`.density_peaks` — DPC-kNN density and centre score from the distance matrices (two launches).
* :mod:`.greedy` — per-frame greedy k-center (plain and FlashVID's signed calibration) and MMR selection, all
  frames in one launch.
* :mod:`.pairwise` — dot / cosine / Euclidean matrices of token batches on the tensor cores without rounding the
  inputs (16 of 24 mantissa bits for float32 ones), and the rows' squared norms to share between matrices.
* :mod:`.partition` — VisPruner's even/odd diversity partition (FlashVLM), every round of every frame in one launch.
* :mod:`.runs` — PruneVid's refinement of frame labels into contiguous segments, every step in one launch.
* :mod:`.sinkhorn` — Sinkhorn scalings of a batch of OT problems (AOT), every iteration in one launch, stop on device.
"""

from ._dispatch import DISABLE_ENV, resolve_use_triton, triton_available
from .adjacent_similarity import BestMatch, aligned_above, aligned_cosine, best_match
from .density_peaks import density_scores
from .greedy import MAX_TOKENS, GreedySelection, calibrated_kcenter, frame_cosine, greedy_kcenter, greedy_mmr
from .pairwise import matmul_float32, pairwise, squared_norms
from .partition import diversity_partition
from .runs import refine_runs
from .segment_mean import segment_mean, segment_mean_csr, segment_offsets
from .sinkhorn import sinkhorn_scalings

__all__ = [
    "DISABLE_ENV",
    "MAX_TOKENS",
    "BestMatch",
    "GreedySelection",
    "aligned_above",
    "aligned_cosine",
    "best_match",
    "calibrated_kcenter",
    "density_scores",
    "diversity_partition",
    "frame_cosine",
    "greedy_kcenter",
    "greedy_mmr",
    "matmul_float32",
    "pairwise",
    "refine_runs",
    "resolve_use_triton",
    "segment_mean",
    "segment_mean_csr",
    "segment_offsets",
    "sinkhorn_scalings",
    "squared_norms",
    "triton_available",
]

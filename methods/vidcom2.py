"""``vidcom2``: VidCom2, frame-uniqueness budgets and per-frame distinctive-token selection."""

from __future__ import annotations

import torch

from vidcompress.assemble import select_tokens
from vidcompress.compressor import Compressor
from vidcompress.ops.dpc_knn import rank_desc
from vidcompress.ops.temporal import unit
from vidcompress.registry import register_compressor
from vidcompress.tokens import CompressedTokens, VideoTokens

DEFAULT_SCALES = (0.125, 0.25, 0.5, 1.0, 2.0)


def low_variance_channels(flat: torch.Tensor, fraction: float) -> torch.Tensor:
    """The ``fraction`` of channels of ``flat`` ``[M, D]`` with the lowest variance over all tokens (at least one)."""
    keep = max(1, int(flat.shape[1] * fraction))
    variance = flat.float().var(0, unbiased=False)
    return torch.sort(variance, stable=True).indices[:keep]


def gaussian_similarity(x: torch.Tensor, centre: torch.Tensor, scales: tuple[float, ...]) -> torch.Tensor:
    """``sum_a exp(-||x - c||^2 / (2a))`` over the bandwidths ``scales``, along the last dimension."""
    squared = (x - centre).square().sum(-1)
    return sum(torch.exp(-squared / (2.0 * a)) for a in scales)


@register_compressor(
    "vidcom2",
    paper="Video Compression Commander: Plug-and-Play Inference Acceleration for Video Large Language Models "
    "(VidCom2, EMNLP 2025, arXiv 2505.14454)",
    reference="xuyang-liu16/VidCom2",
)
class VidCom2(Compressor):
    """VidCom2: unique frames get larger budgets; each frame keeps its most distinctive tokens (pruning only).

    Follows ``token_compressor/vidcom2/vidcom2.py``: keep the ``channel_fraction`` of channels with the lowest
    variance, L2-normalise, score each token by the multi-scale Gaussian similarity ``g`` to the video's mean token
    ``c_v`` and to its frame's mean ``c_f``. Frame uniqueness ``u_f = -mean g(x, c_v)``,
    ``p = softmax((u - max u) / temperature)``, frame scale ``r * (1 + p_f - mean p)`` clamped at 1; a frame keeps
    ``round(scale * N)`` tokens (at least one) with the lowest ``g(x, c_v) + g(x, c_f)``.

    Retention: ``retention`` is VidCom2's ``R_RATIO``. The clamp and the per-frame rounding make the native count
    (``exact=False``) differ slightly from the target; by default the per-frame choice is then reconciled to
    ``target_count`` by the same score ranked over the whole video (as vLLM's integration does): surplus tokens with
    the highest score are dropped, missing ones are added back lowest score first. Ties go to the lower index.
    """

    def __init__(
        self,
        retention: float = 1.0,
        *,
        exact: bool = True,
        channel_fraction: float = 0.5,
        temperature: float = 0.01,
        scales: tuple[float, ...] = DEFAULT_SCALES,
    ) -> None:
        super().__init__(retention, exact=exact)
        if not 0.0 < channel_fraction <= 1.0:
            raise ValueError(f"channel_fraction must lie in (0, 1], got {channel_fraction!r}")
        if not temperature > 0.0:
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        if not scales or any(not a > 0.0 for a in scales):
            raise ValueError(f"scales must be non-empty and positive, got {scales!r}")
        self.channel_fraction = float(channel_fraction)
        self.temperature = float(temperature)
        self.scales = tuple(float(a) for a in scales)

    def frame_budgets(self, tokens: VideoTokens) -> tuple[torch.Tensor, torch.Tensor]:
        """``([T] native per-frame budgets, [T, N] distinctiveness score, lower = more distinctive)``."""
        t, n = tokens.features.shape[:2]
        flat = tokens.flat_features
        x = unit(flat[:, low_variance_channels(flat, self.channel_fraction)]).reshape(t, n, -1)
        video_centre = x.reshape(t * n, -1).mean(0)
        frame_centre = x.mean(1, keepdim=True)
        to_video = gaussian_similarity(x, video_centre, self.scales)
        to_frame = gaussian_similarity(x, frame_centre, self.scales)
        uniqueness = -to_video.mean(1)
        p = torch.softmax((uniqueness - uniqueness.max()) / self.temperature, dim=0)
        scale = (self.retention * (1.0 + p - p.mean())).clamp(max=1.0)
        budgets = torch.round(scale * n).long().clamp(min=1)
        return budgets, to_video + to_frame

    def compress(self, tokens: VideoTokens, count: int) -> CompressedTokens:
        budgets, score = self.frame_budgets(tokens)
        keep = (rank_desc(-score) < budgets[:, None]).reshape(-1)  # lowest score first within each frame
        if self.exact:
            return select_tokens(tokens, self._reconcile(keep, score.reshape(-1), count))
        return select_tokens(tokens, torch.nonzero(keep).squeeze(1))  # native count: a data-dependent size

    @staticmethod
    def _reconcile(keep: torch.Tensor, score: torch.Tensor, count: int) -> torch.Tensor:
        """Flat indices of exactly ``count`` tokens: from a surplus, the kept tokens with the highest score are
        dropped (ties: lower index first); to fill a shortfall, the dropped tokens with the lowest score are added
        (ties: lower index first).

        Both are one order: kept tokens first, each part by ascending score, kept ties by descending index and
        dropped ties by ascending index; the first ``count`` of it are the answer. Built from three stable sorts
        (least significant key first), so no count is read back to the host.
        """
        index = torch.arange(keep.shape[0], device=keep.device)
        order = torch.sort(torch.where(keep, -index, index), stable=True).indices
        order = order[torch.sort(score[order], stable=True).indices]
        order = order[torch.sort((~keep[order]).to(torch.uint8), stable=True).indices]
        return order[:count]

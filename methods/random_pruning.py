"""``random``: seeded random pruning."""

from __future__ import annotations

import functools

import torch

from vidcompress.assemble import host_to_device, select_tokens
from vidcompress.compressor import Compressor
from vidcompress.registry import register_compressor
from vidcompress.tokens import CompressedTokens, VideoTokens


@register_compressor("random", paper="(baseline) random token pruning, cf. VidCom2 (arXiv 2505.14454) Table 1")
class RandomPruning(Compressor):
    """Keeps ``target_count`` tokens drawn uniformly at random without replacement, from a seeded generator.

    A strong baseline at moderate retention (94.8 % of LLaVA-OV-7B's average at 25 % in VidCom2's table). The draw
    depends on ``seed`` and the grid only, so it is the same on every device and every call.
    """

    def __init__(self, retention: float = 1.0, *, exact: bool = True, seed: int = 0) -> None:
        super().__init__(retention, exact=exact)
        self.seed = int(seed)

    def compress(self, tokens: VideoTokens, count: int) -> CompressedTokens:
        return select_tokens(tokens, random_indices(self.seed, tokens.num_tokens, count, tokens.features.device))


@functools.lru_cache(maxsize=64)
def random_indices(seed: int, num_tokens: int, count: int, device: torch.device) -> torch.Tensor:
    """``count`` of ``num_tokens`` flat indices drawn by a CPU generator seeded with ``seed``, on ``device``; cached
    per argument tuple (no work, no copy after the first call). Callers must not modify the returned tensor."""
    generator = torch.Generator().manual_seed(seed)
    return host_to_device(torch.randperm(num_tokens, generator=generator)[:count], device)

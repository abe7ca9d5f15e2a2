"""``none``: the uncompressed baseline."""

from __future__ import annotations

from vidcompress.assemble import identity
from vidcompress.compressor import Compressor
from vidcompress.registry import register_compressor
from vidcompress.tokens import CompressedTokens, VideoTokens


@register_compressor("none", paper="(baseline) no compression")
class NoCompression(Compressor):
    """Keeps every visual token: the reference point every result is compared against.

    ``retention`` is accepted for a uniform interface but must be 1.0: anything else would make a result table
    claim a compression that did not happen.
    """

    def __init__(self, retention: float = 1.0, *, exact: bool = True) -> None:
        super().__init__(retention, exact=exact)
        if self.retention != 1.0:
            raise ValueError(f"method 'none' keeps every token; retention must be 1.0, got {retention!r}")

    def compress(self, tokens: VideoTokens, count: int) -> CompressedTokens:
        return identity(tokens)

"""Compression methods. Importing this package registers every method (one module per method or family)."""

from . import dycoke, fastvid, flashvid, holitom, identity, prunevid, random_pruning, uniform, vidcom2

__all__ = ["dycoke", "fastvid", "flashvid", "holitom", "identity", "prunevid", "random_pruning", "uniform", "vidcom2"]

"""Compression methods. Importing this package registers every method (one module per method or family)."""

from . import dycoke, holitom, identity, prunevid, random_pruning, uniform, vidcom2

__all__ = ["dycoke", "holitom", "identity", "prunevid", "random_pruning", "uniform", "vidcom2"]

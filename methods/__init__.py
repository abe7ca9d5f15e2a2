"""Compression methods. Importing this package registers every method (one module per method or family)."""

from . import aot, identity, ppe, random_pruning, uniform

__all__ = ["aot", "identity", "ppe", "random_pruning", "uniform"]

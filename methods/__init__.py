"""Compression methods. Importing this package registers every method (one module per method or family)."""

from . import identity, random_pruning, uniform

__all__ = ["identity", "random_pruning", "uniform"]

"""Compression methods. Importing this package registers every method (one module per method or family)."""

from . import fastv, identity, random_pruning, uniform

__all__ = ["fastv", "identity", "random_pruning", "uniform"]

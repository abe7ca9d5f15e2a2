"""Compression methods. Importing this package registers every method (one module per method or family)."""

from . import divprune, fastv, flashvlm, identity, keyframe, mmr, random_pruning, uniform, visionzip

__all__ = ["divprune", "fastv", "flashvlm", "identity", "keyframe", "mmr", "random_pruning", "uniform", "visionzip"]

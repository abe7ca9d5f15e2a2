"""Compression methods. Importing this package registers every method (one module per method or family)."""

from . import divprune, flashvlm, identity, keyframe, mmr, random_pruning, uniform, visionzip

__all__ = ["divprune", "flashvlm", "identity", "keyframe", "mmr", "random_pruning", "uniform", "visionzip"]

"""Compression methods. Importing this package registers every method (one module per method or family)."""

from . import (
    divprune,
    dycoke,
    fastv,
    fastvid,
    flashvid,
    flashvlm,
    holitom,
    identity,
    keyframe,
    mmr,
    prunevid,
    random_pruning,
    todre,
    uniform,
    vidcom2,
    visionzip,
)

__all__ = [
    "divprune",
    "dycoke",
    "fastv",
    "fastvid",
    "flashvid",
    "flashvlm",
    "holitom",
    "identity",
    "keyframe",
    "mmr",
    "prunevid",
    "random_pruning",
    "todre",
    "uniform",
    "vidcom2",
    "visionzip",
]

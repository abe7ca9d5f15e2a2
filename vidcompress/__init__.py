"""vidcompress: training-free visual-token compression for video LLMs.

>>> from vidcompress import get_compressor, available_methods, VideoTokens
>>> "uniform" in available_methods()
True
"""

from __future__ import annotations

from typing import Any

from .assemble import identity, merge_tokens, select_tokens
from .compressor import Compressor, Pipeline
from .cuda_graph import GraphedCompressor, graphed
from .registry import (
    MethodInfo,
    UnknownMethodError,
    UnknownParameterError,
    available_methods,
    get_compressor,
    method_info,
    register_compressor,
)
from .tokens import CompressedTokens, VideoTokens, target_count
from . import methods  # noqa: E402,F401  (registers every method)

__version__ = "0.1.0"

__all__ = [
    "VideoTokens",
    "CompressedTokens",
    "target_count",
    "Compressor",
    "Pipeline",
    "GraphedCompressor",
    "graphed",
    "MethodInfo",
    "UnknownMethodError",
    "UnknownParameterError",
    "register_compressor",
    "available_methods",
    "method_info",
    "get_compressor",
    "identity",
    "select_tokens",
    "merge_tokens",
    "wrap",
    "VideoLLM",
    "Answer",
    "load_video",
    "VideoClip",
]

_LAZY = {"wrap": "api", "VideoLLM": "api", "Answer": "api", "load_video": "video", "VideoClip": "video"}


def __getattr__(name: str) -> Any:
    """Import the model-facing API (which pulls in ``transformers``) on first use."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'vidcompress' has no attribute {name!r}")

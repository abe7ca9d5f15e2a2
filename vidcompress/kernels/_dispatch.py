"""Choice between the Triton kernels and their PyTorch reference paths.

``use_triton=None`` (the default of every kernel) picks Triton for CUDA tensors when ``triton`` imports, and the
PyTorch path otherwise. ``VIDCOMPRESS_DISABLE_TRITON=1`` forces the PyTorch path whatever the caller asks for.
``use_triton=True`` on CPU tensors is accepted only under Triton's interpreter (``TRITON_INTERPRET=1``, set before
the first kernel call), which is how the kernels are tested without a GPU.
"""

from __future__ import annotations

import importlib.util
import os

import torch

__all__ = ["DISABLE_ENV", "triton_available", "triton_disabled", "interpreter_active", "resolve_use_triton"]

DISABLE_ENV = "VIDCOMPRESS_DISABLE_TRITON"
_TRUE = {"1", "true", "yes", "on"}


_TRITON_FOUND = importlib.util.find_spec("triton") is not None  # looked up once, at import, without importing it


def triton_available() -> bool:
    """Whether the ``triton`` package can be imported."""
    return _TRITON_FOUND


def triton_disabled() -> bool:
    """Whether ``VIDCOMPRESS_DISABLE_TRITON`` forces the PyTorch paths."""
    return os.environ.get(DISABLE_ENV, "").strip().lower() in _TRUE


def interpreter_active() -> bool:
    """Whether Triton's CPU interpreter is switched on (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in _TRUE


def resolve_use_triton(tensor: torch.Tensor, use_triton: bool | None) -> bool:
    """Decide whether a kernel call on ``tensor`` runs the Triton kernel (True) or the PyTorch path (False)."""
    if use_triton not in (None, True, False):
        raise ValueError(f"use_triton must be None, True or False, got {use_triton!r}")
    if triton_disabled():
        return False
    if use_triton is None:
        return tensor.is_cuda and triton_available()
    if not use_triton:
        return False
    if not triton_available():
        raise ValueError("use_triton=True but the triton package cannot be imported; install triton or pass None")
    if not tensor.is_cuda and not interpreter_active():
        raise ValueError(
            f"use_triton=True needs CUDA tensors (got a tensor on {tensor.device}); on CPU set TRITON_INTERPRET=1 "
            "before the first kernel call to run the kernels in Triton's interpreter"
        )
    return True

"""End-to-end speed and memory benchmark (``vidcompress bench``) on full-size architectures.

See :mod:`vidcompress.bench.cli` for the command, :mod:`vidcompress.bench.models` for the random-weight builders and
:mod:`vidcompress.bench.flops` for the FLOPs conventions.
"""

from __future__ import annotations

from .flops import prefill_flops, vision_flops
from .models import FULL_MODELS, build_processor, build_random_model, load_config

__all__ = ["FULL_MODELS", "build_processor", "build_random_model", "load_config", "prefill_flops", "vision_flops"]

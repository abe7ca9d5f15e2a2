"""Shared fixtures: offline tiny models and small videos."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Triton reads TRITON_INTERPRET when it is first imported (transformers imports it), so the CPU test suite runs the
# kernels in Triton's interpreter from the start. VIDCOMPRESS_TEST_GPU=1 runs them compiled on a GPU instead.
if os.environ.get("VIDCOMPRESS_TEST_GPU") != "1":
    os.environ["TRITON_INTERPRET"] = "1"

import numpy as np
import pytest
import torch

from vidcompress.models.tiny import tiny_llava_onevision, tiny_qwen2_5_vl


@pytest.fixture(scope="session")
def qwen():
    return tiny_qwen2_5_vl()


@pytest.fixture(scope="session")
def llava():
    return tiny_llava_onevision()


@pytest.fixture(params=["qwen", "llava"])
def tiny(request):
    """Each tiny model in turn, as (name, model, processor)."""
    model, processor = request.getfixturevalue(request.param)
    return request.param, model, processor


@pytest.fixture
def frames() -> np.ndarray:
    return np.random.RandomState(0).randint(0, 255, (8, 112, 112, 3), dtype=np.uint8)


def random_tokens(t: int = 4, h: int = 3, w: int = 5, d: int = 8, seed: int = 0, **extra):
    """VideoTokens with random features (and random attention when ``attention=True``)."""
    from vidcompress import VideoTokens

    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(t, h * w, d, generator=generator)
    if extra.pop("attention", False):
        extra["attention"] = torch.rand(t, h * w, generator=generator)
    return VideoTokens(features=features, grid=(t, h, w), **extra)

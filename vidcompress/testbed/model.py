"""The test-bed's micro video LLM: a real ``Qwen2_5_VLForConditionalGeneration`` with a small config.

:func:`build_testbed_model` makes it with random weights (what ``scripts/train_testbed.py`` starts from);
:func:`load_testbed_model` loads the trained weights shipped in ``vidcompress/testbed/weights/``. Its tokenizer is
word-level (:func:`vidcompress.models.tiny.word_tokenizer`) over the tiny models' words plus every test-bed question
and answer word; its prompt is the tiny models' "<video> question" chat template.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

from vidcompress.models.tiny import QWEN_SPECIALS, WORDS, word_level_qwen2_5_vl, word_tokenizer

from .generator import SIZE, question_words

__all__ = ["WEIGHTS_DIR", "testbed_vocabulary", "build_testbed_model", "load_testbed_model", "testbed_available"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

VISION_CONFIG = dict(
    depth=4,
    hidden_size=128,
    intermediate_size=256,
    num_heads=4,
    in_channels=3,
    patch_size=14,
    temporal_patch_size=2,
    spatial_merge_size=2,
    window_size=56,
    fullatt_block_indexes=[1, 3],
    out_hidden_size=256,
    tokens_per_second=2,
)
TEXT_CONFIG = dict(
    hidden_size=256,
    intermediate_size=512,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=2048,
    rope_parameters={"rope_type": "default", "rope_theta": 1e4, "mrope_section": [8, 12, 12]},
)


def testbed_vocabulary() -> list[str]:
    """The tiny models' words, then every test-bed word they lack (order fixed: ids depend on it)."""
    return list(WORDS) + [word for word in question_words() if word not in WORDS]


def build_testbed_model(seed: int = 0) -> tuple[Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor]:
    """The micro Qwen2.5-VL with random weights, and its processor (frames of ``SIZE`` px: 4x4 tokens per step)."""
    tokenizer = word_tokenizer(QWEN_SPECIALS, testbed_vocabulary())
    model, processor = word_level_qwen2_5_vl(tokenizer, TEXT_CONFIG, VISION_CONFIG, image_size=SIZE, seed=seed)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, processor


def testbed_available() -> bool:
    """Whether trained weights are shipped (``weights/model.safetensors`` with its config and processor files)."""
    return all((WEIGHTS_DIR / name).is_file() for name in ("model.safetensors", "config.json", "tokenizer.json"))


def load_testbed_model(
    device: str | torch.device | None = None,
) -> tuple[Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor]:
    """The trained micro model (float32, eval mode) and its processor, on ``device`` (default: CUDA if present)."""
    if not testbed_available():
        raise FileNotFoundError(
            f"no trained test-bed weights in {WEIGHTS_DIR}; train them with scripts/train_testbed.py"
        )
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(WEIGHTS_DIR, dtype=torch.float32).to(device).eval()
    processor = Qwen2_5_VLProcessor.from_pretrained(WEIGHTS_DIR)
    return model, processor

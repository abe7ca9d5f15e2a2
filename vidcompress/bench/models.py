"""Full-size Qwen2.5-VL and LLaVA-OneVision architectures with random weights, for timing and memory.

The shipped configs (``configs/*.json``) were written from the public checkpoints' ``config.json`` files (there is no
hub access where they were written). Speed and memory do not depend on the weights, so a random-weight model built
from the real config times exactly like the checkpoint; every result built this way is labelled
``random_weights: true``. A real checkpoint is loaded instead when a path or hub id is given.

Processors are built offline: the stock video processors with the checkpoints' sizes, and a word-level tokenizer
(the idea of :mod:`vidcompress.models.tiny`) padded to the config's vocabulary, with the special tokens at the
checkpoints' ids, so every id the random model can produce decodes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionProcessor,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    ProcessorMixin,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
)

from vidcompress.models.tiny import LLAVA_CHAT_TEMPLATE, QWEN_CHAT_TEMPLATE, WORDS

__all__ = [
    "FULL_MODELS",
    "ModelSpec",
    "load_config",
    "build_random_model",
    "build_processor",
    "load_checkpoint",
    "padded_word_tokenizer",
]


@dataclass(frozen=True)
class ModelSpec:
    """One full-size architecture: its shipped config file, family and the checkpoint it mirrors."""

    config_file: str
    family: str  # "qwen2_5_vl" or "llava_onevision"
    checkpoint: str


FULL_MODELS: dict[str, ModelSpec] = {
    "qwen2.5-vl-7b": ModelSpec("qwen2.5-vl-7b.json", "qwen2_5_vl", "Qwen/Qwen2.5-VL-7B-Instruct"),
    "qwen2.5-vl-3b": ModelSpec("qwen2.5-vl-3b.json", "qwen2_5_vl", "Qwen/Qwen2.5-VL-3B-Instruct"),
    "llava-ov-7b": ModelSpec("llava-onevision-7b.json", "llava_onevision", "llava-hf/llava-onevision-qwen2-7b-ov-hf"),
    "llava-ov-0.5b": ModelSpec(
        "llava-onevision-0.5b.json", "llava_onevision", "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"
    ),
}

_CONFIG_CLASSES = {"qwen2_5_vl": Qwen2_5_VLConfig, "llava_onevision": LlavaOnevisionConfig}
_MODEL_CLASSES = {"qwen2_5_vl": Qwen2_5_VLForConditionalGeneration, "llava_onevision": LlavaOnevisionForConditionalGeneration}

# Special tokens at the checkpoints' ids (Qwen2 tokenizer; LLaVA-OV adds <image> and <video>).
QWEN_SPECIAL_IDS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|vision_start|>": 151652,
    "<|vision_end|>": 151653,
    "<|vision_pad|>": 151654,
    "<|image_pad|>": 151655,
    "<|video_pad|>": 151656,
}
LLAVA_SPECIAL_IDS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<image>": 151646, "<video>": 151647}

# Qwen2.5-VL preprocessor_config.json: 14 px patches, 2 frames per temporal patch, 2x2 merge; video frames between
# 128 and 768 merged tokens' worth of pixels (448 x 448 frames stay 448 x 448: 16 x 16 tokens per temporal group).
QWEN_VIDEO_PIXELS = {"shortest_edge": 128 * 28 * 28, "longest_edge": 768 * 28 * 28}
# LLaVA-OneVision: SigLIP at 384 px (27 x 27 patches), pooled to 14 x 14 tokens per frame.
LLAVA_FRAME_SIZE = 384


def load_config(name: str) -> PretrainedConfig:
    """The shipped config of ``name`` (a key of :data:`FULL_MODELS`) as a ``transformers`` config object."""
    if name not in FULL_MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(FULL_MODELS)}")
    spec = FULL_MODELS[name]
    text = resources.files("vidcompress.bench").joinpath("configs", spec.config_file).read_text()
    values = {key: value for key, value in json.loads(text).items() if not key.startswith("_")}
    return _CONFIG_CLASSES[spec.family].from_dict(values)


def build_random_model(
    name: str, device: str | torch.device = "cuda", dtype: torch.dtype = torch.bfloat16, attn_implementation: str = "sdpa"
) -> PreTrainedModel:
    """``name``'s architecture with random weights, allocated and initialised directly on ``device`` in ``dtype``.

    ``device="meta"`` builds the structure without any storage (parameter counts, tests).
    """
    config = load_config(name)
    model_class = _MODEL_CLASSES[FULL_MODELS[name].family]
    torch.manual_seed(0)
    with torch.device(device):
        model = model_class._from_config(config, dtype=dtype, attn_implementation=attn_implementation)
    return model.eval()


def padded_word_tokenizer(special_ids: dict[str, int], vocab_size: int, pad: str, eos: str) -> PreTrainedTokenizerFast:
    """A word-level tokenizer with exactly ``vocab_size`` ids: the project's words from id 0, the special tokens at
    ``special_ids``, and filler tokens ``<unused_i>`` everywhere else."""
    vocab = {f"<unused_{i}>": i for i in range(vocab_size)}
    by_id = {i: token for token, i in vocab.items()}
    taken = set(special_ids.values())
    free_ids = (i for i in range(vocab_size) if i not in taken)
    for token, index in [("[UNK]", next(free_ids)), *((word, next(free_ids)) for word in dict.fromkeys(WORDS))]:
        vocab.pop(by_id[index])
        vocab[token] = index
    for token, index in special_ids.items():
        if index >= vocab_size:
            raise ValueError(f"special token {token} id {index} is outside a vocabulary of {vocab_size}")
        vocab.pop(by_id[index])
        vocab[token] = index
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(prefix="##")
    backend.add_special_tokens(list(special_ids))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token=pad,
        eos_token=eos,
        extra_special_tokens=[token for token in special_ids if token not in (pad, eos)],
        padding_side="left",
    )


def build_processor(name: str, config: PretrainedConfig | None = None) -> ProcessorMixin:
    """An offline processor for ``name``: the checkpoint's video/image sizes and a padded word-level tokenizer."""
    config = config or load_config(name)
    vocab_size = int(config.text_config.vocab_size)
    if FULL_MODELS[name].family == "qwen2_5_vl":
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
        from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

        tokenizer = padded_word_tokenizer(QWEN_SPECIAL_IDS, vocab_size, pad="<|endoftext|>", eos="<|im_end|>")
        common = dict(patch_size=14, temporal_patch_size=2, merge_size=2)
        return Qwen2_5_VLProcessor(
            image_processor=Qwen2VLImageProcessor(**common),
            tokenizer=tokenizer,
            # cap_pixels_per_frame=False: every frame keeps its resolution whatever the frame count
            video_processor=Qwen2VLVideoProcessor(size=dict(QWEN_VIDEO_PIXELS), cap_pixels_per_frame=False, **common),
            chat_template=QWEN_CHAT_TEMPLATE,
        )
    from transformers.models.llava_onevision.image_processing_llava_onevision import LlavaOnevisionImageProcessor
    from transformers.models.llava_onevision.video_processing_llava_onevision import LlavaOnevisionVideoProcessor

    tokenizer = padded_word_tokenizer(LLAVA_SPECIAL_IDS, vocab_size, pad="<|endoftext|>", eos="<|im_end|>")
    size = {"height": LLAVA_FRAME_SIZE, "width": LLAVA_FRAME_SIZE}
    patches = config.vision_config.image_size // config.vision_config.patch_size
    return LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=config.image_grid_pinpoints),
        tokenizer=tokenizer,
        video_processor=LlavaOnevisionVideoProcessor(size=size),
        num_image_tokens=patches * patches,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )


def load_checkpoint(
    path: str, device: str | torch.device = "cuda", dtype: torch.dtype = torch.bfloat16, attn_implementation: str = "sdpa"
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """A real checkpoint (local path or hub id) and its own processor, loaded straight onto ``device``."""
    from transformers import AutoConfig, AutoProcessor

    config = AutoConfig.from_pretrained(path)
    if config.model_type not in _MODEL_CLASSES:
        raise ValueError(f"{path} is a {config.model_type!r} model; the benchmark supports {', '.join(_MODEL_CLASSES)}")
    kwargs: dict[str, Any] = dict(dtype=dtype, device_map=str(device), attn_implementation=attn_implementation)
    model = _MODEL_CLASSES[config.model_type].from_pretrained(path, **kwargs).eval()
    return model, AutoProcessor.from_pretrained(path)

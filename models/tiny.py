"""Tiny random-weight Qwen2.5-VL and LLaVA-OneVision models, built offline from the real ``transformers`` classes.

They exist so that every adapter path (encoder, attention hook, splice, positions, generation) runs in seconds on a
CPU in tests and demos. Their weights are random: their answers mean nothing, and every number measured with them
is labelled so.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionProcessor,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
)

__all__ = [
    "TINY_MODELS",
    "tiny_qwen2_5_vl",
    "tiny_llava_onevision",
    "build_tiny",
    "word_tokenizer",
    "word_level_qwen2_5_vl",
]

BASE_TOKENS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
QWEN_SPECIALS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>", "<|im_start|>", "<|im_end|>"]
LLAVA_SPECIALS = ["<image>", "<video>", "<|im_start|>", "<|im_end|>"]
WORDS = (
    "user assistant system describe the video what happens is are in on of a an to and or which how many where "
    "when first last after before left right up down top bottom center moving moves colour color shape object objects "
    "red green blue yellow white black orange purple cyan magenta gray circle square triangle star cat dog runs flashed "
    "appeared background cut scene yes no zero one two three four five six seven eight ? . ,"
).split()

# A chat template in the shape of the real checkpoints' templates: the video placeholder, then the text.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|> {{ message['role'] }} "
    "{% for item in message['content'] %}{% if item['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|> "
    "{% elif item['type'] == 'text' %}{{ item['text'] }} {% endif %}{% endfor %}<|im_end|> {% endfor %}"
    "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
)
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|> {{ message['role'] }} "
    "{% for item in message['content'] %}{% if item['type'] == 'video' %}<video> "
    "{% elif item['type'] == 'text' %}{{ item['text'] }} {% endif %}{% endfor %}<|im_end|> {% endfor %}"
    "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
)


def word_tokenizer(specials: list[str], words: list[str] = WORDS) -> PreTrainedTokenizerFast:
    """An offline word-level tokenizer: ``[PAD] [UNK] [BOS] [EOS]``, then ``specials``, then ``words``."""
    vocab: dict[str, int] = {}
    for token in BASE_TOKENS + specials + list(words):
        vocab.setdefault(token, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    backend.add_special_tokens(BASE_TOKENS + specials)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        bos_token="[BOS]",
        eos_token="[EOS]",
        extra_special_tokens=specials,
        padding_side="left",
    )


def _token_ids(tokenizer: PreTrainedTokenizerFast) -> dict[str, int]:
    """The vocabulary size and the begin / end / padding token ids of a :func:`word_tokenizer`."""
    vocab = tokenizer.get_vocab()
    return dict(vocab_size=len(vocab), bos_token_id=vocab["[BOS]"], eos_token_id=vocab["[EOS]"], pad_token_id=vocab["[PAD]"])


def _text_config(**extra: object) -> dict[str, object]:
    """The tiny LLM's sizes (2 layers of width 64)."""
    return dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        **extra,
    )


def word_level_qwen2_5_vl(
    tokenizer: PreTrainedTokenizerFast,
    text_config: dict[str, object],
    vision_config: dict[str, object],
    image_size: int,
    seed: int,
) -> tuple[Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor]:
    """A random-weight Qwen2.5-VL over a :func:`word_tokenizer` with :data:`QWEN_SPECIALS`, and its processor.

    ``text_config`` gives the LLM's sizes (the vocabulary and special token ids come from ``tokenizer``);
    ``vision_config`` the ViT's; the processor keeps frames of up to ``image_size`` x ``image_size`` px.
    """
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    vocab = tokenizer.get_vocab()
    config = Qwen2_5_VLConfig(
        text_config={**text_config, **_token_ids(tokenizer)},
        vision_config=vision_config,
        image_token_id=vocab["<|image_pad|>"],
        video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"],
        vision_end_token_id=vocab["<|vision_end|>"],
    )
    size = {"shortest_edge": 56 * 56, "longest_edge": image_size * image_size}
    common = dict(size=size, patch_size=14, temporal_patch_size=2, merge_size=2)
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**common),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(**common, cap_pixels_per_frame=False),
        chat_template=QWEN_CHAT_TEMPLATE,
    )
    torch.manual_seed(seed)
    return Qwen2_5_VLForConditionalGeneration(config).eval(), processor


def tiny_qwen2_5_vl(seed: int = 0, image_size: int = 112) -> tuple[Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor]:
    """A random-weight Qwen2.5-VL with a real config class: 2 LLM layers of width 64, a 4-block ViT.

    Frames of ``image_size`` px give ``(image_size / 28)^2`` LLM tokens per temporal group (16 at 112 px).
    """
    return word_level_qwen2_5_vl(
        word_tokenizer(QWEN_SPECIALS),
        text_config=_text_config(rope_parameters={"rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 3, 3]}),
        vision_config=dict(
            depth=4,
            hidden_size=32,
            intermediate_size=64,
            num_heads=4,
            in_channels=3,
            patch_size=14,
            temporal_patch_size=2,
            spatial_merge_size=2,
            window_size=56,
            fullatt_block_indexes=[1, 3],
            out_hidden_size=64,
            tokens_per_second=2,
        ),
        image_size=image_size,
        seed=seed,
    )


def tiny_llava_onevision(
    seed: int = 0, image_size: int = 56
) -> tuple[LlavaOnevisionForConditionalGeneration, LlavaOnevisionProcessor]:
    """A random-weight LLaVA-OneVision (SigLIP tower, Qwen2 LLM) with a real config class.

    Frames are resized to ``image_size`` px; 56 px gives a 4x4 SigLIP grid pooled to 2x2 = 4 tokens per frame.
    """
    from transformers.models.llava_onevision.image_processing_llava_onevision import LlavaOnevisionImageProcessor
    from transformers.models.llava_onevision.video_processing_llava_onevision import LlavaOnevisionVideoProcessor

    tokenizer = word_tokenizer(LLAVA_SPECIALS)
    vocab = tokenizer.get_vocab()
    s = image_size
    pinpoints = [[s, s], [s, 2 * s], [2 * s, s], [2 * s, 2 * s]]
    config = LlavaOnevisionConfig(
        vision_config=dict(
            model_type="siglip_vision_model",
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=s,
            patch_size=14,
            vision_use_head=False,
        ),
        text_config=dict(model_type="qwen2", **_text_config(), **_token_ids(tokenizer)),
        image_token_index=vocab["<image>"],
        video_token_index=vocab["<video>"],
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        image_grid_pinpoints=pinpoints,
    )
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size={"height": s, "width": s}, image_grid_pinpoints=pinpoints),
        tokenizer=tokenizer,
        video_processor=LlavaOnevisionVideoProcessor(size={"height": s, "width": s}),
        num_image_tokens=(s // 14) ** 2,
        vision_feature_select_strategy="full",
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    return model, processor


TINY_MODELS = {
    "tiny-qwen2.5-vl": tiny_qwen2_5_vl,
    "tiny-llava-onevision": tiny_llava_onevision,
}


def build_tiny(name: str, seed: int = 0):
    """Build a tiny model by its registry name (``tiny-qwen2.5-vl`` or ``tiny-llava-onevision``)."""
    return TINY_MODELS[name](seed=seed)

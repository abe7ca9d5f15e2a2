"""The frame stage: FrameSelection, whole temporal groups, keyframe's duplicate-frame drop, F2C's key clips, and
``ask()`` encoding only the chosen frames; chains with a frame stage."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

import vidcompress
from vidcompress import get_compressor, target_count
from vidcompress.frame_stage import FrameSelection, complete_groups, resize_frames
from vidcompress.methods.f2c import ContrastiveScorer, expand_to_clips, traded_size
from vidcompress.models.tiny import word_tokenizer

QUESTION = "what happens in the video ?"
TINY = ["tiny-qwen2.5-vl", "tiny-llava-onevision"]


def solid(values: list[int], size: int = 112) -> np.ndarray:
    """One frame per value, every pixel of frame ``t`` equal to ``values[t]``."""
    return np.stack([np.full((size, size, 3), v, dtype=np.uint8) for v in values])


def repeated_video() -> np.ndarray:
    """Eight frames: four copies of one random image, then four of another (A A A A B B B B)."""
    rs = np.random.RandomState(0)
    a, b = rs.randint(0, 255, (2, 112, 112, 3), dtype=np.uint8)
    return np.stack([a] * 4 + [b] * 4)


# -- FrameSelection and helpers ------------------------------------------------------------------------------------
def test_frame_selection_validates():
    selection = FrameSelection(indices=np.array([1, 4]), size=(56, 84), scores=np.zeros(6))
    selection.check(6)
    assert selection.indices.dtype == np.int64 and selection.size == (56, 84)
    with pytest.raises(ValueError, match="strictly increasing"):
        FrameSelection(indices=np.array([4, 1]))
    with pytest.raises(ValueError, match="non-empty"):
        FrameSelection(indices=np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match="size"):
        FrameSelection(indices=np.array([0]), size=(0, 10))
    with pytest.raises(ValueError, match="out of range"):
        FrameSelection(indices=np.array([0, 6])).check(6)
    with pytest.raises(ValueError, match="scores"):
        selection.check(5)


def test_complete_groups_adds_the_partner_of_each_chosen_frame():
    assert complete_groups(np.array([3, 4]), 8, 2).tolist() == [2, 3, 4, 5]
    assert complete_groups(np.array([0, 1, 7]), 8, 2).tolist() == [0, 1, 6, 7]
    assert complete_groups(np.array([6]), 7, 2).tolist() == [6]  # the last group of an odd count has one frame
    assert complete_groups(np.array([3, 5]), 8, 1).tolist() == [3, 5]


def test_resize_frames():
    frames = solid([10, 200])
    resized = resize_frames(frames, (56, 28))
    assert resized.shape == (2, 56, 28, 3) and resized.dtype == np.uint8
    assert (resized[0] == 10).all() and (resized[1] == 200).all()


def test_base_class_has_no_frame_stage():
    with pytest.raises(NotImplementedError):
        get_compressor("uniform").select_frames(solid([0]), np.zeros(1), QUESTION)


# -- keyframe --------------------------------------------------------------------------------------------------------
def test_keyframe_drops_repeated_frames():
    frames = solid([50, 50, 51, 200, 200, 90, 90, 90])  # 51 is one grey level from 50: a near-duplicate
    selection = get_compressor("keyframe").select_frames(frames, np.arange(8.0), QUESTION)
    assert selection.indices.tolist() == [0, 3, 5]
    assert selection.scores[1] == 0.0 and selection.scores[3] == pytest.approx(150 / 255)
    everything = get_compressor("keyframe", frame_threshold=0.0).select_frames(frames, np.arange(8.0), QUESTION)
    assert everything.indices.tolist() == list(range(8))


def test_keyframe_compares_with_the_last_kept_frame():
    # a slow drift of 4 grey levels per frame (0.016 < 0.02): against the last kept frame, every second frame is new
    frames = solid([0, 4, 8, 12, 16, 20, 24, 28])
    selection = get_compressor("keyframe").select_frames(frames, np.arange(8.0), QUESTION)
    assert selection.indices.tolist() == [0, 2, 4, 6]


def test_keyframe_parameters_are_checked():
    with pytest.raises(ValueError, match="frame_threshold"):
        get_compressor("keyframe", frame_threshold=1.5)
    with pytest.raises(ValueError, match="frame_side"):
        get_compressor("keyframe", frame_side=0)


@pytest.mark.parametrize("model, encoded", [("tiny-qwen2.5-vl", 4), ("tiny-llava-onevision", 2)])
def test_keyframe_end_to_end_encodes_fewer_frames(model, encoded):
    answer = vidcompress.wrap(model, method="keyframe", retention=0.25).ask(
        repeated_video(), QUESTION, num_frames=8, max_new_tokens=3
    )
    stats = answer.stats
    # A A A A B B B B keeps frames 0 and 4; Qwen2.5-VL adds their group partners 1 and 5
    assert stats["frames_decoded"] == 8 and stats["frames_encoded"] == encoded
    assert stats["visual_tokens_out"] == target_count(tuple(stats["grid"]), 0.25)
    assert "frame_selection" in stats["ms"]


# -- F2C -------------------------------------------------------------------------------------------------------------
class StubScorer:
    """Frame ``t`` (every pixel equal to ``t``) embeds to ``FRAME_EMBEDDINGS[t]``; the question to ``(1, 1, 0)``."""

    FRAME_EMBEDDINGS = torch.tensor(
        [[0.0, 0.0, 1.0]] * 2 + [[0.0, 1.0, 0.0]] + [[0.0, 0.0, 1.0]] * 2 + [[1.0, 0.2, 0.0]] * 2 + [[0.0, 0.0, 1.0]]
    )

    def embed_frames(self, frames: np.ndarray) -> torch.Tensor:
        return self.FRAME_EMBEDDINGS[torch.from_numpy(frames[:, 0, 0, 0].astype(np.int64))]

    def embed_text(self, text: str) -> torch.Tensor:
        return torch.tensor([1.0, 1.0, 0.0])


def test_f2c_anchors_are_relevant_and_diverse():
    """Relevance cos(frame, question): frames 5 and 6 0.832 (identical), frame 2 0.707, the rest 0. Normalised:
    1, 1, 0.85, 0. MMR (λ 0.5) after frame 5: frame 6 scores 0.5 - 0.5·1 = 0, frame 2 scores
    0.5·0.85 - 0.5·cos(e2, e5) = 0.425 - 0.098 = 0.33, so the anchors are 5 and 2; pure relevance takes 5 and 6."""
    frames = solid(list(range(8)), size=28)
    params = dict(scorer=StubScorer(), budget=0.25, clip_length=1, trade_resolution=False)
    selection = get_compressor("f2c", **params).select_frames(frames, np.arange(8.0), QUESTION)
    assert selection.indices.tolist() == [2, 5] and selection.size is None
    assert selection.scores[5] == pytest.approx(1.2 / np.sqrt(1.04 * 2), abs=1e-6)
    relevance_only = get_compressor("f2c", **params, mmr_lambda=1.0).select_frames(frames, np.arange(8.0), QUESTION)
    assert relevance_only.indices.tolist() == [5, 6]


def test_f2c_trades_resolution_for_clip_length():
    """budget 0.25 of 8 frames = 2 anchors (5, 2); clips of 4 around them: [3, 6] and [0, 3] -> 7 frames; area
    2 / 7 -> side 112 · 0.535 = 59.9, floored to 56 px."""
    frames = solid(list(range(8)))
    f2c = get_compressor("f2c", scorer=StubScorer(), budget=0.25, clip_length=4)
    selection = f2c.select_frames(frames, np.arange(8.0), QUESTION)
    assert selection.indices.tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert selection.size == (56, 56)


def test_clip_expansion_and_traded_size():
    assert expand_to_clips(np.array([5]), 8, 4, 1).tolist() == [3, 4, 5, 6]
    assert expand_to_clips(np.array([0, 7]), 8, 4, 1).tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    assert expand_to_clips(np.array([5]), 8, 4, 2).tolist() == [2, 3, 4, 5]  # groups 1 and 2 around group 2
    assert expand_to_clips(np.array([2]), 3, 8, 1).tolist() == [0, 1, 2]
    assert traded_size(112, 224, 0.25, 28) == (56, 112)
    assert traded_size(112, 112, 0.01, 28) == (28, 28)
    assert traded_size(112, 112, 1.0, 28) is None


def test_f2c_parameters_are_checked():
    with pytest.raises(ValueError, match="input retention is 1.0"):
        get_compressor("f2c", retention=0.5)
    with pytest.raises(ValueError, match="budget"):
        get_compressor("f2c", budget=0.0)
    with pytest.raises(ValueError, match="clip_length"):
        get_compressor("f2c", clip_length=0)
    with pytest.raises(ValueError, match="scorer"):
        get_compressor("f2c", scorer=42)
    with pytest.raises(ValueError, match="needs a frame scorer"):
        get_compressor("f2c").select_frames(solid([0, 1]), np.arange(2.0), QUESTION)


@pytest.fixture(scope="module")
def tiny_clip() -> ContrastiveScorer:
    """A random-weight CLIP built offline (word-level tokenizer, 28 px images)."""
    tokenizer = word_tokenizer([])
    vocab = tokenizer.get_vocab()
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=32, eos_token_id=vocab["[EOS]"], pad_token_id=vocab["[PAD]"],
                bos_token_id=vocab["[BOS]"])
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=28,
                  patch_size=14)
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    images = CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    return ContrastiveScorer(model, CLIPProcessor(image_processor=images, tokenizer=tokenizer))


def test_contrastive_scorer_embeds_frames_and_text(tiny_clip, frames):
    embeddings = tiny_clip.embed_frames(frames)
    assert embeddings.shape == (8, 16) and torch.isfinite(embeddings).all()
    assert tiny_clip.embed_text(QUESTION).shape == (16,)
    selection = get_compressor("f2c", scorer=tiny_clip).select_frames(frames, np.arange(8.0), QUESTION)
    again = get_compressor("f2c", scorer=tiny_clip).select_frames(frames, np.arange(8.0), QUESTION)
    assert np.array_equal(selection.indices, again.indices) and selection.size == again.size  # deterministic


@pytest.mark.parametrize("model", TINY)
def test_f2c_end_to_end(model, tiny_clip, frames):
    alone = vidcompress.wrap(model, method="f2c", scorer=tiny_clip, budget=0.25, clip_length=2,
                             trade_resolution=model == TINY[0]).ask(frames, QUESTION, num_frames=8, max_new_tokens=3)
    assert alone.stats["frames_decoded"] == 8 and alone.stats["frames_encoded"] < 8
    assert alone.stats["visual_tokens_out"] == alone.stats["visual_tokens_in"]
    chained = vidcompress.wrap(model, method="f2c+divprune", retention=0.25, scorer=tiny_clip).ask(
        frames, QUESTION, num_frames=8, max_new_tokens=3
    )
    stats = chained.stats
    assert stats["visual_tokens_out"] == target_count(tuple(stats["grid"]), 0.25)
    assert stats["frames_encoded"] <= 8


# -- composition -----------------------------------------------------------------------------------------------------
def test_frame_selector_yields_its_token_stage_in_a_chain():
    chain = get_compressor("keyframe+mmr", retention=0.25)
    assert chain.stage("frame").name == "keyframe" and chain.stage("token").name == "mmr"
    assert chain.stage("token").retention == 0.25 and chain.stage("frame").retention == 1.0
    with pytest.raises(ValueError, match="both provide a token stage"):
        get_compressor("uniform+mmr")


@pytest.mark.parametrize("model", TINY)
@pytest.mark.parametrize("method, params", [("keyframe+mmr", {}), ("mmr+fastv", {"layer": 1})])
def test_chains_end_to_end(model, method, params):
    stats = vidcompress.wrap(model, method=method, retention=0.25, **params).ask(
        repeated_video(), QUESTION, num_frames=8, max_new_tokens=3
    ).stats
    assert stats["visual_tokens_out"] == target_count(tuple(stats["grid"]), 0.25)
    if method == "keyframe+mmr":
        assert stats["frames_encoded"] < stats["frames_decoded"]
    else:
        assert stats["frames_encoded"] == 8 and stats["llm_stage"]["layer"] == 1

"""The accuracy test-bed: generator, vocabulary, training inputs, shipped micro model and evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import vidcompress
from vidcompress import target_count
from vidcompress.testbed import evaluate as tb_eval
from vidcompress.testbed.generator import (
    BACKGROUND_COLOURS,
    COUNT_WORDS,
    DIRECTIONS,
    FAMILIES,
    FRAMES,
    OBJECT_COLOURS,
    SHAPES,
    SIZE,
    TEST_SEEDS,
    TESTBED_VERSION,
    VALIDATION_SEEDS,
    ZONES,
    answer_choices,
    make_sample,
    question_words,
    shape_mask,
    split_seeds,
    train_seeds,
)
from vidcompress.testbed import model as tb_model
from vidcompress.testbed.model import build_testbed_model
from vidcompress.testbed.training import (
    PromptBuilder,
    answer_logits,
    register_block_attention,
    video_patches,
    vision_plan,
)

SEEDS = range(60)  # 12 items of each family


def samples_of(family: str) -> list:
    return [make_sample(seed) for seed in SEEDS if FAMILIES[seed % 5] == family]


def colour_mask(video: np.ndarray, colour: str) -> np.ndarray:
    """``[T, H, W]`` pixels exactly of the object colour ``colour``."""
    return (video == np.asarray(OBJECT_COLOURS[colour], dtype=np.uint8)).all(-1)


@pytest.fixture(scope="module")
def shipped():
    if not tb_model.testbed_available():  # the weights are part of the package: their absence is a failure, never a skip
        pytest.fail("vidcompress/testbed/weights/ holds no trained micro model; run scripts/train_testbed.py")
    return tb_model.load_testbed_model("cpu")


# -- generator ----------------------------------------------------------------------------------------------------
def test_same_seed_same_sample_and_seeds_differ():
    for seed in (0, 3, 101):
        a, b = make_sample(seed), make_sample(seed)
        assert np.array_equal(a.video, b.video) and (a.question, a.answer) == (b.question, b.answer)
    assert not np.array_equal(make_sample(0).video, make_sample(5).video)


def test_video_format_and_every_family_produced():
    families = set()
    for seed in range(10):
        sample = make_sample(seed)
        assert sample.video.shape == (FRAMES, SIZE, SIZE, 3) and sample.video.dtype == np.uint8
        assert sample.family == FAMILIES[seed % 5]
        assert (sample.question, sample.answer) in sample.questions
        families.add(sample.family)
    assert families == set(FAMILIES)


def test_every_question_kind_appears_as_designated_question():
    kinds = {" ".join(make_sample(seed).question.split()[:2]) for seed in range(100)}
    assert kinds == {
        "how many", "what colour", "what shape", "which shape", "which colour", "which appeared", "which way",
        "where does",
    }


def test_splits_are_fixed_and_disjoint():
    assert TESTBED_VERSION == "1.0"
    assert TEST_SEEDS == tuple(range(500)) and VALIDATION_SEEDS == tuple(range(500, 1000))
    train = set(train_seeds(1000))
    assert not train & set(TEST_SEEDS) and not train & set(VALIDATION_SEEDS)
    assert split_seeds("test") == TEST_SEEDS
    with pytest.raises(ValueError, match="split"):
        split_seeds("train")


def test_test_split_is_pinned():
    """Changing what a test seed produces must come with a new TESTBED_VERSION (and new pins here)."""
    pinned = [
        ("what colour is the triangle ?", "orange", 81903744),
        ("which colour flashed ?", "red", 100946616),
        ("which appeared first , the orange or the blue object ?", "blue", 99754318),
        ("where does the white object end ?", "top", 85885132),
        ("what colour was the background before the cut ?", "gray", 88821202),
    ]
    for seed, (question, answer, checksum) in enumerate(pinned):
        sample = make_sample(seed)
        assert (sample.question, sample.answer, int(sample.video.astype(np.int64).sum())) == (question, answer, checksum)


def test_bad_seed_raises():
    for seed in (-1, 1.5, True):
        with pytest.raises(ValueError, match="seed"):
            make_sample(seed)


def test_shape_masks_by_hand():
    circle = shape_mask("circle", 50, 50, 3)
    assert circle.sum() == 29  # lattice points with x^2 + y^2 <= 9
    square = shape_mask("square", 50, 50, 4)  # half side round(4 * 0.85) = 3
    assert square.sum() == 49 and square[47, 47] and not square[46, 50]
    cross = shape_mask("cross", 50, 50, 6)  # arms of half width 2: two 13x5 bars sharing a 5x5 centre
    assert cross.sum() == 2 * 13 * 5 - 25
    triangle = shape_mask("triangle", 50, 50, 4)
    assert triangle[46, 50] and not triangle[46, 51] and triangle[54, 46] and triangle[54, 54]
    with pytest.raises(ValueError, match="shape"):
        shape_mask("hexagon", 0, 0, 3)


# -- answers derivable from the pixels ----------------------------------------------------------------------------
def test_static_count_colour_and_shape_from_pixels():
    for sample in samples_of("static"):
        present = [c for c in OBJECT_COLOURS if colour_mask(sample.video, c).any(axis=(1, 2)).all()]
        assert len(present) == len(sample.sprites)
        for question, answer in sample.questions:
            if question.startswith("how many"):
                assert answer == COUNT_WORDS[len(present) - 1]
            elif question.startswith("what colour is the"):  # the pixels of the answer colour form that shape
                assert _shape_of(colour_mask(sample.video[0], answer)) == question.split()[4]
            else:  # "what shape is the <colour> object ?": the pixels of that colour form exactly that shape
                pixels = colour_mask(sample.video[0], question.split()[4])
                assert _shape_of(pixels) == answer


def _shape_of(pixels: np.ndarray) -> str:
    """The one shape (any radius 9-12) whose mask equals ``pixels`` when centred on their bounding box."""
    ys, xs = np.nonzero(pixels)
    cx = (xs.min() + xs.max()) // 2
    matches = {
        shape
        for shape in SHAPES
        for radius in range(9, 13)
        for cy in range(ys.min(), ys.max() + 1)
        if np.array_equal(shape_mask(shape, int(cx), int(cy), radius), pixels)
    }
    assert len(matches) == 1, matches
    return matches.pop()


def test_flashed_object_is_visible_in_one_to_three_consecutive_frames():
    for sample in samples_of("brief"):
        answers = dict(sample.questions)
        frames = np.flatnonzero(colour_mask(sample.video, answers["which colour flashed ?"]).any(axis=(1, 2)))
        assert 1 <= len(frames) <= 3 and np.array_equal(frames, np.arange(frames[0], frames[-1] + 1))
        assert _shape_of(colour_mask(sample.video[frames[0]], answers["which colour flashed ?"])) == answers[
            "which shape flashed ?"
        ]
        others = [c for c in OBJECT_COLOURS if colour_mask(sample.video, c).any(axis=(1, 2)).all()]
        assert len(others) == len(sample.sprites) - 1  # the distractors are there throughout


def test_order_answer_is_the_colour_seen_first():
    for sample in samples_of("order"):
        for question, answer in sample.questions:
            named = [w for w in question.split() if w in OBJECT_COLOURS]
            onsets = {c: int(np.argmax(colour_mask(sample.video, c).any(axis=(1, 2)))) for c in named}
            assert onsets[named[0]] != onsets[named[1]]
            expected = min(onsets, key=onsets.get) if "first" in question else max(onsets, key=onsets.get)
            assert answer == expected


def test_motion_direction_and_end_zone_from_pixels():
    occluded = 0
    for sample in [make_sample(seed) for seed in range(3, 200, 5)]:
        answers = dict(sample.questions)
        colour = next(q.split()[4] for q in answers if q.startswith("which way"))
        mask = colour_mask(sample.video, colour)
        centres = []
        for frame in (0, FRAMES - 1):
            ys, xs = np.nonzero(mask[frame])
            centres.append(np.array([(xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2]))
        move = centres[1] - centres[0]
        axis = int(np.argmax(np.abs(move)))
        step = tuple(int(np.sign(move[i])) if i == axis else 0 for i in range(2))
        assert DIRECTIONS[answers[f"which way does the {colour} object move ?"]] == step
        zone = min(ZONES, key=lambda z: np.linalg.norm(centres[1] - np.asarray(ZONES[z])))
        assert zone == answers[f"where does the {colour} object end ?"]
        if sample.occluder is not None:
            x0, y0, x1, y1 = sample.occluder
            assert (sample.video[:, y0:y1, x0:x1] == 150).all()
            hidden = mask.sum(axis=(1, 2))
            occluded += int(hidden.min() < hidden.max())  # the bar hides part of the mover on its way
    assert occluded > 0


def test_background_colour_before_and_after_the_cut_from_pixels():
    for sample in samples_of("scene"):
        answers = dict(sample.questions)
        assert 8 <= sample.cut <= 24
        for frames, question in (
            (range(0, sample.cut), "what colour was the background before the cut ?"),
            (range(sample.cut, FRAMES), "what colour was the background after the cut ?"),
        ):
            for frame in frames:
                corner = sample.video[frame, :8, :8].reshape(-1, 3).astype(float).mean(0)  # slots leave corners free
                nearest = min(BACKGROUND_COLOURS, key=lambda c: np.abs(corner - BACKGROUND_COLOURS[c]).sum())
                assert nearest == answers[question]
        assert answers["what colour was the background before the cut ?"] != answers[
            "what colour was the background after the cut ?"
        ]


def test_answer_choices_and_chance():
    assert answer_choices("which way does the red object move ?") == tuple(DIRECTIONS)
    assert answer_choices("which appeared first , the red or the blue object ?") == ("red", "blue")
    samples = [make_sample(seed) for seed in (2, 4)]  # an order question (1/2) and a scene question (1/6)
    chance = tb_eval.chance_accuracy(samples)
    assert chance["order"] == pytest.approx(0.5) and chance["scene"] == pytest.approx(1 / 6)
    assert chance["overall"] == pytest.approx((0.5 + 1 / 6) / 2)
    with pytest.raises(ValueError, match="question"):
        answer_choices("why ?")


# -- vocabulary and training inputs -------------------------------------------------------------------------------
def test_tokenizer_covers_every_question_and_answer_word():
    _, processor = build_testbed_model()
    tokenizer = processor.tokenizer
    vocab = tokenizer.get_vocab()
    assert set(question_words()) <= set(vocab)
    for seed in range(200):
        for question, answer in make_sample(seed).questions:
            ids = tokenizer(question + " " + answer, add_special_tokens=False)["input_ids"]
            assert tokenizer.unk_token_id not in ids, (question, answer)
            assert len(tokenizer(answer, add_special_tokens=False)["input_ids"]) == 1  # one-token answers


def _training_inputs(model, processor, seeds) -> tuple[list, torch.Tensor, torch.Tensor, object]:
    """The test-bed items of ``seeds`` and what the training forward takes for them: pixels, grid, prompt batch."""
    samples = [make_sample(seed) for seed in seeds]
    pixels, grid = video_patches(processor, torch.from_numpy(np.stack([s.video for s in samples])))
    batch = PromptBuilder(processor, model.config).batch([s.question for s in samples], [s.answer for s in samples])
    return samples, pixels, grid, batch


def test_training_inputs_are_the_processor_outputs():
    model, processor = build_testbed_model()
    samples = [make_sample(seed) for seed in range(2)]
    pixels, grid = video_patches(processor, torch.from_numpy(np.stack([s.video for s in samples])))
    prompts = PromptBuilder(processor, model.config)
    reference = processor(
        text=[prompts.processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": s.question}]}],
            add_generation_prompt=True, tokenize=False) for s in samples],
        videos=[s.video for s in samples],
        video_metadata=[{"total_num_frames": FRAMES, "fps": 2.0}] * 2,
        do_sample_frames=False,
        return_tensors="pt",
        padding=True,
    )
    assert torch.equal(pixels, reference["pixel_values_videos"])
    assert torch.equal(grid, reference["video_grid_thw"])
    for index, sample in enumerate(samples):
        ids, positions, _ = prompts.prompt(sample.question)
        row = reference["input_ids"][index][reference["attention_mask"][index].bool()]
        assert torch.equal(ids, row)
        assert positions.shape == (3, len(ids))


def test_batch_labels_only_on_answer_tokens():
    model, processor = build_testbed_model()
    prompts = PromptBuilder(processor, model.config)
    batch = prompts.batch(["which shape flashed ?", "which way does the red object move ?"], ["cross", "left"])
    vocab = processor.tokenizer.get_vocab()
    for row, answer in enumerate(("cross", "left")):
        labelled = batch.labels[row][batch.labels[row] != -100].tolist()
        assert labelled == [vocab[answer], vocab["[EOS]"]]
        assert batch.input_ids[row, batch.answer_start[row]] == vocab[answer]
    assert batch.attention_mask[1].all() and not batch.attention_mask[0].all()  # the shorter prompt is left-padded


def test_block_attention_equals_default_attention():
    model, processor = build_testbed_model(seed=1)
    _, pixels, grid, batch = _training_inputs(model, processor, range(2))
    with torch.no_grad():
        loss, logits = answer_logits(model, batch, pixels, grid)
        register_block_attention(model)
        block_loss, block_logits = answer_logits(model, batch, pixels, grid)
    model.model.visual.config._attn_implementation = "sdpa"
    assert torch.allclose(logits, block_logits, atol=1e-5) and torch.allclose(loss, block_loss, atol=1e-6)


def test_training_forward_equals_the_models_own_forward():
    """The training path (own vision call with precomputed bookkeeping + splice) == the model given pixels."""
    model, processor = build_testbed_model(seed=2)
    _, pixels, grid, batch = _training_inputs(model, processor, range(3))
    with torch.no_grad():
        stock = model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            pixel_values_videos=pixels,
            video_grid_thw=grid,
            use_cache=False,
        ).logits
        for plan in (None, vision_plan(model, grid)):
            _, logits = answer_logits(model, batch, pixels, grid, plan)
            assert torch.allclose(logits, stock[torch.arange(3), batch.answer_start - 1], atol=1e-5)


# -- the shipped micro model --------------------------------------------------------------------------------------
def test_training_forward_predicts_what_ask_generates(shipped):
    model, processor = shipped
    samples, pixels, grid, batch = _training_inputs(model, processor, range(5))
    with torch.no_grad():
        _, logits = answer_logits(model, batch, pixels, grid)
    answers = vidcompress.wrap(model, processor=processor).ask_batch(
        [s.video for s in samples], [s.question for s in samples], max_new_tokens=1
    )
    assert logits.argmax(-1).tolist() == [a.token_ids[0] for a in answers]


def test_uncompressed_accuracy_far_above_chance_on_fixed_slice(shipped):
    """CI guard for the adapter path: 25 fixed test items (5 per family), uncompressed, through wrap().ask_batch.

    The shipped model scores on this slice: overall 0.84 (chance 0.24); static 0.6, brief 0.8, order 1.0, motion 0.8,
    scene 1.0 (weights/README.md). Thresholds sit one or two items per family below; scene and order questions need
    the temporal positions, so scrambled positions fail it (pinned by the next test).
    """
    model, processor = shipped
    report = tb_eval.evaluate_methods(["none"], [1.0], model=model, processor=processor, limit=25, batch_size=25)
    accuracy = report["results"][0]["accuracy"]
    assert report["chance"]["overall"] < 0.3
    assert accuracy["overall"] >= 0.72, accuracy
    floors = {"static": 0.4, "brief": 0.6, "order": 0.8, "motion": 0.6, "scene": 0.8}
    assert all(accuracy[family] >= floor for family, floor in floors.items()), accuracy


def test_scrambled_video_positions_fail_the_scene_guard(shipped):
    """The negative control of the CI guard: shuffling the M-RoPE positions of the video tokens breaks scenes."""
    model, processor = shipped
    samples, pixels, grid, batch = _training_inputs(model, processor, range(4, 100, 5))  # 20 scene items
    truth = batch.input_ids[torch.arange(len(samples)), batch.answer_start]
    with torch.no_grad():
        _, logits = answer_logits(model, batch, pixels, grid)
        right = (logits.argmax(-1) == truth).float().mean().item()
        generator = torch.Generator().manual_seed(0)
        for row in range(len(samples)):
            video = (batch.input_ids[row] == model.config.video_token_id).nonzero().squeeze(1)
            shuffled = video[torch.randperm(len(video), generator=generator)]
            batch.position_ids[:, row, video] = batch.position_ids[:, row, shuffled].clone()
        _, logits = answer_logits(model, batch, pixels, grid)
        scrambled = (logits.argmax(-1) == truth).float().mean().item()
    assert right >= 0.9 and scrambled < 0.8, (right, scrambled)


@pytest.mark.parametrize("retention", [0.5, 0.25])
def test_compressed_ask_on_the_testbed_model_keeps_target_count(shipped, retention):
    model, processor = shipped
    sample = make_sample(1)
    answer = vidcompress.wrap(model, method="uniform", retention=retention, processor=processor).ask(
        sample.video, sample.question, max_new_tokens=2
    )
    assert answer.stats["visual_tokens_out"] == target_count(tuple(answer.stats["grid"]), retention)
    assert answer.stats["grid"] == [16, 4, 4]


# -- evaluation ---------------------------------------------------------------------------------------------------
def test_eval_command_writes_json_and_plot_and_skips_unrunnable(shipped, tmp_path, monkeypatch):

    monkeypatch.setattr(tb_model, "load_testbed_model", lambda device=None: shipped)
    out = tmp_path / "r.json"
    code = tb_eval.eval_command(
        ["--suite", "testbed", "--methods", "none,uniform", "--retention", "1.0,0.5", "--limit", "5", "--json", str(out)]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert [(r["method"], r["retention"]) for r in report["results"]] == [("none", 1.0), ("uniform", 1.0), ("uniform", 0.5)]
    assert [(s["method"], s["retention"]) for s in report["skipped"]] == [("none", 0.5)]
    assert report["results"][2]["visual_tokens_out"] == target_count((16, 4, 4), 0.5)
    assert set(report["results"][0]["accuracy"]) == {*FAMILIES, "overall"}
    assert out.with_suffix(".png").stat().st_size > 0


def test_layer_defaults_past_the_model_depth_are_scaled_to_it():
    assert tb_eval.depth_scaled_layers("flashvid", 4) == {"llm_layer": 3}  # 20 of 28 -> round(2.86)
    assert tb_eval.depth_scaled_layers("todre", 4) == {"layer": 3}  # 18 of 28 -> round(2.57)
    assert tb_eval.depth_scaled_layers("todre", 2) == {"layer": 1}  # clamped to num_layers - 1
    assert tb_eval.depth_scaled_layers("dycoke", 4) == {}  # decode layer 3 fits a 4-layer model: kept
    assert tb_eval.depth_scaled_layers("uniform", 4) == {}
    assert all(tb_eval.depth_scaled_layers(name, 28) == {} for name in ("flashvid", "todre", "holitom", "fastv"))


def test_eval_skips_a_method_that_needs_an_input_the_suite_lacks(shipped):
    """f2c selects frames with a CLIP / SigLIP scorer that the test-bed does not ship: listed as skipped, not fatal."""
    model, processor = shipped
    report = tb_eval.evaluate_methods(["f2c", "uniform"], [1.0], model=model, processor=processor, limit=2, batch_size=2)
    assert [r["method"] for r in report["results"]] == ["uniform"]
    assert [(s["method"], s["retention"]) for s in report["skipped"]] == [("f2c", 1.0)]
    assert "scorer" in report["skipped"][0]["reason"]


def test_evaluate_rejects_bad_arguments(shipped):
    model, processor = shipped
    with pytest.raises(ValueError, match="retention"):
        tb_eval.evaluate_methods(["uniform"], [1.5], model=model, processor=processor, limit=1)
    with pytest.raises(ValueError, match="limit"):
        tb_eval.load_split("test", limit=0)
    with pytest.raises(SystemExit):
        tb_eval.eval_command(["--retention", "0,0.5"])


def test_first_word():
    assert tb_eval.first_word(" red circle") == "red" and tb_eval.first_word("") == ""

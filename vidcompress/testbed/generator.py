"""Seeded synthetic videos with short-answer questions: the accuracy test-bed's data.

Every video is ``FRAMES`` frames of ``SIZE``x``SIZE`` RGB: coloured shapes on a textured background. The question
family is fixed by the seed (``seed % 5``) so every split is balanced; each family stresses one thing that token
compression can lose:

* ``static`` — colour / shape / count of objects present in every frame (spatial detail);
* ``brief`` — an object visible in only 1-3 consecutive frames ("which shape flashed ?"; temporal needles);
* ``order`` — which of two objects appeared first / last (temporal positions after merging);
* ``motion`` — direction of a moving object and where it ends; a grey bar may occlude the middle of its path
  (fine spatial positions);
* ``scene`` — background colour before / after a scene cut (segmentation).

Object colours are saturated (one channel >= 200) and drawn with hard edges, backgrounds are muted (every channel
<= 140): an object's pixels are exactly its palette colour, so each answer can be checked from the frames alone.

Splits are seed ranges: :data:`TEST_SEEDS` (fixed; bump :data:`TESTBED_VERSION` whenever the generator changes what
a seed produces), :data:`VALIDATION_SEEDS`, and training seeds from :func:`train_seeds`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "TESTBED_VERSION",
    "FRAMES",
    "SIZE",
    "FAMILIES",
    "OBJECT_COLOURS",
    "BACKGROUND_COLOURS",
    "SHAPES",
    "COUNT_WORDS",
    "DIRECTIONS",
    "ZONES",
    "TEST_SEEDS",
    "VALIDATION_SEEDS",
    "Sprite",
    "Sample",
    "make_sample",
    "train_seeds",
    "split_seeds",
    "question_words",
    "answer_choices",
    "shape_mask",
]

TESTBED_VERSION = "1.0"
FRAMES = 32
SIZE = 112
FAMILIES = ("static", "brief", "order", "motion", "scene")

OBJECT_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 240),
    "yellow": (240, 220, 40),
    "white": (245, 245, 245),
    "orange": (250, 140, 20),
    "purple": (160, 60, 220),
    "cyan": (40, 220, 230),
}
BACKGROUND_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (110, 40, 40),
    "green": (40, 100, 45),
    "blue": (40, 50, 115),
    "yellow": (110, 100, 35),
    "purple": (85, 40, 105),
    "gray": (80, 80, 80),
}
OCCLUDER_COLOUR = (150, 150, 150)
TEXTURE_AMPLITUDE = 22
SHAPES = ("circle", "square", "triangle", "cross")
COUNT_WORDS = ("one", "two", "three", "four")
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
ZONES: dict[str, tuple[int, int]] = {"left": (24, 56), "right": (88, 56), "top": (56, 24), "bottom": (56, 88), "center": (56, 56)}
#: Centres where static objects stand (a 3x3 layout; jittered by a few pixels).
SLOTS = tuple((x, y) for y in (22, 56, 90) for x in (22, 56, 90))
CORNERS = ((20, 20), (92, 20), (20, 92), (92, 92))

TEST_SEEDS: tuple[int, ...] = tuple(range(500))
VALIDATION_SEEDS: tuple[int, ...] = tuple(range(500, 1000))
TRAIN_SEED_START = 100_000


@dataclass
class Sprite:
    """One object: its look, and per frame its centre and whether it is drawn."""

    shape: str
    colour: str
    radius: int
    centres: np.ndarray  # [FRAMES, 2] int (x, y)
    visible: np.ndarray  # [FRAMES] bool


@dataclass
class Sample:
    """One test-bed item: the video, its designated question and answer, and every valid question for training."""

    seed: int
    family: str
    video: np.ndarray  # uint8 [FRAMES, SIZE, SIZE, 3]
    question: str
    answer: str
    questions: list[tuple[str, str]]
    sprites: list[Sprite]
    backgrounds: list[str]  # background colour name of each frame
    cut: int | None = None  # first frame of the second scene
    occluder: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1 (exclusive)
    info: dict[str, object] = field(default_factory=dict)


def train_seeds(count: int, start: int = 0) -> list[int]:
    """``count`` training seeds; disjoint from the validation and test seeds."""
    return list(range(TRAIN_SEED_START + start, TRAIN_SEED_START + start + count))


def split_seeds(split: str) -> tuple[int, ...]:
    """Seeds of the fixed ``"test"`` or ``"validation"`` split."""
    if split == "test":
        return TEST_SEEDS
    if split == "validation":
        return VALIDATION_SEEDS
    raise ValueError(f"split must be 'test' or 'validation' (training seeds come from train_seeds), got {split!r}")


# -- drawing ------------------------------------------------------------------------------------------------------
_YY, _XX = np.mgrid[0:SIZE, 0:SIZE]


def shape_mask(shape: str, cx: int, cy: int, radius: int) -> np.ndarray:
    """Boolean ``[SIZE, SIZE]`` mask of ``shape`` centred at ``(cx, cy)`` with half-size ``radius``."""
    dx, dy = _XX - cx, _YY - cy
    if shape == "circle":
        return dx * dx + dy * dy <= radius * radius
    if shape == "square":
        side = int(round(radius * 0.85))
        return (np.abs(dx) <= side) & (np.abs(dy) <= side)
    if shape == "triangle":  # apex up
        return (dy >= -radius) & (dy <= radius) & (np.abs(dx) * 2 <= dy + radius)
    if shape == "cross":
        arm = max(2, radius // 3)
        return ((np.abs(dx) <= radius) & (np.abs(dy) <= arm)) | ((np.abs(dy) <= radius) & (np.abs(dx) <= arm))
    raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")


def _background(rng: np.random.Generator, colour: str) -> np.ndarray:
    """A textured ``[SIZE, SIZE, 3]`` int background: stripes, checks or blotches around a muted base colour."""
    kind = rng.integers(3)
    if kind == 0:
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(8, 20)
        phase = (_XX * np.cos(angle) + _YY * np.sin(angle)) * 2 * np.pi / period
        texture = np.sin(phase)
    elif kind == 1:
        cell = int(rng.integers(7, 15))
        texture = (((_XX // cell) + (_YY // cell)) % 2) * 2.0 - 1.0
    else:
        coarse = rng.uniform(-1, 1, size=(8, 8))
        texture = np.kron(coarse, np.ones((SIZE // 8 + 1, SIZE // 8 + 1)))[:SIZE, :SIZE]
    base = np.asarray(BACKGROUND_COLOURS[colour], dtype=np.int32)
    return base + np.rint(texture * TEXTURE_AMPLITUDE).astype(np.int32)[..., None]


def _render(
    backgrounds: list[np.ndarray], frame_scene: np.ndarray, sprites: list[Sprite], occluder: tuple | None
) -> np.ndarray:
    video = np.stack([backgrounds[s] for s in frame_scene]).astype(np.int32)
    for sprite in sprites:
        colour = np.asarray(OBJECT_COLOURS[sprite.colour], dtype=np.int32)
        for frame in np.flatnonzero(sprite.visible):
            cx, cy = sprite.centres[frame]
            video[frame][shape_mask(sprite.shape, int(cx), int(cy), sprite.radius)] = colour
    if occluder is not None:
        x0, y0, x1, y1 = occluder
        video[:, y0:y1, x0:x1] = OCCLUDER_COLOUR
    return np.clip(video, 0, 255).astype(np.uint8)


def _still(x: int, y: int) -> np.ndarray:
    return np.tile(np.array([[x, y]], dtype=np.int64), (FRAMES, 1))


def _frames(start: int, stop: int) -> np.ndarray:
    visible = np.zeros(FRAMES, dtype=bool)
    visible[start:stop] = True
    return visible


def _pick(rng: np.random.Generator, options, count: int) -> list:
    """``count`` distinct items of ``options``, in random order."""
    return [options[i] for i in rng.permutation(len(options))[:count]]


def _jitter(rng: np.random.Generator, point: tuple[int, int], amount: int = 3) -> tuple[int, int]:
    return int(point[0] + rng.integers(-amount, amount + 1)), int(point[1] + rng.integers(-amount, amount + 1))


def _radius(rng: np.random.Generator) -> int:
    return int(rng.integers(9, 13))


def _static_sprites(rng: np.random.Generator, count: int, colours: list[str], shapes: list[str]) -> list[Sprite]:
    slots = _pick(rng, SLOTS, count)
    sprites = []
    for slot, colour, shape in zip(slots, colours, shapes):
        x, y = _jitter(rng, slot)
        sprites.append(Sprite(shape, colour, _radius(rng), _still(x, y), np.ones(FRAMES, dtype=bool)))
    return sprites


# -- families -----------------------------------------------------------------------------------------------------
def _static(rng: np.random.Generator) -> dict:
    count = int(rng.integers(1, 5))
    colours = _pick(rng, list(OBJECT_COLOURS), count)
    shapes = _pick(rng, list(SHAPES), count)
    sprites = _static_sprites(rng, count, colours, shapes)
    questions = [("how many objects are there ?", COUNT_WORDS[count - 1])]
    questions += [(f"what colour is the {s.shape} ?", s.colour) for s in sprites]
    questions += [(f"what shape is the {s.colour} object ?", s.shape) for s in sprites]
    return dict(sprites=sprites, questions=questions, info={"count": count})


def _brief(rng: np.random.Generator) -> dict:
    distractors = int(rng.integers(1, 3))
    colours = _pick(rng, list(OBJECT_COLOURS), distractors + 1)
    shapes = _pick(rng, list(SHAPES), distractors + 1)
    sprites = _static_sprites(rng, distractors + 1, colours, shapes)
    duration = int(rng.integers(1, 4))
    start = int(rng.integers(2, FRAMES - 2 - duration + 1))
    flash = sprites[-1]
    flash.visible = _frames(start, start + duration)
    questions = [("which shape flashed ?", flash.shape), ("which colour flashed ?", flash.colour)]
    return dict(sprites=sprites, questions=questions, info={"flash_frames": list(range(start, start + duration))})


def _order(rng: np.random.Generator) -> dict:
    extra = int(rng.integers(0, 2))
    colours = _pick(rng, list(OBJECT_COLOURS), 2 + extra)
    shapes = [SHAPES[int(i)] for i in rng.integers(0, len(SHAPES), size=2 + extra)]
    sprites = _static_sprites(rng, 2 + extra, colours, shapes)
    first_at = int(rng.integers(0, 13))
    second_at = int(rng.integers(first_at + 6, 27))
    sprites[0].visible = _frames(first_at, FRAMES)
    sprites[1].visible = _frames(second_at, FRAMES)
    first, second = sprites[0].colour, sprites[1].colour
    named = [first, second] if rng.integers(2) else [second, first]
    pair = f"the {named[0]} or the {named[1]} object ?"
    questions = [(f"which appeared first , {pair}", first), (f"which appeared last , {pair}", second)]
    return dict(sprites=sprites, questions=questions, info={"appear": {first: first_at, second: second_at}})


def _segment_distance(point: tuple[int, int], a: np.ndarray, b: np.ndarray) -> float:
    p, ab = np.asarray(point, dtype=float), (b - a).astype(float)
    t = np.clip(np.dot(p - a, ab) / max(np.dot(ab, ab), 1e-9), 0.0, 1.0)
    return float(np.linalg.norm(p - (a + t * ab)))


def _motion(rng: np.random.Generator) -> dict:
    while True:
        zone = _pick(rng, list(ZONES), 1)[0]
        direction = _pick(rng, list(DIRECTIONS), 1)[0]
        distance = int(rng.integers(36, 49))
        end = np.asarray(_jitter(rng, ZONES[zone], 4))
        start = end - np.asarray(DIRECTIONS[direction]) * distance
        if start.min() >= 14 and start.max() <= SIZE - 14:
            break
    move_from, move_to = int(rng.integers(0, 9)), int(rng.integers(24, FRAMES))
    progress = np.clip((np.arange(FRAMES) - move_from) / (move_to - move_from), 0.0, 1.0)
    centres = np.rint(start[None] + progress[:, None] * (end - start)[None]).astype(np.int64)
    colours = _pick(rng, list(OBJECT_COLOURS), 2)
    shapes = [SHAPES[int(i)] for i in rng.integers(0, len(SHAPES), size=2)]
    mover = Sprite(shapes[0], colours[0], _radius(rng), centres, np.ones(FRAMES, dtype=bool))
    sprites = [mover]
    free = [c for c in CORNERS if _segment_distance(c, start, end) > 32]
    if free and rng.integers(2):
        x, y = _jitter(rng, free[int(rng.integers(len(free)))], 2)
        sprites.append(Sprite(shapes[1], colours[1], _radius(rng), _still(x, y), np.ones(FRAMES, dtype=bool)))
    occluder = None
    if rng.integers(2):  # a grey bar across the middle of the path: the mover passes behind it
        mx, my = (start + end) // 2
        if DIRECTIONS[direction][0]:
            occluder = (int(mx) - 4, int(my) - 18, int(mx) + 4, int(my) + 18)
        else:
            occluder = (int(mx) - 18, int(my) - 4, int(mx) + 18, int(my) + 4)
    colour = mover.colour
    questions = [
        (f"which way does the {colour} object move ?", direction),
        (f"where does the {colour} object end ?", zone),
    ]
    return dict(sprites=sprites, questions=questions, occluder=occluder, info={"start": start.tolist(), "end": end.tolist()})


def _scene(rng: np.random.Generator) -> dict:
    before, after = _pick(rng, list(BACKGROUND_COLOURS), 2)
    cut = int(rng.integers(8, 25))
    sprites = []
    for first, last in ((0, cut), (cut, FRAMES)):
        count = int(rng.integers(1, 3))
        colours = _pick(rng, list(OBJECT_COLOURS), count)
        shapes = [SHAPES[int(i)] for i in rng.integers(0, len(SHAPES), size=count)]
        for sprite in _static_sprites(rng, count, colours, shapes):
            sprite.visible = _frames(first, last)
            sprites.append(sprite)
    questions = [
        ("what colour was the background after the cut ?", after),
        ("what colour was the background before the cut ?", before),
    ]
    return dict(sprites=sprites, questions=questions, scenes=[before, after], cut=cut)


_BUILDERS = {"static": _static, "brief": _brief, "order": _order, "motion": _motion, "scene": _scene}


def make_sample(seed: int) -> Sample:
    """The test-bed item of ``seed`` (deterministic; family ``FAMILIES[seed % 5]``)."""
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    family = FAMILIES[seed % len(FAMILIES)]
    rng = np.random.default_rng([seed, 7919])
    spec = _BUILDERS[family](rng)
    scenes = spec.get("scenes") or [_pick(rng, list(BACKGROUND_COLOURS), 1)[0]]
    cut = spec.get("cut")
    frame_scene = np.zeros(FRAMES, dtype=np.int64)
    if cut is not None:
        frame_scene[cut:] = 1
    textures = [_background(rng, colour) for colour in scenes]
    video = _render(textures, frame_scene, spec["sprites"], spec.get("occluder"))
    question, answer = spec["questions"][int(rng.integers(len(spec["questions"])))]
    return Sample(
        seed=seed,
        family=family,
        video=video,
        question=question,
        answer=answer,
        questions=spec["questions"],
        sprites=spec["sprites"],
        backgrounds=[scenes[s] for s in frame_scene],
        cut=cut,
        occluder=spec.get("occluder"),
        info=spec.get("info", {}),
    )


# -- vocabulary ---------------------------------------------------------------------------------------------------
def question_words() -> list[str]:
    """Every word that a question or an answer can contain (for the word-level tokenizer)."""
    words = set()
    templates = [
        "how many objects are there ?",
        "what colour is the shape ?",
        "what shape is the colour object ?",
        "which shape flashed ?",
        "which colour flashed ?",
        "which appeared first , the or object ?",
        "which appeared last",
        "which way does the object move ?",
        "where does the object end ?",
        "what colour was the background after the cut ?",
        "before",
    ]
    for template in templates:
        words.update(template.split())
    words.update(OBJECT_COLOURS, BACKGROUND_COLOURS, SHAPES, COUNT_WORDS, DIRECTIONS, ZONES)
    return sorted(words)


def answer_choices(question: str) -> tuple[str, ...]:
    """The answers a question of this kind can have (for chance accuracy)."""
    if question.startswith("how many"):
        return COUNT_WORDS
    if question.startswith("what colour is") or question.startswith("which colour"):
        return tuple(OBJECT_COLOURS)
    if question.startswith("what shape") or question.startswith("which shape"):
        return tuple(SHAPES)
    if question.startswith("which appeared"):
        return tuple(word for word in question.split() if word in OBJECT_COLOURS)
    if question.startswith("which way"):
        return tuple(DIRECTIONS)
    if question.startswith("where does"):
        return tuple(ZONES)
    if "background" in question:
        return tuple(BACKGROUND_COLOURS)
    raise ValueError(f"not a test-bed question: {question!r}")

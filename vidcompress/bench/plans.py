"""What a benchmark run measures: cases, and the plans that list them.

Consecutive cases of one (model, frames, group) with the same settings form a *comparison*
(:func:`comparisons`): they are timed interleaved, round by round (:mod:`.paired`).

* ``issue`` — the TTFT rows issue 6 must show, sized for one 9-minute H100 call: on Qwen2.5-VL-7B and LLaVA-OV-7B,
  at 32 and 64 frames, no compression, the ideal at 10 % and every token-stage method at 10 %.
* ``scaling`` — frame scaling and the memory limit, in a call of its own: no compression, the ideal and every
  token-stage method at 10 %, at 32 to 512 frames, with fewer rounds as the frame count grows.
* ``grid`` — every model x frames x method x retention given on the command line.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from vidcompress.registry import available_methods, method_info

from .measure import IDEAL, Settings

__all__ = [
    "Case",
    "ISSUE_MODELS",
    "ISSUE_RETENTION",
    "ISSUE_SETTINGS",
    "SCALING_FRAMES",
    "token_stage_methods",
    "issue_plan",
    "scaling_plan",
    "scaling_settings",
    "grid_plan",
    "comparisons",
]

ISSUE_MODELS = ("qwen2.5-vl-7b", "llava-ov-7b")
ISSUE_RETENTION = 0.1
# 2 warm-up + 12 timed rounds + 1 decode run of 18 configurations at 32 and 64 frames on both 7B models: about
# (2 + 12 + 1) x 35 s = 8.7 min with the last H100 run's per-run times (sdpa loop in Qwen's ViT), about half with
# the batched vision attention; the time budget cuts rounds (never below 3) if it runs long.
ISSUE_SETTINGS = Settings(warmup=2, runs=12, decode_tokens=8, decode_runs=1)
SCALING_FRAMES = (32, 64, 128, 256, 512)


@dataclass(frozen=True)
class Case:
    """One configuration to time."""

    model: str
    frames: int
    method: str
    retention: float
    settings: Settings = field(default_factory=Settings)
    group: str = "grid"  # "grid" or "scaling"


def token_stage_methods() -> list[str]:
    """Every registered method with a token stage, except ``none``."""
    return [name for name in available_methods() if name != "none" and "token" in method_info(name).stages]


def _comparison(model: str, frames: int, methods: Iterable[str], retention: float, settings: Settings, group: str):
    yield Case(model, frames, "none", 1.0, settings, group)
    yield Case(model, frames, IDEAL, retention, settings, group)
    for method in methods:
        yield Case(model, frames, method, retention, settings, group)


def issue_plan(
    models: Iterable[str] = ISSUE_MODELS,
    methods: Iterable[str] | None = None,
    retention: float = ISSUE_RETENTION,
    settings: Settings = ISSUE_SETTINGS,
) -> list[Case]:
    """At 32 and 64 frames per model: no compression, the ideal and every method at ``retention``."""
    methods = list(methods) if methods is not None else token_stage_methods()
    return [case for model in models for frames in (32, 64) for case in _comparison(model, frames, methods, retention, settings, "grid")]


def scaling_settings(frames: int) -> Settings:
    """Fewer rounds as runs get longer; no warm-up beyond 128 frames (the smaller counts warmed the kernels)."""
    if frames <= 64:
        return Settings(warmup=1, runs=3, decode_tokens=0, decode_runs=0)
    if frames <= 128:
        return Settings(warmup=1, runs=2, decode_tokens=0, decode_runs=0)
    return Settings(warmup=0, runs=1, decode_tokens=0, decode_runs=0)


def scaling_plan(
    models: Iterable[str] = ISSUE_MODELS,
    methods: Iterable[str] | None = None,
    retention: float = ISSUE_RETENTION,
    frames: Iterable[int] = SCALING_FRAMES,
) -> list[Case]:
    """Per model, at increasing ``frames``: no compression, the ideal and every method at ``retention``."""
    methods = list(methods) if methods is not None else token_stage_methods()
    counts = sorted(set(frames))
    return [
        case
        for model in models
        for count in counts
        for case in _comparison(model, count, methods, retention, scaling_settings(count), "scaling")
    ]


def grid_plan(
    models: Iterable[str], frames: Iterable[int], methods: Iterable[str], retentions: Iterable[float], settings: Settings
) -> list[Case]:
    """Every model x frames x (method, retention); ``none`` runs once per frame count, at retention 1.0."""
    retentions = sorted({float(r) for r in retentions}, reverse=True)
    cases = []
    for model in models:
        for count in frames:
            cases.append(Case(model, count, "none", 1.0, settings))
            for retention in (r for r in retentions if r < 1.0):
                cases.append(Case(model, count, IDEAL, retention, settings))
                cases += [Case(model, count, m, retention, settings) for m in methods if m not in ("none", IDEAL)]
    return cases


def comparisons(cases: list[Case]) -> list[list[Case]]:
    """``cases`` cut into runs of consecutive cases with the same model, frames, group and settings."""
    out: list[list[Case]] = []
    for case in cases:
        head = out[-1][0] if out else None
        if head is not None and (head.model, head.frames, head.group, head.settings) == (
            case.model, case.frames, case.group, case.settings
        ):
            out[-1].append(case)
        else:
            out.append([case])
    return out

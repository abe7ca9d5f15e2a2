"""Paired, interleaved timing: every contender of one comparison runs once per round, so drift cancels in ratios.

Timing the ideal and each method in separate blocks lets slow drift (clocks, allocator state, other tenants) land in
their ratio. :func:`interleave` instead runs ``warmup`` untimed rounds, then timed rounds in which every live
contender runs once, in an order rotated by one each round (so no contender always follows the same one). A ratio is
then taken *within* each round (:func:`paired_ratio`) and summarised by its median and spread over the rounds.

A contender that fails is dropped from the following rounds with its status: ``"oom"`` for an out-of-memory error
(``release`` is called after the error is gone, to free what the failed run held) or ``"error: ..."``. Rounds stop
early at ``soft_deadline`` (after ``min_rounds``); no run starts after ``hard_deadline`` (contenders without a timed
round are then ``"skipped: time budget"``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import torch

__all__ = ["Outcome", "interleave", "paired_ratio", "is_oom", "failure_status", "TIME_BUDGET_SKIP"]

K = TypeVar("K", bound=Hashable)
TIME_BUDGET_SKIP = "skipped: time budget"


def is_oom(error: BaseException) -> bool:
    """Whether ``error`` is a GPU (or host) out-of-memory error."""
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


@dataclass
class Outcome(Generic[K]):
    """What one contender gave: its status and one result per timed round (``None`` where it did not run)."""

    key: K
    status: str = "ok"
    runs: list[Any] = field(default_factory=list)

    @property
    def done(self) -> list[Any]:
        """The results of the rounds it ran."""
        return [run for run in self.runs if run is not None]


def failure_status(error: BaseException) -> str:
    """``"oom"`` or ``"error: <type>: <first line>"`` for a failed run."""
    if is_oom(error):
        return "oom"
    message = str(error).splitlines()[0][:200] if str(error) else ""
    return f"error: {type(error).__name__}: {message}"


def interleave(
    keys: Sequence[K],
    run: Callable[[K], Any],
    *,
    warmup: int,
    rounds: int,
    min_rounds: int = 1,
    soft_deadline: float | None = None,
    hard_deadline: float | None = None,
    release: Callable[[], None] = lambda: None,
    clock: Callable[[], float] = time.monotonic,
    progress: Callable[[str], None] | None = None,
) -> dict[K, Outcome[K]]:
    """Run ``run(key)`` for every key, ``warmup`` untimed then up to ``rounds`` timed rounds; outcomes by key.

    ``soft_deadline`` / ``hard_deadline`` are values of ``clock()``; see the module docstring.
    """
    outcomes = {key: Outcome(key) for key in keys}
    live = list(keys)
    total = warmup + rounds
    for number in range(total):
        timed = number >= warmup
        index = number - warmup
        if timed and index >= min_rounds and soft_deadline is not None and clock() > soft_deadline:
            break
        order = live[index % len(live):] + live[: index % len(live)] if timed and live else list(live)
        for key in order:
            if hard_deadline is not None and clock() > hard_deadline:
                _stop_for_time(outcomes, live)
                return outcomes
            failure = None
            try:
                result = run(key)
            except Exception as error:  # one contender failing must not end the comparison
                failure = failure_status(error)
            if failure is not None:  # outside the except block: the traceback (and what it holds) is gone
                outcomes[key].status = failure
                live.remove(key)
                if failure == "oom":
                    release()
                continue
            if timed:
                outcomes[key].runs.extend([None] * (index - len(outcomes[key].runs)) + [result])
        if progress is not None:
            progress(f"  {'round' if timed else 'warm-up'} {index + 1 if timed else number + 1}/"
                     f"{rounds if timed else warmup}: {len(live)} contenders")
        if not live:
            break
    return outcomes


def _stop_for_time(outcomes: dict[Any, Outcome], live: list[Any]) -> None:
    for key in live:
        if not outcomes[key].done:
            outcomes[key].status = TIME_BUDGET_SKIP


def paired_ratio(numerators: Sequence[float | None], denominators: Sequence[float | None]) -> dict[str, float] | None:
    """Median, quartiles and range over rounds of ``numerator / denominator`` taken within each round.

    Rounds where either side is missing are left out; ``None`` when no round has both.
    """
    ratios = sorted(
        a / b for a, b in zip(numerators, denominators) if a is not None and b is not None and b > 0
    )
    if not ratios:
        return None
    q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else ratios * 3
    return {
        "median": round(statistics.median(ratios), 4),
        "q1": round(q1, 4),
        "q3": round(q3, 4),
        "min": round(ratios[0], 4),
        "max": round(ratios[-1], 4),
        "rounds": len(ratios),
    }

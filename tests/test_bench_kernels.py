"""``scripts/bench_kernels.py``: merging the kernel rows of repeated rounds (``--repeats``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from bench_kernels import best_of_rounds  # noqa: E402


def _rows(copy_ms: float, merge_ms: float, same_bytes_tbs: float, agree: bool, error: float) -> list[dict]:
    return [
        {"size": "s", "op": "copy", "triton_ms": None, "torch_ms": copy_ms, "min_bytes": 2_000_000_000,
         "triton_tb_s": None, "fraction_of_copy": None, "copy_tb_s": 2.0 / copy_ms},
        {"size": "s", "op": "merge", "triton_ms": merge_ms, "torch_ms": 9.0, "min_bytes": 1_000_000_000,
         "triton_tb_s": 1.0 / merge_ms, "fraction_of_copy": 0.0, "same_bytes_copy_tb_s": same_bytes_tbs,
         "fraction_of_same_bytes_copy": 0.0, "max_abs_err": error, "agree": agree},
    ]


def test_best_of_rounds_keeps_each_rows_fastest_median_and_recomputes_fractions() -> None:
    # round 1: a burst slowed the merge (4 ms); round 2: the copy (2 ms) and the same-bytes copy (0.5 TB/s)
    rows = best_of_rounds(_rows(1.0, 4.0, 0.8, True, 1e-3) + _rows(2.0, 0.5, 0.5, True, 2e-3))
    assert len(rows) == 2
    copy, merge = rows
    assert copy["torch_ms"] == 1.0 and copy["copy_tb_s"] == pytest.approx(2.0)
    assert merge["triton_ms"] == 0.5 and merge["torch_ms"] == 9.0
    assert merge["triton_tb_s"] == pytest.approx(2.0)  # 1 GB in 0.5 ms
    assert merge["fraction_of_copy"] == pytest.approx(1.0)  # of the fastest copy, 2 TB/s
    assert merge["fraction_of_same_bytes_copy"] == pytest.approx(2.0 / 0.8)  # of the fastest same-bytes copy
    assert merge["max_abs_err"] == 2e-3 and merge["agree"]


def test_best_of_rounds_needs_agreement_in_every_round() -> None:
    rows = best_of_rounds(_rows(1.0, 1.0, 1.0, True, 0.0) + _rows(1.0, 1.0, 1.0, False, 0.5))
    assert not rows[1]["agree"]
    assert best_of_rounds(_rows(1.0, 1.0, 1.0, True, 0.0))[1]["fraction_of_copy"] == pytest.approx(0.5)

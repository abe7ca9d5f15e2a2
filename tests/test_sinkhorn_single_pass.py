"""Single-launch Sinkhorn (``sinkhorn_scalings`` on the Triton path) against the two-launch schedule it replaces.

The two-launch schedule — one launch records every update's change, the stopping update is found from the record
with torch, a second launch runs that many updates — is rebuilt here from ``launch_sinkhorn``; the single launch
(a program stops itself, or a joint stop picks the scalings from the recorded history) must give the same bits.
Triton runs in its interpreter (``TRITON_INTERPRET=1`` before the kernel module is imported, as in
``test_kernels.py``).
"""

from __future__ import annotations

import importlib
import os
import sys

os.environ["TRITON_INTERPRET"] = "1"

import pytest
import torch

import vidcompress.kernels.sinkhorn as sinkhorn_module
from vidcompress.kernels import DISABLE_ENV
from vidcompress.kernels.sinkhorn import sinkhorn_reference, sinkhorn_scalings

for _name in [name for name in sys.modules if name.startswith("vidcompress.kernels._triton.")]:
    importlib.reload(sys.modules[_name])

from vidcompress.kernels._triton.sinkhorn import launch_sinkhorn

#: (batch, rows, cols, max_iter, tol, epsilon, NaN entry): stops after one update (tol 1), early, never (tol 0, NaN in
#: a joint batch), at max_iter (few updates allowed), a padded and an exact power-of-two block, AOT's 154 x 42.
CASES = [
    (3, 7, 5, 30, 1.0, 0.5, False),
    (4, 13, 6, 60, 1e-2, 0.5, False),
    (4, 13, 6, 60, 1e-3, 0.05, False),
    (2, 16, 8, 40, 0.0, 0.2, False),
    (3, 9, 20, 3, 1e-3, 0.05, False),
    (4, 11, 7, 50, 1e-2, 0.3, True),
    (1, 1, 1, 5, 1e-2, 0.5, False),
    (2, 154, 42, 25, 1e-2, 0.1, False),
    (4, 13, 6, 60, 3e-3, 0.05, False),
    (4, 13, 6, 60, 2e-3, 0.1, False),
]


@pytest.fixture(autouse=True)
def _triton_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.delenv(DISABLE_ENV, raising=False)


@pytest.fixture
def poisoned_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    """``torch.empty`` / ``torch.empty_like`` return NaN (floats) or -7 (integers): no output may depend on an entry
    the kernel did not write."""
    empty, empty_like = torch.empty, torch.empty_like

    def poison(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.fill_(float("nan") if tensor.is_floating_point() else -7)

    monkeypatch.setattr(torch, "empty", lambda *args, **kwargs: poison(empty(*args, **kwargs)))
    monkeypatch.setattr(torch, "empty_like", lambda *args, **kwargs: poison(empty_like(*args, **kwargs)))


def _problems(seed: int, batch: int, rows: int, cols: int, epsilon: float, nan: bool):
    generator = torch.Generator().manual_seed(seed)
    kernel = torch.exp(-torch.rand(batch, rows, cols, generator=generator) / epsilon)
    if nan:
        kernel[batch // 2, rows // 2, cols // 2] = float("nan")
    mu = torch.rand(batch, rows, generator=generator) + 0.1
    nu = torch.rand(batch, cols, generator=generator) + 0.1
    return kernel, mu / mu.sum(1, keepdim=True), nu / nu.sum(1, keepdim=True)


def _two_launches(kernel, mu, nu, max_iter: int, tol: float, joint_stop: bool):
    """The replaced schedule: ``(r, c, [B] updates run)``."""
    batch, rows, _ = kernel.shape
    change = torch.full((max_iter, batch), float("nan"))
    launch_sinkhorn(kernel, mu, nu, max_iter, change=change)
    if joint_stop:
        stop = (change.sum(1, keepdim=True) / (batch * rows) < tol).expand(max_iter, batch)
    else:
        stop = ~(change / rows >= tol)  # NaN stops a problem
    updates = torch.where(stop.any(0), stop.long().argmax(0) + 1, max_iter)
    r, c = launch_sinkhorn(kernel, mu, nu, updates)
    return r, c, updates


def _assert_same_bits(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=0.0, equal_nan=True)


def _single_launch_matches_two(kernel, mu, nu, max_iter: int, tol: float, joint_stop: bool):  # type: ignore[no-untyped-def]
    """``sinkhorn_scalings``' ``(r, c)``, checked bit for bit against the two-launch schedule; also returns the
    schedule's ``[B]`` update counts."""
    r_expected, c_expected, updates = _two_launches(kernel, mu, nu, max_iter, tol, joint_stop)
    r, c = sinkhorn_scalings(kernel, mu, nu, max_iter, tol, joint_stop, use_triton=True)
    _assert_same_bits(r, r_expected)
    _assert_same_bits(c, c_expected)
    return r, c, updates


@pytest.mark.parametrize("joint_stop", [False, True])
def test_single_launch_gives_the_bits_of_two_launches(joint_stop: bool, poisoned_empty: None) -> None:
    stopped_early = stopped_at_max = 0
    for seed, (batch, rows, cols, max_iter, tol, epsilon, nan) in enumerate(CASES):
        kernel, mu, nu = _problems(seed, batch, rows, cols, epsilon, nan)
        r, c, updates = _single_launch_matches_two(kernel, mu, nu, max_iter, tol, joint_stop)
        stopped_early += int((updates < max_iter).sum())
        stopped_at_max += int((updates == max_iter).sum())
        if not nan:
            r_reference, c_reference = sinkhorn_reference(kernel, mu, nu, max_iter, tol, joint_stop)
            torch.testing.assert_close(r, r_reference, rtol=1e-4, atol=0.0)
            torch.testing.assert_close(c, c_reference, rtol=1e-4, atol=0.0)
    assert stopped_early > 0 and stopped_at_max > 0


def test_joint_stop_without_room_for_the_history_runs_two_launches(
    monkeypatch: pytest.MonkeyPatch, poisoned_empty: None
) -> None:
    monkeypatch.setattr(sinkhorn_module, "HISTORY_BYTES", 0)
    triton_module = sys.modules[launch_sinkhorn.__module__]
    launches: list[bool] = []  # per launch of sinkhorn_scalings: did it keep a history?

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        launches.append(kwargs.get("history") is not None)
        return launch_sinkhorn(*args, **kwargs)

    for seed, (batch, rows, cols, max_iter, tol, epsilon, nan) in enumerate(CASES):
        kernel, mu, nu = _problems(seed, batch, rows, cols, epsilon, nan)
        r_expected, c_expected, _ = _two_launches(kernel, mu, nu, max_iter, tol, joint_stop=True)
        launches.clear()
        with monkeypatch.context() as patch:
            patch.setattr(triton_module, "launch_sinkhorn", counted)
            r, c = sinkhorn_scalings(kernel, mu, nu, max_iter, tol, True, use_triton=True)
        assert launches == [False, False]  # a recording launch, then the stopping number of updates; no history
        _assert_same_bits(r, r_expected)
        _assert_same_bits(c, c_expected)


def test_batches_above_max_polled_record_every_update(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[launch_sinkhorn.__module__], "MAX_POLLED", 2)
    for seed, (batch, rows, cols, max_iter, tol, epsilon, nan) in enumerate(CASES):
        kernel, mu, nu = _problems(seed, batch, rows, cols, epsilon, nan)
        _single_launch_matches_two(kernel, mu, nu, max_iter, tol, joint_stop=True)
        change = torch.full((max_iter, batch), -1.0)
        launch_sinkhorn(kernel, mu, nu, max_iter, joint_tol=tol, change=change)
        assert bool((change != -1).all()) or batch <= 2


def test_joint_programs_record_every_update_up_to_the_stop() -> None:
    for seed, (batch, rows, cols, max_iter, tol, epsilon, nan) in enumerate(CASES):
        kernel, mu, nu = _problems(seed, batch, rows, cols, epsilon, nan)
        _, _, updates = _two_launches(kernel, mu, nu, max_iter, tol, joint_stop=True)
        change = torch.empty(max_iter, batch)
        launch_sinkhorn(kernel, mu, nu, max_iter, joint_tol=tol, change=change)
        recorded = (change != -1).sum(0)
        assert bool((recorded >= updates).all())
        # the interpreter runs the programs one after another: the last one sees every other record complete, reads
        # the record of update k during update k + 1 and stops there
        assert int(recorded[-1]) == min(int(updates[-1]) + 1, max_iter)


def test_nan_stops_its_own_problem_and_never_the_batch() -> None:
    batch, rows, cols, max_iter = 3, 6, 4, 20
    kernel, mu, nu = _problems(5, batch, rows, cols, 0.5, nan=True)  # NaN in problem 1
    _, _, alone = _two_launches(kernel, mu, nu, max_iter, 1e-3, joint_stop=False)
    _, _, together = _two_launches(kernel, mu, nu, max_iter, 1e-3, joint_stop=True)
    assert alone[1] == 1 and bool((alone[[0, 2]] > 1).all())
    assert together.tolist() == [max_iter] * batch
    r, _ = sinkhorn_scalings(kernel, mu, nu, max_iter, 1e-3, joint_stop=False, use_triton=True)
    assert not r[[0, 2]].isnan().any() and int(r[1].isnan().sum()) == 1  # one update: only the NaN row is NaN


@pytest.mark.parametrize("joint_stop", [False, True])
def test_empty_batches_and_problems_take_the_pytorch_path(joint_stop: bool) -> None:
    for batch, rows, cols in ((2, 0, 3), (2, 3, 0), (0, 3, 3)):
        kernel, mu, nu = torch.ones(batch, rows, cols), torch.ones(batch, rows), torch.ones(batch, cols)
        expected = sinkhorn_reference(kernel, mu, nu, 5, 1e-2, joint_stop)
        actual = sinkhorn_scalings(kernel, mu, nu, 5, 1e-2, joint_stop, use_triton=True)
        for a, e in zip(actual, expected):
            _assert_same_bits(a, e)

"""Issue 5's "no token-stage method synchronises with the host", checked structurally on CPU.

Every construct that makes a CUDA tensor's value (or a data-dependent size) travel to the host goes through one
of a few ATen operators: ``_local_scalar_dense`` (``.item()``, ``int()``, ``float()``, ``bool()`` of a tensor, a
tensor in an ``if``), ``nonzero`` (``torch.nonzero``, ``torch.where(mask)``), indexing with a boolean mask,
``masked_select``, ``unique``, ``bincount`` (it sizes its output from the maximum), ``equal``, and
``repeat_interleave`` without ``output_size``. A :class:`TorchDispatchMode` sees every operator call, on CPU
tensors too, so running a method under a mode that raises on those calls catches host syncs without a GPU.

Not caught here (the GPU check ``scripts/check_sync.py`` covers them): ``.tolist()`` / ``.cpu()`` of a CPU tensor
(no operator runs) and host-to-device copies from pageable memory (there is no device on CPU).
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from vidcompress import VideoTokens, available_methods, get_compressor, method_info, target_count
from vidcompress.ops.dpc_knn import dpc_knn
from vidcompress.ops.reconcile import group_by_representative

#: Operators whose result (or output size) needs the tensor's data on the host.
SYNC_OPS = {
    "_local_scalar_dense",
    "item",
    "is_nonzero",
    "nonzero",
    "masked_select",
    "_unique",
    "_unique2",
    "unique_dim",
    "unique_consecutive",
    "bincount",
    "equal",
}
GRID = (4, 4, 4)
RETENTIONS = (0.1, 0.25, 0.5)


class HostSync(AssertionError):
    """Raised by :class:`SyncGuard` at the first synchronising operator."""


class SyncGuard(TorchDispatchMode):
    """Raise :class:`HostSync` on any operator call that needs tensor data on the host."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 - torch's signature
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if name in SYNC_OPS:
            raise HostSync(f"{func} synchronises")
        if name in ("index", "index_put", "index_put_") and _has_bool_index(args[1]):
            raise HostSync(f"{func} with a boolean mask has a data-dependent size")
        if name == "repeat_interleave" and isinstance(args[0], torch.Tensor) and kwargs.get("output_size") is None:
            if len(args) == 1 or isinstance(args[1], torch.Tensor):
                raise HostSync(f"{func} without output_size reads the repeats")
        return func(*args, **kwargs)


def _has_bool_index(indices: list[torch.Tensor | None]) -> bool:
    return any(index is not None and index.dtype in (torch.bool, torch.uint8) for index in indices)


def token_methods() -> list[str]:
    return sorted(
        name for name in available_methods() if "token" in method_info(name).stages and name not in ("identity", "none")
    )


def _tokens(seed: int = 0) -> VideoTokens:
    generator = torch.Generator().manual_seed(seed)
    t, h, w = GRID
    return VideoTokens(
        features=torch.randn(t, h * w, 16, generator=generator),
        grid=GRID,
        attention=torch.softmax(torch.randn(t, h * w, generator=generator), dim=-1),
        query=torch.randn(5, 16, generator=generator),
        timestamps=torch.arange(t, dtype=torch.float32),
    )


def _runs_without_sync(name: str, retention: float) -> bool:
    compressor = get_compressor(name, retention=retention)
    tokens = _tokens()
    try:
        with SyncGuard():
            out = compressor(tokens)
    except HostSync:
        return False
    assert out.num_tokens == target_count(GRID, retention)
    return True


def test_guard_catches_each_kind_of_sync() -> None:
    x = torch.arange(6.0)
    mask = x > 2
    for construct in (
        lambda: int(x.sum()),
        lambda: bool((x > 0).any()),
        lambda: x.max().item(),
        lambda: torch.nonzero(mask),
        lambda: x[mask],
        lambda: torch.unique(x),
        lambda: torch.bincount(x.long()),
        lambda: x.repeat_interleave(torch.ones(6, dtype=torch.long)),
    ):
        with pytest.raises(HostSync), SyncGuard():
            construct()
    with SyncGuard():  # the sync-free replacements pass
        torch.sort(torch.where(mask, x, torch.inf)).values[:3]
        x.repeat_interleave(torch.ones(6, dtype=torch.long), output_size=6)
        torch.clamp(mask.sum(), min=2)


@pytest.mark.parametrize("name", token_methods())
@pytest.mark.parametrize("retention", RETENTIONS)
def test_method_is_sync_free(name: str, retention: float) -> None:
    assert _runs_without_sync(name, retention), f"{name} synchronises with the host at retention {retention}"


def test_group_by_representative_with_known_count_is_sync_free_and_equal() -> None:
    rep_of = torch.tensor([3, 3, -1, 3, 7, 7, 0, -1, 7, 0])  # representatives 0, 3, 7 (0 is also the clamp of -1)
    with SyncGuard():
        fast = group_by_representative(rep_of, num_groups=3)
    assert fast.representative.tolist() == [0, 3, 7]
    assert fast.group.tolist() == [1, 1, -1, 1, 2, 2, 0, -1, 2, 0]
    slow = group_by_representative(rep_of)
    assert torch.equal(fast.group, slow.group) and torch.equal(fast.representative, slow.representative)


def test_dpc_knn_with_host_counts_is_sync_free_and_equal() -> None:
    x = torch.randn(3, 9, 4, generator=torch.Generator().manual_seed(1))
    with SyncGuard():
        centre, assignment = dpc_knn(x, [1, 2, 3], (2, 3, 5))
    assert centre.sum(1).tolist() == [1, 2, 3]
    tensor_centre, tensor_assignment = dpc_knn(x, torch.tensor([1, 2, 3]), torch.tensor([2, 3, 5]))
    assert torch.equal(centre, tensor_centre) and torch.equal(assignment, tensor_assignment)


@pytest.mark.parametrize("clusters", ([0, 10, 1], [-1, 1, 1]))
def test_dpc_knn_host_counts_are_checked(clusters: list[int]) -> None:
    with pytest.raises(ValueError, match="cluster counts"):
        dpc_knn(torch.randn(3, 9, 4), clusters, 2)

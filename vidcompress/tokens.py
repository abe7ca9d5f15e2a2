"""Token containers: what the vision encoder hands to a compressor, and what a compressor hands to the LLM.

These two dataclasses are the contract every method and every model adapter relies on (see ``design.md``):

* :class:`VideoTokens` — the projected visual tokens of one video, ``[T, N, D]`` in temporal-then-raster order,
  plus the optional side inputs some methods need (vision attention received, positions, timestamps, question).
* :class:`CompressedTokens` — the ``K`` tokens that reach the LLM, their positions, and for every input token the
  output row it went into (``source``).
* :func:`target_count` — the exact number ``K`` of output tokens for a grid and a retention, fixed before any data
  is seen so a server can size its placeholders in advance.

Validation raises :class:`ValueError` naming the problem; nothing is silently clamped or repaired.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field

import torch

Grid = tuple[int, int, int]

__all__ = ["Grid", "VideoTokens", "CompressedTokens", "target_count", "check_retention", "check_grid", "grid_positions"]


def check_retention(retention: float) -> float:
    """Return ``retention`` as a float if it lies in (0, 1]; raise ``ValueError`` otherwise."""
    if isinstance(retention, bool) or not isinstance(retention, numbers.Real):
        raise ValueError(f"retention must be a number in (0, 1], got {retention!r} of type {type(retention).__name__}")
    value = float(retention)
    if math.isnan(value) or not 0.0 < value <= 1.0:
        raise ValueError(f"retention must lie in (0, 1], got {retention!r}")
    return value


def check_grid(grid: object) -> Grid:
    """Return ``grid`` as a tuple of three positive ints ``(T, H, W)``; raise ``ValueError`` otherwise."""
    if isinstance(grid, torch.Tensor):
        grid = tuple(grid.tolist())
    if not isinstance(grid, (tuple, list)) or len(grid) != 3:
        raise ValueError(f"grid must be a (T, H, W) triple, got {grid!r}")
    values = []
    for axis, value in zip("THW", grid):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"grid {axis} must be an integer, got {value!r} in grid {tuple(grid)!r}")
        if value <= 0:
            raise ValueError(f"grid {axis} must be positive, got {value} in grid {tuple(grid)!r} (empty video?)")
        values.append(int(value))
    return values[0], values[1], values[2]


def target_count(grid: Grid, retention: float) -> int:
    """Number of visual tokens a compressor returns for ``grid`` at ``retention``.

    ``K = max(1, round_half_up(T * H * W * retention))``; ``retention`` is the fraction of visual tokens at the LLM
    input. The value depends on the grid and the retention only, never on the content.

    >>> target_count((32, 14, 14), 0.1)
    627
    >>> target_count((4, 8, 8), 1.0)
    256
    """
    t, h, w = check_grid(grid)
    retention = check_retention(retention)
    total = t * h * w
    # round() on the product can land on x.4999999 for decimal retentions such as 0.35; a relative guard of 1e-9
    # makes the count the one a person computes by hand.
    count = math.floor(total * retention + 0.5 + 1e-9 * total)
    return max(1, min(total, count))


def grid_positions(grid: Grid, device: torch.device | str | None = None) -> torch.Tensor:
    """Default ``(t, h, w)`` positions of a grid: ``[T, H*W, 3]`` long, raster order within each frame."""
    t, h, w = check_grid(grid)
    tt, hh, ww = torch.meshgrid(
        torch.arange(t, device=device), torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij"
    )
    return torch.stack([tt, hh, ww], dim=-1).reshape(t, h * w, 3)


def _check_tensor(name: str, value: object, ndim: int, floating: bool) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(value.shape)}")
    if floating and not value.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if not floating and (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool):
        raise ValueError(f"{name} must be an integer tensor, got dtype {value.dtype}")
    return value


def _check_finite(name: str, value: torch.Tensor) -> None:
    if not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s)")


@dataclass(frozen=True)
class VideoTokens:
    """Visual tokens of one video, as produced by the vision encoder and projector.

    Args:
        features: ``[T, N, D]`` float tensor of projected visual tokens (LLM input space). ``T`` frames, or temporal
            groups on Qwen2.5-VL (one per two frames); ``N = H * W`` tokens in raster order.
        grid: ``(T, H, W)`` token grid.
        attention: optional ``[T, N]`` attention each token receives in the vision encoder (mean over heads and
            queries), pooled exactly like the features.
        positions: optional ``[T, N, 3]`` integer ``(t, h, w)`` rotary positions; defaults to the grid coordinates.
        timestamps: optional ``[T]`` seconds of each frame or temporal group.
        query: optional ``[Q, D]`` question token embeddings in the same space as the features.
        check_finite: scan ``features`` / ``attention`` for NaN and inf. The scan reads the tensors back to the host;
            the GPU hot path turns it off once the inputs are trusted.
    """

    features: torch.Tensor
    grid: Grid
    attention: torch.Tensor | None = None
    positions: torch.Tensor | None = None
    timestamps: torch.Tensor | None = None
    query: torch.Tensor | None = None
    check_finite: bool = field(default=True, repr=False, compare=False)

    def __post_init__(self) -> None:
        features = _check_tensor("features", self.features, 3, floating=True)
        t, n, d = features.shape
        if t == 0 or n == 0 or d == 0:
            raise ValueError(f"features must be non-empty, got shape {tuple(features.shape)} (empty video?)")
        grid = check_grid(self.grid)
        if grid[0] != t or grid[1] * grid[2] != n:
            raise ValueError(
                f"grid {grid} does not match features of shape {tuple(features.shape)}: "
                f"expected T = {t} and H * W = {n}"
            )
        object.__setattr__(self, "grid", grid)
        device = features.device
        if self.attention is not None:
            attention = _check_tensor("attention", self.attention, 2, floating=True)
            if tuple(attention.shape) != (t, n):
                raise ValueError(f"attention must have shape {(t, n)}, got {tuple(attention.shape)}")
            self._check_device("attention", attention, device)
        if self.positions is None:
            object.__setattr__(self, "positions", grid_positions(grid, device=device))
        else:
            positions = _check_tensor("positions", self.positions, 3, floating=False)
            if tuple(positions.shape) != (t, n, 3):
                raise ValueError(f"positions must have shape {(t, n, 3)}, got {tuple(positions.shape)}")
            self._check_device("positions", positions, device)
        if self.timestamps is not None:
            timestamps = _check_tensor("timestamps", self.timestamps, 1, floating=True)
            if timestamps.shape[0] != t:
                raise ValueError(f"timestamps must have shape {(t,)}, got {tuple(timestamps.shape)}")
        if self.query is not None:
            query = _check_tensor("query", self.query, 2, floating=True)
            if query.shape[0] == 0 or query.shape[1] != d:
                raise ValueError(f"query must have shape [Q >= 1, {d}], got {tuple(query.shape)}")
            self._check_device("query", query, device)
        if self.check_finite:
            _check_finite("features", features)
            for name in ("attention", "timestamps", "query"):
                value = getattr(self, name)
                if value is not None:
                    _check_finite(name, value)

    @staticmethod
    def _check_device(name: str, value: torch.Tensor, device: torch.device) -> None:
        if value.device != device:
            raise ValueError(f"{name} is on {value.device} but features are on {device}")

    def with_side_inputs(
        self, timestamps: torch.Tensor | None = None, query: torch.Tensor | None = None
    ) -> VideoTokens:
        """A copy carrying ``timestamps`` / ``query``. Shapes are validated as usual; the finiteness scan covers only
        the new tensors, since the features and attention were scanned when these tokens were built."""
        extended = dataclasses.replace(self, timestamps=timestamps, query=query, check_finite=False)
        if self.check_finite:
            for name, value in (("timestamps", timestamps), ("query", query)):
                if value is not None:
                    _check_finite(name, value)
        object.__setattr__(extended, "check_finite", self.check_finite)  # later copies scan as this one would
        return extended

    @property
    def num_tokens(self) -> int:
        """``T * H * W``, the number of input tokens."""
        t, h, w = self.grid
        return t * h * w

    @property
    def flat_features(self) -> torch.Tensor:
        """Features as ``[T*N, D]``, temporal-then-raster order."""
        return self.features.reshape(self.num_tokens, -1)

    @property
    def flat_positions(self) -> torch.Tensor:
        """Positions as ``[T*N, 3]``."""
        assert self.positions is not None  # filled in __post_init__
        return self.positions.reshape(self.num_tokens, 3)


@dataclass(frozen=True)
class CompressedTokens:
    """The tokens a compressor hands to the LLM.

    Args:
        features: ``[K, D]`` output tokens in temporal-then-raster order of their representatives.
        positions: ``[K, 3]`` long ``(t, h, w)`` position of each output token: a kept token keeps its own, a merged
            token takes its representative's.
        source: ``[T*N]`` long: for every input token, the output row it went into, or ``-1`` if dropped.
        representatives: ``[K]`` long, strictly increasing: the flat input index whose position each output row
            carries (the kept token itself, or the root / cluster centre / anchor of a merged group).
        position_sets: optional ``[K, P, 3]`` up to ``P`` member positions per merged token (PPE); how a row with
            fewer than ``P`` members is padded depends on ``member_choice`` (PPE's reference default cycles through
            the members again; ``"nearest"`` / ``"spread"`` repeat the representative's position).
    """

    features: torch.Tensor
    positions: torch.Tensor
    source: torch.Tensor
    representatives: torch.Tensor
    position_sets: torch.Tensor | None = None

    def __post_init__(self) -> None:
        features = _check_tensor("features", self.features, 2, floating=True)
        positions = _check_tensor("positions", self.positions, 2, floating=False)
        source = _check_tensor("source", self.source, 1, floating=False)
        representatives = _check_tensor("representatives", self.representatives, 1, floating=False)
        k = features.shape[0]
        if k == 0:
            raise ValueError("a compressor must return at least one token")
        if tuple(positions.shape) != (k, 3):
            raise ValueError(f"positions must have shape {(k, 3)}, got {tuple(positions.shape)}")
        if representatives.shape[0] != k:
            raise ValueError(f"representatives must have shape {(k,)}, got {tuple(representatives.shape)}")
        for name, value in (("source", source), ("representatives", representatives)):
            if value.dtype != torch.long:
                raise ValueError(f"{name} must be int64, got {value.dtype}")
        if self.position_sets is not None:
            sets = _check_tensor("position_sets", self.position_sets, 3, floating=False)
            if sets.shape[0] != k or sets.shape[2] != 3 or sets.shape[1] == 0:
                raise ValueError(f"position_sets must have shape [{k}, P >= 1, 3], got {tuple(sets.shape)}")

    @property
    def num_tokens(self) -> int:
        """``K``, the number of output tokens."""
        return int(self.features.shape[0])

    @property
    def kept_mask(self) -> torch.Tensor:
        """``[T*N]`` bool: which input tokens reached an output row (kept or merged)."""
        return self.source >= 0

    def validate(self, tokens: VideoTokens) -> None:
        """Check this output against the input it was computed from; raise ``ValueError`` on the first violation.

        Checks: sizes, ``source`` in ``[-1, K)`` with every row used, representatives strictly increasing (output
        order = temporal-then-raster order of representatives), each representative mapped to its own row, and each
        row's position equal to its representative's input position. Reads tensors back to the host: meant for
        tests and debugging, not for the hot path.
        """
        k, n = self.num_tokens, tokens.num_tokens
        if self.source.shape[0] != n:
            raise ValueError(f"source covers {self.source.shape[0]} tokens, the input has {n}")
        if self.features.shape[1] != tokens.features.shape[-1]:
            raise ValueError(f"output width {self.features.shape[1]} != input width {tokens.features.shape[-1]}")
        source, reps = self.source.cpu(), self.representatives.cpu()
        if int(source.min()) < -1 or int(source.max()) >= k:
            raise ValueError(f"source values must lie in [-1, {k}), got [{int(source.min())}, {int(source.max())}]")
        used = torch.zeros(k, dtype=torch.bool)
        used[source[source >= 0]] = True
        if not bool(used.all()):
            raise ValueError(f"{int((~used).sum())} output row(s) receive no input token")
        if int(reps.min()) < 0 or int(reps.max()) >= n:
            raise ValueError(f"representatives must lie in [0, {n})")
        if k > 1 and not bool((reps[1:] > reps[:-1]).all()):
            raise ValueError("output rows are not in temporal-then-raster order of their representatives")
        if not torch.equal(source[reps], torch.arange(k)):
            raise ValueError("a representative is not mapped to its own output row in source")
        if not torch.equal(self.positions.cpu(), tokens.flat_positions.cpu()[reps]):
            raise ValueError("output positions differ from their representatives' input positions")

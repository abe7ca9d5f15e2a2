"""The registry of compression methods.

Methods register themselves with :func:`register_compressor`; users list them with :func:`available_methods` and
build them with :func:`get_compressor`, which also chains the stages of several methods (``"keyframe+flashvid"``).

>>> from vidcompress import get_compressor
>>> get_compressor("uniform", retention=0.25)
Uniform(retention=0.25, exact=True)
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .compressor import STAGES, Compressor, Pipeline

__all__ = [
    "MethodInfo",
    "UnknownMethodError",
    "UnknownParameterError",
    "register_compressor",
    "available_methods",
    "method_info",
    "get_compressor",
]


class UnknownMethodError(ValueError):
    """A method name that is not in the registry."""


class UnknownParameterError(ValueError):
    """A parameter that the named method does not take."""


@dataclass(frozen=True)
class MethodInfo:
    """What the registry knows about a method."""

    name: str
    cls: type[Compressor]
    stages: tuple[str, ...]
    needs_attention: bool
    needs_query: bool
    paper: str
    reference: str | None
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        """First line of the method's docstring."""
        return (inspect.getdoc(self.cls) or "").split("\n", 1)[0]


_REGISTRY: dict[str, MethodInfo] = {}


def _defaults_of(cls: type[Compressor]) -> dict[str, Any]:
    signature = inspect.signature(cls.__init__)
    defaults = {}
    for name, parameter in signature.parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if parameter.default is parameter.empty:
            raise TypeError(f"{cls.__name__}.__init__ parameter {name!r} needs a default value")
        defaults[name] = parameter.default
    return defaults


def register_compressor(
    name: str,
    *,
    stages: tuple[str, ...] = ("token",),
    needs_attention: bool = False,
    needs_query: bool = False,
    paper: str,
    reference: str | None = None,
) -> Callable[[type[Compressor]], type[Compressor]]:
    """Class decorator that adds a :class:`Compressor` subclass to the registry under ``name``.

    Args:
        name: registry key (lower-case, no ``+``).
        stages: pipeline stages the method acts in, from ``("frame", "token", "positions", "llm", "decode")``.
        needs_attention: the token stage reads ``VideoTokens.attention`` (vision-encoder attention received).
        needs_query: the method reads the question (``VideoTokens.query`` or the question text).
        paper: the paper the method comes from (title, venue / arXiv id).
        reference: the reference implementation (repository), or ``None`` when no public code exists.

    The default parameters are read from the class's ``__init__`` signature; every parameter needs a default.
    """
    if not name or name != name.lower() or "+" in name or " " in name:
        raise ValueError(f"method name must be lower-case without '+' or spaces, got {name!r}")
    unknown = set(stages) - set(STAGES)
    if unknown or not stages:
        raise ValueError(f"stages must be a non-empty subset of {STAGES}, got {stages!r}")

    def decorate(cls: type[Compressor]) -> type[Compressor]:
        if not issubclass(cls, Compressor):
            raise TypeError(f"{cls.__name__} must subclass vidcompress.Compressor")
        if name in _REGISTRY and _REGISTRY[name].cls.__qualname__ != cls.__qualname__:
            raise ValueError(f"method {name!r} is already registered by {_REGISTRY[name].cls.__qualname__}")
        info = MethodInfo(
            name=name,
            cls=cls,
            stages=tuple(stage for stage in STAGES if stage in stages),
            needs_attention=needs_attention,
            needs_query=needs_query,
            paper=paper,
            reference=reference,
            defaults=_defaults_of(cls),
        )
        cls.info = info
        _REGISTRY[name] = info
        return cls

    return decorate


def available_methods() -> list[str]:
    """Names of all registered methods, sorted."""
    return sorted(_REGISTRY)


def _suggest(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=3, cutoff=0.5)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    return "available: " + ", ".join(candidates)


def method_info(name: str) -> MethodInfo:
    """Registry entry of ``name``; raises :class:`UnknownMethodError` with close names."""
    if not isinstance(name, str):
        raise UnknownMethodError(f"method name must be a string, got {type(name).__name__}")
    key = name.strip().lower()
    if key not in _REGISTRY:
        raise UnknownMethodError(f"unknown method {name!r}; {_suggest(key, available_methods())}")
    return _REGISTRY[key]


def _build(info: MethodInfo, params: dict[str, Any]) -> Compressor:
    unknown = [key for key in params if key not in info.defaults]
    if unknown:
        key = unknown[0]
        raise UnknownParameterError(
            f"method {info.name!r} has no parameter {key!r}; {_suggest(key, sorted(info.defaults))}"
        )
    return info.cls(**params)


def get_compressor(name: str, **params: Any) -> Compressor | Pipeline:
    """Build the method ``name`` with ``params`` (unknown names and parameters raise with suggestions).

    ``name`` may chain methods with ``+`` (``"keyframe+flashvid"``): each stage is taken from the method that
    provides it. ``retention`` and ``exact`` (the count at the LLM input) go to the chain's token-stage method when it
    has one; any other parameter goes to every chained method that takes it; a parameter qualified as
    ``"method.param"`` goes to that method alone.
    """
    names = [part.strip() for part in str(name).split("+")]
    if any(not part for part in names):
        raise UnknownMethodError(f"malformed method name {name!r}")
    infos = [method_info(part) for part in names]
    if len(infos) == 1:
        plain = {key.split(".", 1)[1] if key.startswith(infos[0].name + ".") else key: v for key, v in params.items()}
        return _build(infos[0], plain)
    if len({info.name for info in infos}) != len(infos):
        raise ValueError(f"method chain {name!r} names a method twice")
    routed: dict[str, dict[str, Any]] = {info.name: {} for info in infos}
    for key, value in params.items():
        if "." in key:
            target, param = key.split(".", 1)
            if target not in routed:
                raise UnknownMethodError(f"parameter {key!r} names {target!r}, which is not in the chain {name!r}")
            routed[target][param] = value
            continue
        takers = [info.name for info in infos if key in info.defaults]
        token_stage = [
            info.name for info in infos if "token" in info.stages and not {"positions", "frame"} & set(info.stages)
        ]
        token_stage = token_stage or [info.name for info in infos if "token" in info.stages]
        if key in ("retention", "exact") and token_stage:
            takers = token_stage[:1]
        if not takers:
            every = sorted({p for info in infos for p in info.defaults})
            raise UnknownParameterError(f"no method in {name!r} has a parameter {key!r}; {_suggest(key, every)}")
        for taker in takers:
            routed[taker][key] = value
    return Pipeline([_build(info, routed[info.name]) for info in infos])

"""The registry: registration metadata, lookup with suggestions, parameter checks, stage composition."""

from __future__ import annotations

import pytest

from vidcompress import (
    Compressor,
    Pipeline,
    UnknownMethodError,
    UnknownParameterError,
    available_methods,
    get_compressor,
    method_info,
    register_compressor,
)
from vidcompress.registry import _REGISTRY


@pytest.fixture
def scratch_methods():
    """Register throw-away methods for one test and remove them afterwards."""
    before = dict(_REGISTRY)

    @register_compressor("scratch-frames", stages=("frame",), needs_query=True, paper="P1", reference="a/b")
    class FramePicker(Compressor):
        """Picks frames."""

        def __init__(self, retention: float = 1.0, *, exact: bool = True, clip_length: int = 4) -> None:
            super().__init__(retention, exact=exact)
            self.clip_length = clip_length

    @register_compressor("scratch-llm", stages=("llm",), paper="P2")
    class LayerPruner(Compressor):
        """Prunes in the LLM."""

        def __init__(self, retention: float = 1.0, *, exact: bool = True, layer: int = 2) -> None:
            super().__init__(retention, exact=exact)
            self.layer = layer

    yield FramePicker, LayerPruner
    _REGISTRY.clear()
    _REGISTRY.update(before)


def test_baselines_are_registered_with_metadata():
    assert {"none", "uniform", "random"} <= set(available_methods())
    info = method_info("random")
    assert info.stages == ("token",)
    assert info.defaults == {"retention": 1.0, "exact": True, "seed": 0}
    assert not info.needs_attention and not info.needs_query
    assert "VidCom2" in info.paper
    assert info.summary.startswith("Keeps")


def test_unknown_method_suggests_close_names():
    with pytest.raises(UnknownMethodError, match="did you mean 'uniform'"):
        get_compressor("unifrom")
    with pytest.raises(UnknownMethodError, match="available: "):
        get_compressor("zzzzzz")


def test_unknown_parameter_suggests_close_names():
    with pytest.raises(UnknownParameterError, match="did you mean 'seed'"):
        get_compressor("random", sed=1)
    with pytest.raises(UnknownParameterError, match="no parameter 'alpha'"):
        get_compressor("uniform", alpha=1)


@pytest.mark.parametrize("retention", [0, 1.5, -1, float("nan")])
def test_bad_retention_at_construction(retention):
    with pytest.raises(ValueError, match="retention"):
        get_compressor("uniform", retention=retention)


def test_none_refuses_a_compression_it_would_not_do():
    with pytest.raises(ValueError, match="retention must be 1.0"):
        get_compressor("none", retention=0.5)


def test_parameters_are_stored_and_shown():
    compressor = get_compressor("random", retention=0.5, seed=7)
    assert compressor.params() == {"retention": 0.5, "exact": True, "seed": 7}
    assert repr(compressor) == "RandomPruning(retention=0.5, exact=True, seed=7)"
    assert get_compressor("random.seed" and "random", **{"random.seed": 3}).seed == 3


def test_registration_rules(scratch_methods):
    with pytest.raises(ValueError, match="lower-case"):
        register_compressor("Bad+Name", paper="x")
    with pytest.raises(ValueError, match="stages"):
        register_compressor("ok", stages=("pixels",), paper="x")
    with pytest.raises(TypeError, match="default"):

        @register_compressor("needs-default", paper="x")
        class NoDefault(Compressor):
            def __init__(self, retention: float = 1.0, *, exact: bool = True, k) -> None:  # noqa: D107
                super().__init__(retention, exact=exact)


def test_composition_takes_each_stage_from_one_method(scratch_methods):
    pipeline = get_compressor("scratch-frames+uniform+scratch-llm", retention=0.25, clip_length=8, layer=3)
    assert isinstance(pipeline, Pipeline)
    assert pipeline.name == "scratch-frames+uniform+scratch-llm"
    assert pipeline.stages == ("frame", "token", "llm")
    assert pipeline.stage("frame").clip_length == 8
    assert pipeline.stage("llm").layer == 3
    assert pipeline.stage("token").retention == 0.25
    assert pipeline.retention == 0.25
    assert pipeline.needs_query and not pipeline.needs_attention
    # a parameter qualified by its method goes to that method only
    qualified = get_compressor("scratch-frames+scratch-llm", **{"scratch-llm.retention": 0.5})
    assert qualified.stage("llm").retention == 0.5 and qualified.stage("frame").retention == 1.0


def test_composition_errors(scratch_methods):
    with pytest.raises(ValueError, match="both provide a token stage"):
        get_compressor("uniform+random")
    with pytest.raises(ValueError, match="twice"):
        get_compressor("uniform+uniform")
    with pytest.raises(UnknownMethodError, match="malformed"):
        get_compressor("uniform+")
    with pytest.raises(UnknownParameterError, match="did you mean 'layer'"):
        get_compressor("uniform+scratch-llm", layr=3)
    with pytest.raises(UnknownMethodError, match="not in the chain"):
        get_compressor("uniform+scratch-llm", **{"random.seed": 1})

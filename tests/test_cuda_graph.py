"""GraphedCompressor: signatures, static buffers, output cloning and delegation.

CI has no GPU, so the capture itself is replaced by a stand-in with a CUDA graph's semantics: the captured call's
output tensors are the static buffers, and a replay recomputes from the static inputs and writes into those same
buffers. ``scripts/bench_kernels.py --methods all --cuda-graph`` checks the real capture of every method against
its eager output on a GPU.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import random_tokens
from vidcompress import GraphedCompressor, VideoTokens, get_compressor, graphed
from vidcompress.cuda_graph import OUTPUT_FIELDS, signature

METHODS = ["uniform", "holitom", "mmr", "flashvid+ppe"]


class StandIn(GraphedCompressor):
    """Captures on the CPU with a graph's semantics and counts captures and warm-up calls."""

    def __init__(self, *args, fail: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.captures = 0
        self.fail = fail

    def graphable(self, tokens: VideoTokens) -> bool:
        return self.compressor.stage("token") is not None and self.compressor.retention < 1.0

    @staticmethod
    def new_pool(device: torch.device) -> object:
        return object()

    def capture(self, call, device, pool, warmup):
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        self.captures += 1
        for _ in range(warmup):
            call()
        output = call()

        def replay() -> None:
            fresh = call()
            for name in OUTPUT_FIELDS:
                if getattr(output, name) is not None:
                    getattr(output, name).copy_(getattr(fresh, name))

        return output, replay


def tokens(seed: int, t: int = 4, **extra) -> VideoTokens:
    return random_tokens(t=t, h=4, w=4, d=8, seed=seed, attention=True, **extra)


def assert_same(got, want) -> None:
    for name in OUTPUT_FIELDS:
        a, b = getattr(got, name), getattr(want, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert torch.equal(a, b), name


@pytest.mark.parametrize("method", METHODS)
def test_replay_recomputes_from_the_new_input(method):
    eager = get_compressor(method, retention=0.25, **({"flashvid.llm_stage": False} if "flashvid" in method else {}))
    wrapped = StandIn(eager)
    first, second = tokens(1), tokens(2)
    assert_same(wrapped(first), eager(first))
    out = wrapped(second)  # a replay: the static inputs now hold `second`
    assert wrapped.captures == 1
    assert_same(out, eager(second))
    assert not torch.equal(out.features, eager(first).features)  # the inputs differ, so must the outputs


def test_outputs_are_clones_unless_asked_otherwise():
    eager = get_compressor("holitom", retention=0.25)
    first, second = tokens(3), tokens(4)
    cloning = StandIn(eager)
    kept = cloning(first)
    cloning(second)
    assert_same(kept, eager(first))  # not overwritten by the second call

    sharing = StandIn(eager, clone_outputs=False)
    shared = sharing(first)
    sharing(second)
    assert_same(shared, eager(second))  # the graph's buffer, overwritten by the next replay


def test_one_capture_per_signature_and_least_recent_released():
    wrapped = StandIn(get_compressor("uniform", retention=0.5), max_graphs=2)
    wrapped(tokens(0, t=4))
    wrapped(tokens(1, t=4))
    assert wrapped.captures == 1
    wrapped(tokens(2, t=6))
    assert wrapped.captures == 2 and len(wrapped.captured) == 2
    wrapped(tokens(3, t=4))  # t=4 becomes the most recent
    wrapped(tokens(4, t=8))  # evicts t=6
    assert wrapped.captures == 3
    assert [key[0][0] for key in wrapped.captured] == [4, 8]
    with_query = tokens(5, t=4, query=torch.randn(3, 8))
    assert signature(with_query) != signature(tokens(5, t=4))
    wrapped(with_query)
    assert wrapped.captures == 4


def test_warmup_runs_before_capture():
    calls = []

    class Counting(StandIn):
        def capture(self, call, device, pool, warmup):
            calls.append(warmup)
            return super().capture(call, device, pool, warmup)

    Counting(get_compressor("uniform", retention=0.5), warmup=3)(tokens(0))
    assert calls == [3]


def test_cpu_input_and_identity_run_the_compressor_as_is():
    eager = get_compressor("mmr", retention=0.25)
    wrapped = graphed(eager)
    sample = tokens(6)
    assert_same(wrapped(sample), eager(sample))
    assert not wrapped.captured
    full = graphed(get_compressor("mmr", retention=1.0))
    assert full(sample).features.data_ptr() == sample.features.data_ptr()  # the identity, no copy


def test_capture_failure_names_the_method():
    with pytest.raises(RuntimeError, match="holitom could not be captured as a CUDA graph"):
        StandIn(get_compressor("holitom", retention=0.25), fail=True)(tokens(0))


def test_delegates_everything_else_to_the_compressor():
    eager = get_compressor("flashvid", retention=0.1)
    wrapped = graphed(eager)
    assert wrapped.name == "flashvid" and wrapped.retention == 0.1
    assert wrapped.stages == eager.stages and wrapped.needs_attention
    assert wrapped.stage("llm") is eager
    assert repr(wrapped) == f"graphed({eager!r})"
    assert dataclasses.is_dataclass(wrapped(tokens(0)))


@pytest.mark.parametrize("bad", [{"warmup": 0}, {"warmup": True}, {"max_graphs": 0}])
def test_bad_options_raise(bad):
    with pytest.raises(ValueError):
        graphed(get_compressor("uniform", retention=0.5), **bad)


def test_rejects_what_is_not_a_compressor():
    with pytest.raises(ValueError, match="compressor or pipeline"):
        graphed("uniform")
    with pytest.raises(ValueError, match="expects VideoTokens"):
        graphed(get_compressor("uniform", retention=0.5))(torch.zeros(2, 3, 4))


def test_wrap_accepts_cuda_graph(qwen):
    from vidcompress import wrap

    model, processor = qwen
    vlm = wrap(model, "uniform", 0.5, processor=processor, cuda_graph=True)
    assert isinstance(vlm.compressor, GraphedCompressor)
    frames = torch.randint(0, 255, (4, 56, 56, 3), dtype=torch.uint8).numpy()
    answer = vlm.ask(frames, "what is shown ?", max_new_tokens=2)
    assert answer.stats["method"] == "uniform"
    assert answer.stats["visual_tokens_out"] == answer.stats["visual_tokens_in"] // 2


def test_wrap_passes_torch_compile_on_and_refuses_it_without_graphs(qwen):
    from vidcompress import wrap

    model, processor = qwen
    vlm = wrap(model, "uniform", 0.5, processor=processor, cuda_graph=True, torch_compile=True)
    assert isinstance(vlm.compressor, GraphedCompressor) and vlm.compressor.torch_compile
    with pytest.raises(ValueError, match="pass cuda_graph=True as well"):
        wrap(model, "uniform", 0.5, processor=processor, torch_compile=True)


def test_torch_compile_captures_the_compiled_stage_and_matches_eager():
    """``torch_compile=True`` captures the Inductor-compiled compressor (here on the CPU, through the stand-in
    capture); its outputs equal the eager compressor's up to float rounding, grouping and positions exactly."""
    eager = get_compressor("flashvid", retention=0.25, llm_stage=False)
    compiled = StandIn(eager, warmup=1, torch_compile=True)
    graphs_before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert repr(compiled) == f"graphed({eager!r}, torch_compile=True)"
    for seed in (11, 12):
        sample = tokens(seed)
        got, want = compiled(sample), eager(sample)
        for name in ("source", "representatives", "positions"):
            assert torch.equal(getattr(got, name), getattr(want, name)), name
        assert torch.allclose(got.features, want.features, atol=1e-5, rtol=1e-5)
    assert compiled.captures == 1  # one signature, one capture
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > graphs_before  # Dynamo traced it

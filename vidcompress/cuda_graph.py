"""Replay a compressor's token stage as one CUDA graph.

Every token-stage method runs without a host synchronisation and its output size depends only on the grid and the
retention, so one call is a fixed chain of kernels. On a GPU that chain is a few hundred small launches, and
issued one by one from Python the host cannot keep the GPU busy (FlashVID at 32 frames x 196 x 3584 on an H100:
9-11 ms eager for ~1.4 ms of kernels, 1.58 ms replayed, 0.99 ms replayed after ``torch_compile``;
``benchmarks/results/kernels_h100.md``).
:class:`GraphedCompressor` captures the chain once per input signature and then replays it with one launch, as vLLM
and ``torch.cuda.make_graphed_callables`` do for model forwards:

    compressor = graphed(get_compressor("flashvid", retention=0.1))
    out = compressor(tokens)   # first call of a signature: warm-up + capture; later calls: copy inputs in, replay

The signature is the grid and, for each input tensor (features, attention, positions, timestamps, query), its
shape, strides, dtype and device, or its absence. What differs from calling the compressor itself:

* the inputs are copied into the graph's own buffers (one device copy of the features per call);
* the outputs are cloned out of the graph's buffers (``clone_outputs=False`` returns the buffers themselves, which
  the next call overwrites);
* the compressor's parameters must not change after the first call: graphs are not recaptured;
* CPU tensors, ``retention=1.0`` and compressors without a token stage run the compressor as is;
* a method that cannot be captured (one that synchronises with the host) raises a ``RuntimeError`` naming it at
  its first call; the library's methods are all capturable (``scripts/bench_kernels.py --cuda-graph`` checks each
  against its eager output on a GPU).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch

from .compressor import Compressor, Pipeline
from .tokens import CompressedTokens, VideoTokens

__all__ = ["GraphedCompressor", "graphed"]

INPUT_FIELDS = ("features", "attention", "positions", "timestamps", "query")
OUTPUT_FIELDS = ("features", "positions", "source", "representatives", "position_sets")

Signature = tuple[Any, ...]
Replay = Callable[[], None]


def signature(tokens: VideoTokens) -> Signature:
    """What a captured graph is specialised to: the grid and each input tensor's layout (or its absence)."""
    layouts = []
    for name in INPUT_FIELDS:
        value = getattr(tokens, name)
        layouts.append(None if value is None else (tuple(value.shape), value.stride(), value.dtype, value.device))
    return (tokens.grid, *layouts)


def capture_cuda_graph(call: Callable[[], CompressedTokens], device: torch.device, pool: Any,
                       warmup: int) -> tuple[CompressedTokens, Replay]:
    """Run ``call`` ``warmup`` times on a side stream (Triton compilation, cached index tensors), then capture one
    call into a CUDA graph drawing on ``pool``; return the captured (static) output and the graph's replay."""
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            call()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        output = call()
    return output, graph.replay


@dataclasses.dataclass
class CapturedCall:
    """One captured signature: the static inputs the graph reads, the static output it writes, and its replay."""

    inputs: VideoTokens
    output: CompressedTokens
    replay: Replay

    def __call__(self, tokens: VideoTokens, clone_outputs: bool) -> CompressedTokens:
        for name in INPUT_FIELDS:
            value = getattr(tokens, name)
            if value is not None:
                getattr(self.inputs, name).copy_(value)
        self.replay()
        if not clone_outputs:
            return self.output
        clones = {name: getattr(self.output, name).clone() for name in OUTPUT_FIELDS
                  if getattr(self.output, name) is not None}
        return dataclasses.replace(self.output, **clones)


class GraphedCompressor:
    """A compressor (or pipeline) whose token stage replays as one CUDA graph per input signature.

    Args:
        compressor: a registered method or a pipeline (``get_compressor(...)``).
        warmup: eager calls before each capture (at least 1: the first call compiles the Triton kernels and fills
            the methods' caches of index tensors, which a graph must find ready).
        clone_outputs: return copies of the graph's output buffers (default); ``False`` returns the buffers, valid
            until the next call (the graphs of all signatures share one memory pool).
        max_graphs: captured signatures kept; the least recently used is released beyond that.
        torch_compile: run the compressor through ``torch.compile`` (Inductor), on CUDA before capturing it: the
            methods' index bookkeeping (hundreds of small element-wise kernels) fuses into a few generated Triton
            kernels while the library's own kernels run as they are (FlashVID at 32 x 196 x 3584 on an H100: ~440
            kernels become ~210). Each signature compiles once, at its first call (10-120 s); calls that are not
            captured (CPU tensors, ``retention=1.0``) run compiled too.

    Every other attribute (``name``, ``stages``, ``retention``, ``stage(...)``, ``needs_attention``, ...) is the wrapped
    compressor's, so a graphed compressor goes wherever a compressor goes (``wrap(..., cuda_graph=True)``).
    """

    def __init__(self, compressor: Compressor | Pipeline, *, warmup: int = 2, clone_outputs: bool = True,
                 max_graphs: int = 8, torch_compile: bool = False) -> None:
        if not isinstance(compressor, (Compressor, Pipeline)):
            raise ValueError(f"graphed() takes a compressor or pipeline, got {type(compressor).__name__}")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
            raise ValueError(f"warmup must be an integer >= 1, got {warmup!r}")
        if isinstance(max_graphs, bool) or not isinstance(max_graphs, int) or max_graphs < 1:
            raise ValueError(f"max_graphs must be an integer >= 1, got {max_graphs!r}")
        self.compressor = compressor
        self.warmup = warmup
        self.clone_outputs = bool(clone_outputs)
        self.max_graphs = max_graphs
        self.torch_compile = bool(torch_compile)
        self._call: Callable[[VideoTokens], CompressedTokens] = (
            torch.compile(compressor.__call__, dynamic=False) if self.torch_compile else compressor
        )
        self.captured: OrderedDict[Signature, CapturedCall] = OrderedDict()
        self._pool: Any = None

    def __getattr__(self, name: str) -> Any:  # only reached for attributes not set in __init__
        if name == "compressor":  # not yet set (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.compressor, name)

    def graphable(self, tokens: VideoTokens) -> bool:
        """Whether this call replays a graph: CUDA input, a token stage, and retention below 1."""
        has_token_stage = self.compressor.stage("token") is not None
        return tokens.features.is_cuda and has_token_stage and self.compressor.retention < 1.0

    def __call__(self, tokens: VideoTokens) -> CompressedTokens:
        if not isinstance(tokens, VideoTokens):
            raise ValueError(f"{self.compressor.name} expects VideoTokens, got {type(tokens).__name__}")
        if not self.graphable(tokens):
            return self._call(tokens)
        key = signature(tokens)
        call = self.captured.get(key)
        if call is None:
            call = self._capture(tokens)
            self.captured[key] = call
            while len(self.captured) > self.max_graphs:
                self.captured.popitem(last=False)
        else:
            self.captured.move_to_end(key)
        return call(tokens, self.clone_outputs)

    def _capture(self, tokens: VideoTokens) -> CapturedCall:
        static = dataclasses.replace(
            tokens,
            **{name: getattr(tokens, name).clone() for name in INPUT_FIELDS if getattr(tokens, name) is not None},
            check_finite=False,
        )
        device = tokens.features.device
        if self._pool is None:
            self._pool = self.new_pool(device)
        try:
            output, replay = self.capture(lambda: self._call(static), device, self._pool, self.warmup)
        except RuntimeError as error:
            raise RuntimeError(
                f"{self.compressor.name} could not be captured as a CUDA graph (a host synchronisation or a "
                f"host-dependent step in its token stage?); call it without graphed(): {error}"
            ) from error
        return CapturedCall(inputs=static, output=output, replay=replay)

    @staticmethod
    def new_pool(device: torch.device) -> Any:
        """A memory pool shared by this compressor's graphs: they never run at the same time, and each graph's
        static output stays allocated, so no capture reuses another graph's output buffers."""
        with torch.cuda.device(device):
            return torch.cuda.graph_pool_handle()

    capture = staticmethod(capture_cuda_graph)

    def __repr__(self) -> str:
        return f"graphed({self.compressor!r}{', torch_compile=True' if self.torch_compile else ''})"


def graphed(compressor: Compressor | Pipeline, **options: Any) -> GraphedCompressor:
    """``compressor`` with its token stage replayed as a CUDA graph (see :class:`GraphedCompressor`)."""
    return GraphedCompressor(compressor, **options)

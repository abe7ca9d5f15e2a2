#!/usr/bin/env python
"""Time the ``vidcompress.kernels`` Triton kernels next to their PyTorch paths and the device copy bandwidth.

Sizes: LLaVA-OV-7B (32 / 64 frames x 196 tokens x 3584) and Qwen2.5-VL-7B (16 / 32 temporal groups x 256 tokens x
3584), bf16. Each timing is the median of ``--runs`` CUDA-event measurements after ``--warmup`` calls, rotating over
several input copies so no run finds its input in L2. Every size also checks kernel against reference. Prints a
markdown table and writes JSON (command, GPU, versions, date, rows) under ``benchmarks/results/``.

    python scripts/bench_kernels.py                      # all kernels, all sizes (needs a CUDA GPU)
    python scripts/bench_kernels.py --methods all        # also every registered token-stage method (time_method)
    python scripts/bench_kernels.py --sweep              # also time segment-mean launch configs (pick the default)
    python scripts/bench_kernels.py --methods all --cuda-graph   # methods eager and as one CUDA graph replay
    python scripts/bench_kernels.py --methods all --cuda-graph --torch-compile all --sizes llava-ov-7b/32f
                                                          # also graphed(..., torch_compile=True)
    python scripts/bench_kernels.py --report-only benchmarks/results/kernels_h100.json   # rewrite its .md
    TRITON_INTERPRET=1 python scripts/bench_kernels.py --quick   # CPU smoke test of the script itself

Bandwidth is "minimum bytes" (each input read once, each output written once) over time; "% copy" compares it with
``torch.empty_like(x).copy_(x)`` on the same input (read + write), "% same-bytes copy" (segment mean) with a copy
that moves as many bytes as the merge (the same launch and ramp-up costs on a smaller transfer).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import vidcompress
from vidcompress import VideoTokens, available_methods, get_compressor, graphed, method_info, target_count
from vidcompress.kernels import (
    aligned_above,
    aligned_cosine,
    best_match,
    density_scores,
    diversity_partition,
    greedy_kcenter,
    greedy_mmr,
    pairwise,
    segment_mean,
    segment_mean_csr,
    segment_offsets,
)

SIZES: dict[str, tuple[int, int, int, int]] = {  # name: (T, H, W, D)
    "llava-ov-7b/32f": (32, 14, 14, 3584),
    "llava-ov-7b/64f": (64, 14, 14, 3584),
    "qwen2.5-vl-7b/16g": (16, 16, 16, 3584),
    "qwen2.5-vl-7b/32g": (32, 16, 16, 3584),
}
QUICK_SIZES = {"quick/4f": (4, 4, 5, 48)}
RESULTS_DIR = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
L2_FLUSH_BYTES = 256 * 2**20  # rotate over enough input copies to exceed any L2 several times


#: GPU clock cycles of the stall queued before each timed call under ``--device-time`` (~0.5 ms at ~2 GHz): longer
#: than the host takes to enqueue any one call (a segment mean with its sort and checks took over 100 us, so with a
#: 100 us stall its "incl. sort" row measured host time).
STALL_CYCLES = 1_000_000


def median_ms(fn: Callable[[Any], Any], inputs: list[Any], warmup: int, runs: int, device: torch.device,
              device_time: bool = False) -> float:
    """Median wall time in ms of ``fn(inputs[i % len(inputs)])`` (CUDA events on GPU, perf_counter on CPU).

    With ``device_time`` a GPU stall is queued before the start event, so the host has enqueued the whole call
    before the GPU reaches it: the events then measure device time only, without Python and launch overhead.
    """
    for i in range(warmup):
        fn(inputs[i % len(inputs)])
    times = []
    for i in range(runs):
        arg = inputs[(warmup + i) % len(inputs)]
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            if device_time:
                torch.cuda._sleep(STALL_CYCLES)
            start.record()
            fn(arg)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            begin = time.perf_counter()
            fn(arg)
            times.append((time.perf_counter() - begin) * 1e3)
    return statistics.median(times)


def rotating(make: Callable[[int], Any], bytes_each: int) -> list[Any]:
    """Enough distinct inputs (at least 2) that cycling through them overflows the L2 cache."""
    count = max(2, -(-L2_FLUSH_BYTES // max(bytes_each, 1)))
    return [make(seed) for seed in range(min(count, 8))]


def random_video(seed: int, shape: tuple[int, int, int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    generator = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(shape, generator=generator, device=device, dtype=torch.float32).to(dtype)


class Bench:
    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        self.args = args
        self.device = device
        self.dtype = torch.bfloat16
        self.triton = device.type == "cuda" or args.quick
        self.rows: list[dict[str, Any]] = []

    def time(self, fn: Callable[[Any], Any], inputs: list[Any]) -> float:
        return median_ms(fn, inputs, self.args.warmup, self.args.runs, self.device, self.args.device_time)

    def add(self, size: str, op: str, triton_ms: float | None, torch_ms: float | None, nbytes: int,
            copy_tbs: float, agreement: dict[str, Any]) -> None:
        tbs = None if triton_ms is None else nbytes / (triton_ms * 1e-3) / 1e12
        self.rows.append({
            "size": size, "op": op, "triton_ms": triton_ms, "torch_ms": torch_ms, "min_bytes": nbytes,
            "triton_tb_s": tbs, "fraction_of_copy": None if tbs is None else tbs / copy_tbs, **agreement,
        })

    def copy_bandwidth(self, videos: list[torch.Tensor], elements: int) -> float:
        """TB/s (read + written) of ``empty_like().copy_`` on the first ``elements`` of each video: a copy that
        moves as many bytes as the kernel it is compared with, so both pay the same launch and ramp-up costs."""
        parts = [video.reshape(-1)[:elements] for video in videos]
        ms = self.time(lambda x: torch.empty_like(x).copy_(x), parts)
        return 2 * elements * videos[0].element_size() / (ms * 1e-3) / 1e12

    def run_size(self, name: str, t: int, h: int, w: int, d: int) -> None:
        n, dtype, device = h * w, self.dtype, self.device
        item = torch.finfo(dtype).bits // 8
        video_bytes = t * n * d * item
        videos = rotating(lambda s: random_video(s, (t, n, d), dtype, device), video_bytes)

        copy_ms = self.time(lambda x: torch.empty_like(x).copy_(x), videos)
        copy_tbs = 2 * video_bytes / (copy_ms * 1e-3) / 1e12
        self.add(name, "copy (empty_like().copy_)", None, copy_ms, 2 * video_bytes, copy_tbs, {})
        self.rows[-1]["copy_tb_s"] = copy_tbs

        flats = [v.reshape(t * n, d) for v in videos]
        for retention in (0.25, 0.10):
            k = target_count((t, h, w), retention)
            generator = torch.Generator(device=device).manual_seed(k)
            source = torch.randint(0, k, (t * n,), generator=generator, device=device)
            members, offsets = segment_offsets(source, k)
            nbytes = (t * n + k) * d * item
            ref = self.time(lambda x: segment_mean(x, source, k, use_triton=False, validate=False), flats)
            agree: dict[str, Any] = {}
            kernel = full = None
            if self.triton:
                kernel = self.time(lambda x: segment_mean_csr(x, members, offsets, use_triton=True), flats)
                full = self.time(lambda x: segment_mean(x, source, k, use_triton=True, validate=False), flats)
                got = segment_mean(flats[0], source, k, use_triton=True).float()
                exact = segment_mean(flats[0].double(), source, k, use_triton=False)
                error = (got - exact).abs().max().item()
                agree = {"max_abs_err": error, "agree": error <= 1.6e-2 * max(1.0, exact.abs().max().item())}
            self.add(name, f"segment mean -> {retention:.0%} (CSR given)", kernel, ref, nbytes, copy_tbs, agree)
            same_bytes_tbs = self.copy_bandwidth(videos, nbytes // (2 * item))
            self.rows[-1]["same_bytes_copy_tb_s"] = same_bytes_tbs
            if kernel is not None:
                self.rows[-1]["fraction_of_same_bytes_copy"] = self.rows[-1]["triton_tb_s"] / same_bytes_tbs
            self.add(name, f"segment mean -> {retention:.0%} (incl. sort)", full, None, nbytes, copy_tbs, {})

        cos_bytes = video_bytes + (t - 1) * n * 4
        ref = self.time(lambda x: aligned_cosine(x, use_triton=False), videos)
        kernel, agree = None, {}
        if self.triton:
            kernel = self.time(lambda x: aligned_cosine(x, use_triton=True), videos)
            got = aligned_cosine(videos[0], use_triton=True)
            error = (got - aligned_cosine(videos[0], use_triton=False)).abs().max().item()
            agree = {"max_abs_err": error, "agree": error <= 1e-4}
        self.add(name, "aligned cosine (lag 1)", kernel, ref, cos_bytes, copy_tbs, agree)

        ref = self.time(lambda x: aligned_above(x, 0.8, use_triton=False), videos)
        kernel, agree = None, {}
        if self.triton:
            kernel = self.time(lambda x: aligned_above(x, 0.8, use_triton=True), videos)
            cosine = aligned_cosine(videos[0], use_triton=False)
            decided = (cosine - 0.8).abs() > 1e-4
            same = aligned_above(videos[0], 0.8, use_triton=True) == (cosine > 0.8)
            agree = {"agree": bool(same[decided].all())}
        self.add(name, "aligned cosine > 0.8 (bool)", kernel, ref, video_bytes + (t - 1) * n, copy_tbs, agree)

        ref = self.time(lambda x: best_match(x, use_triton=False), videos)
        kernel, agree = None, {}
        if self.triton:
            kernel = self.time(lambda x: best_match(x, use_triton=True), videos)
            agree = best_match_agreement(videos[0])
        self.add(name, "best match in previous frame", kernel, ref, video_bytes + (t - 1) * n * 12, copy_tbs, agree)

        for op, kind, dtype_in in (("pairwise cosine distance, bf16 (ADTS)", "cosine_distance", dtype),
                                   ("pairwise euclidean, float32 split (DPC-kNN)", "euclidean", torch.float32)):
            # float32 inputs drawn in float32 (not widened bf16, whose low split part would be zero)
            inputs = [random_video(100 + s, (t, n, d), dtype_in, device) for s in range(2)]
            nbytes = inputs[0].numel() * inputs[0].element_size() + t * n * n * 4
            ref = self.time(lambda x: pairwise(x, kind=kind, use_triton=False), inputs)
            kernel, agree = None, {}
            if self.triton:
                kernel = self.time(lambda x: pairwise(x, kind=kind, use_triton=True), inputs)
                agree = pairwise_agreement(inputs[0], kind)
            self.add(name, op, kernel, ref, nbytes, copy_tbs, agree)
            del inputs

        distances = pairwise(videos[0], kind="euclidean", divide_by=d**0.5)
        valid = torch.rand(t, n, generator=torch.Generator(device=device).manual_seed(0), device=device) < 0.8
        neighbours = torch.full((t,), 7, dtype=torch.long, device=device)
        ref = self.time(lambda x: density_scores(x, neighbours, 7, valid, use_triton=False), [distances])
        kernel, agree = None, {}
        if self.triton:
            kernel = self.time(lambda x: density_scores(x, neighbours, 7, valid, use_triton=True), [distances])
            got = density_scores(distances, neighbours, 7, valid, use_triton=True)
            want = density_scores(distances, neighbours, 7, valid, use_triton=False)
            finite = torch.isfinite(want[1])
            error = max((got[0] - want[0]).abs().max().item(), (got[1] - want[1])[finite].abs().max().item())
            agree = {"max_abs_err": error, "agree": error <= 1e-5 and torch.equal(finite, torch.isfinite(got[1]))}
        self.add(name, "DPC-kNN density + score, k=7", kernel, ref, distances.numel() * 4, copy_tbs, agree)

        budget = max(1, round(0.25 * n))
        budgets = torch.full((t,), budget, dtype=torch.long, device=device)
        importance = torch.rand(t, n, device=device)
        scale = torch.rand(t, n, device=device)
        greedy_cases = {
            f"greedy k-center, {budget}/frame":
                lambda x, u: greedy_kcenter(x, budgets, budget, use_triton=u, validate=False),
            f"greedy k-center scaled, {budget}/frame":
                lambda x, u: greedy_kcenter(x, budgets, budget, scale, use_triton=u, validate=False),
            f"greedy MMR, {budget}/frame":
                lambda x, u: greedy_mmr(x, importance, budgets, budget, use_triton=u, validate=False),
        }
        pool = target_count((t, h, w), 0.1)
        greedy_cases[f"greedy k-center, global pool of {t * n}, {pool} picks"] = (
            lambda x, u: greedy_kcenter(x.reshape(1, t * n, d), pool, pool, use_triton=u, validate=False)
        )
        for op, call in greedy_cases.items():
            ref = self.time(lambda x: call(x, False), videos)
            kernel, agree = None, {}
            if self.triton:
                kernel = self.time(lambda x: call(x, True), videos)
                got, want = call(videos[0], True), call(videos[0], False)
                frames_equal = (got.order == want.order).all(dim=1).float().mean().item()
                agree = {"frames_identical": frames_equal, "agree": frames_equal == 1.0}
            self.add(name, op, kernel, ref, video_bytes, copy_tbs, agree)

        unit = torch.nn.functional.normalize(videos[0].float(), dim=-1)
        similarity = torch.bmm(unit, unit.transpose(1, 2))
        residual = torch.argsort(torch.rand(t, n, device=device), dim=1)[:, budget // 2:]
        keep = budget - budget // 2
        ref = self.time(lambda s: diversity_partition(s, residual, keep, 8, use_triton=False), [similarity])
        kernel, agree = None, {}
        if self.triton:
            kernel = self.time(lambda s: diversity_partition(s, residual, keep, 8, use_triton=True), [similarity])
            same = diversity_partition(similarity, residual, keep, 8, use_triton=True) == diversity_partition(
                similarity, residual, keep, 8, use_triton=False)
            agree = {"frames_identical": same.all(dim=1).float().mean().item(), "agree": bool(same.all())}
        self.add(name, f"diversity partition {n - budget // 2} -> {keep}/frame", kernel, ref,
                 similarity.numel() * 4, copy_tbs, agree)


SWEEP_CONFIGS = [  # (BLOCK_L, BLOCK_D, num_warps, BLOCK_K) for the bf16 sizes; the default is marked in the output
    (block_l, block_d, warps, block_k)
    for block_l in (4, 8, 16)
    for block_d in (512, 1024)
    for warps in (2, 4, 8)
    for block_k in (1, 2, 4)
]


def best_of_rounds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merge the kernel rows of repeated rounds (``--repeats``): per (size, op) the fastest Triton and PyTorch
    medians and the fastest same-bytes copy, bandwidths and fractions recomputed from them; a row agrees only if it
    agreed in every round, and its largest error is kept.

    On a GPU shared in time with other work, a burst of foreign kernels inflated whole medians 2-5x in the runs of
    2026-12-05 (different rows in each run); rounds that lie minutes apart reject such bursts."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["size"], row["op"])
        if key not in merged:
            merged[key] = dict(row)
            continue
        best = merged[key]
        for field in ("triton_ms", "torch_ms"):
            if row[field] is not None:
                best[field] = min(best[field], row[field])
        if "same_bytes_copy_tb_s" in row:
            best["same_bytes_copy_tb_s"] = max(best["same_bytes_copy_tb_s"], row["same_bytes_copy_tb_s"])
        if "agree" in row:
            best["agree"] = best["agree"] and row["agree"]
        if "max_abs_err" in row:
            best["max_abs_err"] = max(best["max_abs_err"], row["max_abs_err"])
    copy_tbs = {row["size"]: row["min_bytes"] / (row["torch_ms"] * 1e-3) / 1e12
                for row in merged.values() if "copy_tb_s" in row}
    for row in merged.values():
        if "copy_tb_s" in row:
            row["copy_tb_s"] = copy_tbs[row["size"]]
        if row["triton_ms"] is not None:
            row["triton_tb_s"] = row["min_bytes"] / (row["triton_ms"] * 1e-3) / 1e12
            row["fraction_of_copy"] = row["triton_tb_s"] / copy_tbs[row["size"]]
            if "same_bytes_copy_tb_s" in row:
                row["fraction_of_same_bytes_copy"] = row["triton_tb_s"] / row["same_bytes_copy_tb_s"]
    return list(merged.values())


def sweep_segment_mean(bench: Bench, sizes: dict[str, tuple[int, int, int, int]]) -> list[dict[str, Any]]:
    """Time :func:`segment_mean_csr` (CSR given) over :data:`SWEEP_CONFIGS` at each size and retention."""
    from vidcompress.kernels._triton.segment_mean import default_config

    rows = []
    for name, (t, h, w, d) in sizes.items():
        item = torch.finfo(bench.dtype).bits // 8
        flats = rotating(lambda s: random_video(s, (t * h * w, d), bench.dtype, bench.device), t * h * w * d * item)
        copy_ms = bench.time(lambda x: torch.empty_like(x).copy_(x), flats)
        for retention in (0.25, 0.10):
            k = target_count((t, h, w), retention)
            generator = torch.Generator(device=bench.device).manual_seed(k)
            source = torch.randint(0, k, (t * h * w,), generator=generator, device=bench.device)
            members, offsets = segment_offsets(source, k)
            expected = segment_mean(flats[0], source, k, use_triton=False)
            chosen = tuple(default_config(k, t * h * w, d, item))
            nbytes = (t * h * w + k) * d * item
            for config in SWEEP_CONFIGS:
                ms = bench.time(lambda x: segment_mean_csr(x, members, offsets, use_triton=True, config=config), flats)
                got = segment_mean_csr(flats[0], members, offsets, use_triton=True, config=config)
                rows.append({
                    "size": name, "retention": retention, "config": list(config), "default": config == chosen,
                    "ms": ms, "fraction_of_copy": (nbytes / ms) / (2 * t * h * w * d * item / copy_ms),
                    "agree": bool(torch.allclose(got.float(), expected.float(), rtol=1.6e-2, atol=1.6e-2)),
                })
    return rows


def best_match_agreement(video: torch.Tensor, repeats: int = 5) -> dict[str, Any]:
    """Kernel vs PyTorch best match, each judged against an fp64 recomputation of the cosines it chose.

    A near-tie can flip an index without a value error; a value error against fp64 is a wrong dot product. The
    kernel is also run ``repeats`` times: a race shows up as runs that differ.
    """
    got, want = best_match(video, use_triton=True), best_match(video, use_triton=False)
    runs_identical = all(
        torch.equal(again.index, got.index) and torch.equal(again.value, got.value)
        for again in (best_match(video, use_triton=True) for _ in range(repeats))
    )
    exact = torch.nn.functional.normalize(video.double(), dim=-1)
    cosine = torch.bmm(exact[1:], exact[:-1].transpose(1, 2))  # [T-1, N, N] fp64
    top2 = cosine.topk(2, dim=-1).values
    kernel_err = (got.value.double() - cosine.gather(2, got.index[..., None]).squeeze(2)).abs()
    reference_err = (want.value.double() - cosine.gather(2, want.index[..., None]).squeeze(2)).abs()
    mismatch = got.index != want.index
    clear = (top2[..., 0] - top2[..., 1]) > 1e-5  # not a near-tie in exact arithmetic
    return {
        "max_abs_err": (got.value - want.value).abs().max().item(),
        "index_match": (~mismatch).float().mean().item(),
        "mismatches": int(mismatch.sum()),
        "clear_mismatches": int((mismatch & clear).sum()),
        "kernel_err_vs_fp64": kernel_err.max().item(),
        "reference_err_vs_fp64": reference_err.max().item(),
        "kernel_runs_identical": runs_identical,
        "agree": kernel_err.max().item() <= 1e-4 and not bool((mismatch & clear).any()) and runs_identical,
    }


def pairwise_agreement(x: torch.Tensor, kind: str, repeats: int = 3) -> dict[str, Any]:
    """The tensor-core path and the float32 PyTorch path of :func:`pairwise`, each against float64: the largest
    cosine error, or for distances the largest error of the squared distance relative to ``(|x|^2 + |y|^2) / 2``.
    Repeated runs must be identical (no race)."""
    got = pairwise(x, kind=kind, use_triton=True)
    runs_identical = all(torch.equal(pairwise(x, kind=kind, use_triton=True), got) for _ in range(repeats))
    exact = x.double()
    if kind == "euclidean":
        square = exact.square().sum(-1)
        scale = (square[:, :, None] + square[:, None, :]) / 2
        want = torch.cdist(exact, exact).square()

        def error(value: torch.Tensor) -> float:
            return ((value.double().square() - want) / scale).abs().max().item()
    else:
        unit = torch.nn.functional.normalize(exact, dim=-1)
        want = 1.0 - torch.bmm(unit, unit.transpose(1, 2))

        def error(value: torch.Tensor) -> float:
            return (value.double() - want).abs().max().item()
    kernel_err = error(got)
    reference_err = error(pairwise(x, kind=kind, use_triton=False))
    return {"kernel_err_vs_fp64": kernel_err, "reference_err_vs_fp64": reference_err,
            "kernel_runs_identical": runs_identical, "agree": kernel_err <= 1e-4 and runs_identical}


def time_method(name: str, grid: tuple[int, int, int], dim: int, retention: float = 0.25,
                device: torch.device | None = None, warmup: int = 3, runs: int = 10, cuda_graph: bool = False,
                torch_compile: bool = False, **params: Any) -> dict[str, Any]:
    """Hook for the token-stage methods: median ms of ``get_compressor(name, retention=...)`` on random inputs.

    The input is a :class:`VideoTokens` of random bf16 features ``[T, H*W, dim]`` with ``check_finite=False``,
    random attention (a softmax over each frame's tokens) and, for methods that need it, a random 16-token query.
    With ``cuda_graph`` the same inputs also go through :func:`vidcompress.graphed` (input copy, one replay, output
    clone: what a caller pays), and the graphed output is checked against the eager one on two fresh inputs; with
    ``torch_compile`` as well, so does ``graphed(..., torch_compile=True)`` (its first call, which compiles, is
    timed on the host as ``compile_s``).
    """
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    t, h, w = grid
    info = method_info(name)
    generator = torch.Generator(device=device).manual_seed(0)

    def make(seed: int) -> VideoTokens:
        features = random_video(seed, (t, h * w, dim), torch.bfloat16, device)
        attention = torch.softmax(torch.randn(t, h * w, generator=generator, device=device), dim=-1)
        query = None
        if info.needs_query:
            query = torch.randn(16, dim, generator=generator, device=device).to(torch.bfloat16)
        return VideoTokens(features=features, grid=grid, attention=attention, query=query, check_finite=False)

    compressor = get_compressor(name, retention=retention, **params)
    inputs = rotating(make, t * h * w * dim * 2)
    ms = median_ms(compressor, inputs, warmup, runs, device)
    count = compressor(inputs[0]).features.shape[0]
    row = {"method": name, "grid": list(grid), "dim": dim, "retention": retention, "ms": ms, "tokens_out": count,
           "target_count": target_count(grid, retention)}
    if cuda_graph:
        replayed = graphed(compressor)
        try:
            row["graph_ms"] = median_ms(replayed, inputs, warmup, runs, device)
            row.update(graph_agreement(compressor, replayed, [make(1000 + i) for i in range(2)]))
        except RuntimeError as error:  # the eager timing stands; the row says why the graph failed
            row.update(graph_ms=None, graph_agrees=False, graph_error=f"{type(error).__name__}: {error}"[:300])
    if cuda_graph and torch_compile:
        row.update(time_compiled(compressor, inputs, [make(1000 + i) for i in range(2)], warmup, runs, device))
    return row


def time_compiled(compressor: Any, inputs: list[VideoTokens], checks: list[VideoTokens], warmup: int, runs: int,
                  device: torch.device) -> dict[str, Any]:
    """``graphed(compressor, torch_compile=True)``: host seconds of the first (compiling) call, replay ms, and its
    agreement with the eager compressor (``compiled_`` keys)."""
    fused = graphed(compressor, torch_compile=True)
    try:
        start = time.perf_counter()
        fused(inputs[0])
        torch.cuda.synchronize(device)
        compile_s = time.perf_counter() - start
        result = {"compile_s": compile_s, "compiled_graph_ms": median_ms(fused, inputs, warmup, runs, device)}
        agreement = graph_agreement(compressor, fused, checks)
    except RuntimeError as error:
        return {"compiled_graph_ms": None, "compiled_agrees": False,
                "compiled_error": f"{type(error).__name__}: {error}"[:300]}
    return result | {key.replace("graph_", "compiled_"): value for key, value in agreement.items()}


def graph_agreement(eager: Any, replayed: Any, checks: list[VideoTokens]) -> dict[str, Any]:
    """Graphed vs eager output on fresh inputs: identical ``source`` / ``representatives`` / positions, features
    within bf16 rounding (a float ``index_add_`` may sum in another order)."""
    same_grouping, feature_err = True, 0.0
    for tokens in checks:
        want, got = eager(tokens), replayed(tokens)
        same_grouping &= all(torch.equal(getattr(want, f), getattr(got, f))
                             for f in ("source", "representatives", "positions"))
        if want.position_sets is not None:
            same_grouping &= got.position_sets is not None and torch.equal(want.position_sets, got.position_sets)
        scale = max(1.0, want.features.float().abs().max().item())
        feature_err = max(feature_err, (want.features.float() - got.features.float()).abs().max().item() / scale)
    return {"graph_same_grouping": same_grouping, "graph_feature_err": feature_err,
            "graph_agrees": same_grouping and feature_err <= 1.6e-2}


def token_methods() -> list[str]:
    return [m for m in available_methods() if "token" in method_info(m).stages and m not in ("identity", "none")]


def fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def markdown(rows: list[dict[str, Any]]) -> str:
    """Kernel rows. "% of copy": of the full-video copy's bandwidth; "% same-bytes copy" (segment mean): of a copy
    that moves as many bytes as the merge does."""
    lines = ["| size | op | Triton ms | PyTorch ms | speed-up | Triton TB/s | % of copy | % same-bytes copy | agrees |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        speedup = row["torch_ms"] / row["triton_ms"] if row["triton_ms"] and row["torch_ms"] else None
        share = None if row["fraction_of_copy"] is None else 100 * row["fraction_of_copy"]
        same = row.get("fraction_of_same_bytes_copy")
        agrees = "" if "agree" not in row else ("yes" if row["agree"] else "**NO**")
        lines.append(f"| {row['size']} | {row['op']} | {fmt(row['triton_ms'])} | {fmt(row['torch_ms'])} | "
                     f"{fmt(speedup, 1)} | {fmt(row['triton_tb_s'], 2)} | {fmt(share, 0)} | "
                     f"{fmt(None if same is None else 100 * same, 0)} | {agrees} |")
    return "\n".join(lines)


def method_markdown(rows: list[dict[str, Any]]) -> str:
    """The token-stage table: eager ms and, where timed, CUDA-graph ms and its agreement with eager."""
    graphs = any("graph_ms" in row for row in rows)
    compiled = any("compiled_graph_ms" in row for row in rows)
    head = ("| size | method | retention | eager ms |" + (" graph ms | graph agrees |" if graphs else "")
            + (" compiled graph ms | compiled agrees | compile s |" if compiled else "") + " tokens out |")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for row in rows:
        cells = [row["size"], row["method"], str(row["retention"]), f"{row['ms']:.3f}"]
        if graphs:
            graph_ms = row.get("graph_ms")
            agrees = row.get("graph_agrees")
            cells += [fmt(graph_ms), "" if agrees is None else ("yes" if agrees else "**NO**")]
        if compiled:
            agrees = row.get("compiled_agrees")
            cells += [fmt(row.get("compiled_graph_ms")), "" if agrees is None else ("yes" if agrees else "**NO**"),
                      fmt(row.get("compile_s"), 0)]
        cells.append(str(row["tokens_out"]) if "error" not in row else row["error"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def versions() -> dict[str, str]:
    info = {"python": platform.python_version(), "torch": torch.__version__, "vidcompress": vidcompress.__version__,
            "cuda": str(torch.version.cuda)}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = "not installed"
    return info


def report(record: dict[str, Any]) -> str:
    """The markdown of a result record: header (command, device, versions, date), kernel rows, token-stage methods,
    and the launch-config sweep when there is one."""
    lines = ["# Kernels and token-stage methods", "", f"- command: `{record['command']}`",
             f"- device: {record['gpu']}; {record['versions']}; {record['date']}",
             f"- CUDA events, median of {record['runs']} runs after {record['warmup']} warm-up (kernel rows: best of "
             f"{record.get('repeats', 1)} rounds over all sizes), rotating inputs, "
             f"kernel rows device time only: {record['device_time']}", "", markdown(record["rows"])]
    if record["methods"]:
        lines += ["", method_markdown(record["methods"])]
    if record["sweep"]:
        lines += ["", "| size | retention | BLOCK_L, BLOCK_D, warps, BLOCK_K | ms | % of copy | agrees |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for row in record["sweep"]:
            mark = " (default)" if row["default"] else ""
            lines.append(f"| {row['size']} | {row['retention']} | {row['config']}{mark} | {row['ms']:.4f} | "
                         f"{100 * row['fraction_of_copy']:.0f} | {'yes' if row['agree'] else '**NO**'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(SIZES), help="comma-separated subset of: " + ", ".join(SIZES))
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=1,
                        help="kernel rows: measure every size this many rounds and keep each row's best median "
                             "(rejects bursts of foreign work on a shared GPU)")
    parser.add_argument("--methods", default="", help="'all' or comma-separated registered methods to time too")
    parser.add_argument("--retention", type=float, default=0.25, help="retention for --methods")
    parser.add_argument("--sweep", action="store_true", help="also time segment-mean launch configs")
    parser.add_argument("--cuda-graph", action="store_true",
                        help="methods: also time each through vidcompress.graphed (one CUDA graph replay per call)")
    parser.add_argument("--torch-compile", default="",
                        help="with --cuda-graph: 'all' or comma-separated methods also timed through "
                             "graphed(..., torch_compile=True) (each compiles once per size: tens of seconds)")
    parser.add_argument("--device-time", action="store_true",
                        help="kernel rows: device time only (a GPU stall hides host/launch overhead)")
    parser.add_argument("--quick", action="store_true", help="tiny size, few runs: a smoke test (CPU works)")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: benchmarks/results/...)")
    parser.add_argument("--report-only", type=Path, default=None, help="rewrite the markdown of a result JSON")
    args = parser.parse_args()
    if args.report_only is not None:
        args.report_only.with_suffix(".md").write_text(report(json.loads(args.report_only.read_text())))
        print(f"wrote {args.report_only.with_suffix('.md')}")
        return
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.quick:
        sys.exit("bench_kernels.py needs a CUDA GPU (use --quick with TRITON_INTERPRET=1 for a CPU smoke test)")
    sizes = QUICK_SIZES if args.quick else {name: SIZES[name] for name in args.sizes.split(",")}
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.quick:
        args.warmup, args.runs = 1, 3

    bench = Bench(args, device)
    for _ in range(args.repeats):
        for name, (t, h, w, d) in sizes.items():
            bench.run_size(name, t, h, w, d)
    bench.rows = best_of_rounds(bench.rows)
    sweep_rows = sweep_segment_mean(bench, sizes) if args.sweep else []
    method_rows = []
    names = token_methods() if args.methods == "all" else [m for m in args.methods.split(",") if m]
    compiled = set(names if args.torch_compile == "all" else [m for m in args.torch_compile.split(",") if m])
    for name_, (t, h, w, d) in sizes.items():
        for method in names:
            try:
                row = time_method(method, (t, h, w), d, args.retention, device, args.warmup, args.runs,
                                  cuda_graph=args.cuda_graph and device.type == "cuda",
                                  torch_compile=method in compiled)
            except Exception as error:  # one failing method must not lose the other timings
                row = {"method": method, "retention": args.retention, "ms": float("nan"), "tokens_out": None,
                       "error": f"{type(error).__name__}: {error}"}
            method_rows.append({"size": name_, **row})

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or 'unknown'})"
    now = dt.datetime.now(dt.timezone.utc)
    record = {"command": " ".join([sys.executable, *sys.argv]), "gpu": gpu, "versions": versions(),
              "date": now.isoformat(timespec="seconds"), "dtype": "bfloat16", "warmup": args.warmup,
              "runs": args.runs, "repeats": args.repeats, "device_time": args.device_time, "rows": bench.rows, "methods": method_rows,
              "sweep": sweep_rows}
    text = report(record)
    print(text)
    slug = "".join(c if c.isalnum() else "-" for c in gpu.lower()).strip("-")
    path = args.out or RESULTS_DIR / f"kernels-{slug}-{now:%Y%m%d-%H%M%S}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    path.with_suffix(".md").write_text(text)
    print(f"wrote {path} and {path.with_suffix('.md')}")


if __name__ == "__main__":
    main()

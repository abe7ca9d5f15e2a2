#!/usr/bin/env python
"""Where a token-stage method's device time goes: its kernels, grouped by name, from one profiled call.

For each method: eager and CUDA-graph time (``bench_kernels.time_method``), the number of kernels one call launches,
their summed device time, and the kernels that take the most of it. Prints a summary and writes JSON under
``benchmarks/results/`` (needs a CUDA GPU).

    python scripts/profile_methods.py --methods flashvid,fastvid,holitom --frames 32
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from bench_kernels import RESULTS_DIR, random_video, time_method, token_methods, versions
from vidcompress import VideoTokens, get_compressor, method_info

DIM, HEIGHT, WIDTH = 3584, 14, 14  # LLaVA-OV-7B


def kernel_breakdown(name: str, grid: tuple[int, int, int], retention: float, top: int) -> dict[str, Any]:
    """Kernels of one eager call (after three warm-up calls): count, summed device us, the ``top`` largest."""
    device = torch.device("cuda")
    t, h, w = grid
    generator = torch.Generator(device=device).manual_seed(0)
    query = None
    if method_info(name).needs_query:
        query = torch.randn(16, DIM, device=device, generator=generator).to(torch.bfloat16)
    tokens = VideoTokens(
        features=random_video(7, (t, h * w, DIM), torch.bfloat16, device),
        grid=grid,
        attention=torch.softmax(torch.randn(t, h * w, device=device, generator=generator), -1),
        query=query,
        check_finite=False,
    )
    compressor = get_compressor(name, retention=retention)
    for _ in range(3):
        compressor(tokens)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as trace:
        compressor(tokens)
        torch.cuda.synchronize()
    kernels: dict[str, list[float]] = {}
    for event in trace.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            entry = kernels.setdefault(event.name[:120], [0, 0.0])
            entry[0] += 1
            entry[1] += event.device_time
    largest = sorted(kernels.items(), key=lambda item: -item[1][1])[:top]
    return {
        "kernels": sum(count for count, _ in kernels.values()),
        "kernel_us": sum(us for _, us in kernels.values()),
        "top": [{"kernel": kernel, "count": int(count), "us": us} for kernel, (count, us) in largest],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="all", help="'all' or comma-separated token-stage methods")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--retention", type=float, default=0.1)
    parser.add_argument("--top", type=int, default=12, help="kernels listed per method")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("profile_methods.py needs a CUDA GPU")
    grid = (args.frames, HEIGHT, WIDTH)
    names = token_methods() if args.methods == "all" else args.methods.split(",")
    rows = []
    for name in names:
        row = time_method(name, grid, DIM, args.retention, torch.device("cuda"), warmup=5, runs=20, cuda_graph=True)
        row.update(kernel_breakdown(name, grid, args.retention, args.top))
        rows.append(row)
        print(f"{name}: eager {row['ms']:.3f} ms, graph {row.get('graph_ms') or float('nan'):.3f} ms, "
              f"{row['kernels']} kernels, {row['kernel_us'] / 1e3:.3f} ms of kernel time", flush=True)
        for kernel in row["top"][:8]:
            print(f"  {kernel['us']:8.1f} us  x{kernel['count']:4d}  {kernel['kernel'][:100]}", flush=True)
    now = dt.datetime.now(dt.timezone.utc)
    record = {"command": " ".join([sys.executable, *sys.argv]), "gpu": torch.cuda.get_device_name(),
              "versions": versions(), "date": now.isoformat(timespec="seconds"), "grid": list(grid), "dim": DIM,
              "retention": args.retention, "methods": rows}
    path = args.out or RESULTS_DIR / f"method_profile-{now:%Y%m%d-%H%M%S}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

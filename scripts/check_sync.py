#!/usr/bin/env python
"""Report which token-stage methods synchronise with the host on a CUDA tensor.

Runs every registered token-stage method once (warm-up) and once under ``torch.cuda.set_sync_debug_mode("error")``
on LLaVA-OV-7B-sized bf16 inputs, and prints the first synchronising call of each. Writes JSON under
``benchmarks/results/``.

    python scripts/check_sync.py [--retention 0.1] [--frames 32]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import traceback
from pathlib import Path

import torch

from vidcompress import VideoTokens, available_methods, get_compressor, method_info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--retention", type=float, default=0.1)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device("cuda")
    generator = torch.Generator(device=device).manual_seed(0)
    t, h, w, d = args.frames, 14, 14, 3584
    features = torch.randn(t, h * w, d, device=device, generator=generator, dtype=torch.bfloat16)
    tokens = VideoTokens(
        features=features,
        grid=(t, h, w),
        attention=torch.rand(t, h * w, device=device, generator=generator),
        query=torch.randn(12, d, device=device, generator=generator, dtype=torch.bfloat16),
        timestamps=torch.arange(t, dtype=torch.float32, device=device),
        check_finite=False,
    )
    rows = []
    for name in available_methods():
        if "token" not in method_info(name).stages or name == "none":
            continue
        compressor = get_compressor(name, retention=args.retention)
        try:
            compressor(tokens)
        except Exception as error:  # noqa: BLE001 - reported per method
            rows.append({"method": name, "sync_free": None, "error": f"{type(error).__name__}: {error}"})
            continue
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            compressor(tokens)
            rows.append({"method": name, "sync_free": True, "first_sync": None})
        except RuntimeError as error:
            frames = [f for f in traceback.extract_tb(error.__traceback__) if "vidcompress" in f.filename or "methods" in f.filename]
            where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno} {frames[-1].line}" if frames else str(error)
            rows.append({"method": name, "sync_free": False, "first_sync": where})
        finally:
            torch.cuda.set_sync_debug_mode("default")
    print("| method | sync-free | first synchronising line |\n| --- | --- | --- |")
    for row in rows:
        print(f"| {row['method']} | {row['sync_free']} | {row.get('first_sync') or row.get('error') or ''} |")
    payload = {
        "command": " ".join(sys.argv),
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "grid": [t, h, w],
        "dim": d,
        "retention": args.retention,
        "rows": rows,
    }
    out = args.out or Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "sync_check.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

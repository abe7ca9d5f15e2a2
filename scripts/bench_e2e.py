#!/usr/bin/env python
"""End-to-end speed and memory sweeps (``vidcompress bench``): every method on full-size random-weight models.

    python scripts/bench_e2e.py --plan issue --time-budget-s 480          # issue 6's TTFT rows, one 9-minute H100 call
    python scripts/bench_e2e.py --plan scaling --time-budget-s 480        # frame scaling + memory limit, another call
    python scripts/bench_e2e.py --models llava-ov-7b --frames 16 32 64 128 --retentions 1 0.5 0.25 0.1 0.05
    python scripts/bench_e2e.py --tiny --methods uniform fastv              # CPU smoke run (tiny models)

All options: ``python scripts/bench_e2e.py --help`` (see :mod:`vidcompress.bench.cli`).
"""

from __future__ import annotations

import sys

from vidcompress.bench.cli import bench_command

if __name__ == "__main__":
    sys.exit(bench_command(sys.argv[1:]))

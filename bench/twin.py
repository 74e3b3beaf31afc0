#!/usr/bin/env python3
"""Time the synthetic twin's generation (target for the ci size: at most 60 s on 2 cores) and print a table.

    python bench/twin.py [--size ci] [--workers 2]
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

from asc_lib.data.synthetic import TWIN_SIZES, make_synthetic_tau
from asc_lib.data.tau import read_meta


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="ci", choices=sorted(TWIN_SIZES))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        root = make_synthetic_tau(Path(tmp) / "twin", size=args.size, workers=args.workers, progress=False)
        seconds = time.perf_counter() - start
        clips = len(read_meta(root))
        size_mb = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'size':<6} {'workers':>7} {'clips':>7} {'pool':>6} {'MB':>7} {'seconds':>8} {'clips/s':>8}")
    print(f"{args.size:<6} {args.workers:>7} {clips:>7} {TWIN_SIZES[args.size].pool_clips:>6} {size_mb:>7.0f} "
          f"{seconds:>8.1f} {clips / seconds:>8.0f}")


if __name__ == "__main__":
    main()

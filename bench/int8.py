"""Is the INT8 student faster than float32 on this CPU? TF-SepNet-64 inference, batch 64, at 64, 256 and
512 mels (the ci input, the baseline's, the authors'): float32 and INT8 (PT2E, oneDNN), each run eagerly
and compiled (``torch.compile``, inductor with freezing), as the student chapter measures it
(:func:`asc_lib.quantize.cpu_speed`). Random weights and inputs (speed does not depend on them); clips/s
is the median of 5 runs; compile seconds apart.

    python bench/int8.py                      # pinned kernels (the book's setting)
    ASC_KERNELS=native python bench/int8.py   # this CPU's own kernels (AVX-512 where it has them)
"""

from __future__ import annotations

import argparse

import torch

from asc_lib import kernels
from asc_lib.models.tfsepnet import TFSepNet
from asc_lib.quantize import cpu_speed, quantize_int8


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mels", type=int, nargs="+", default=[64, 256, 512])
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(2)
    print(f"{kernels.cpu_name()}; {kernels.kernels_status()}; torch {torch.__version__}")
    print(f"{'mels':>5}  {'model':<8} {'run':<9} {'clips/s':>8}  {'vs float32 eager':>16}  {'compile s':>9}  same class")
    for mels in args.mels:
        torch.manual_seed(0)
        model = TFSepNet().eval()
        x = torch.randn(args.batch, 1, mels, 64)
        qmodel = quantize_int8(model, torch.randn(128, 1, mels, 64), batch=args.batch)
        for r in cpu_speed(model, qmodel, x):
            secs = "" if r["compile seconds"] is None else f"{r['compile seconds']:.0f}"
            same = "" if r["same class as INT8 eager"] is None else f"{r['same class as INT8 eager']:.2f}"
            print(f"{mels:>5}  {r['model']:<8} {r['run']:<9} {r['clips/s']:>8.0f}  {r['vs float32 eager']:>15.2f}x  "
                  f"{secs:>9}  {same}", flush=True)


if __name__ == "__main__":
    main()

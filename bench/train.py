"""Throughput of the models the teachers and student chapters train, on this machine's CPU (2 threads).

    python bench/train.py

Prints clips per second for: the small BEATs (a masked-patch pre-training step with its predictor; a
teacher's training step of full fine-tuning, of the frozen SSL* head, and inference), TF-SepNet-64 (a
training step and inference) at several input sizes, and the INT8 TF-SepNet against float inference.
Random inputs; the median of 7 repeats after 2 warm-ups. By default it measures twice, in two
processes one after the other: pinned (as the book runs) and unpinned (``ASC_KERNELS=native``), and
prints both with their ratio, the pinned-kernel tax. ``--here`` measures in this process only.

    python bench/train.py           # pinned and unpinned, about 3 minutes on 2 cores
    python bench/train.py --here    # this process's kernels
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from asc_lib.kernels import PINNED_ENV
from asc_lib.models.beats import BEATs
from asc_lib.models.tfsepnet import TFSepNet
from asc_lib.pretrain import MaskedPatchModel, small_config
from asc_lib.quantize import logits as int8_logits
from asc_lib.quantize import quantize_int8
from asc_lib.teachers import TokenClassifier


def median_seconds(fn, repeats: int = 7) -> float:
    """Median seconds of ``repeats`` calls after two warm-up calls."""
    fn()
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def train_rate(model, x, y) -> float:
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 1e-4)
    model.train()

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return len(x) / median_seconds(step)


def infer_rate(model, x) -> float:
    model.eval()
    with torch.no_grad():
        return len(x) / median_seconds(lambda: model(x))


def measure() -> list[tuple[str, str, float]]:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    rows = []
    fb, y = torch.randn(32, 98, 128), torch.randint(0, 10, (32,))
    mpm = MaskedPatchModel(BEATs(small_config()))
    opt = torch.optim.AdamW(mpm.parameters(), 1e-4)
    mask_gen = torch.Generator().manual_seed(0)

    def pretrain_step(x):
        loss, _ = mpm(x, mask_gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    fb64 = torch.randn(64, 98, 128)
    rows.append(("small BEATs, masked-patch pre-training step", "1 s fbank, batch 64",
                 len(fb64) / median_seconds(lambda: pretrain_step(fb64))))
    rows.append(("small BEATs, fine-tuning step (SSL, SSL+SL, scratch)", "1 s fbank, batch 32",
                 train_rate(TokenClassifier(BEATs(small_config())), fb, y)))
    rows.append(("small BEATs, frozen encoder + head step (SSL*)", "1 s fbank, batch 32",
                 train_rate(TokenClassifier(BEATs(small_config()), frozen=True), fb, y)))
    rows.append(("small BEATs, inference", "1 s fbank, batch 64",
                 infer_rate(TokenClassifier(BEATs(small_config())), torch.randn(64, 98, 128))))
    for mels in (64, 256, 512):
        x = torch.randn(32, 1, mels, 64)
        rows.append((f"TF-SepNet-64, training step", f"{mels} mels, batch 32", train_rate(TFSepNet(), x, y)))
        rows.append((f"TF-SepNet-64, inference float32", f"{mels} mels, batch 128",
                     infer_rate(TFSepNet(), torch.randn(128, 1, mels, 64))))
    for mels in (64, 256):
        x = torch.randn(128, 1, mels, 64)
        q = quantize_int8(TFSepNet().eval(), x[:32], batch=128)
        rows.append(("TF-SepNet-64, inference INT8 (PT2E, oneDNN)", f"{mels} mels, batch 128",
                     len(x) / median_seconds(lambda: int8_logits(q, x))))
    return rows


def main():
    if "--here" in sys.argv[1:]:
        for name, inp, rate in measure():
            print(f"{name}\t{inp}\t{rate:.1f}")
        return
    # without this process's pinning variables: each child's import asc_lib pins, or not
    base = {k: v for k, v in os.environ.items() if k not in PINNED_ENV and k != "ASC_KERNELS"}
    runs = {}
    for label, env in (("pinned", {}), ("unpinned", {"ASC_KERNELS": "native"})):
        run = subprocess.run([sys.executable, __file__, "--here"], env={**base, **env},
                             capture_output=True, text=True)
        runs[label] = [line.split("\t") for line in run.stdout.splitlines() if line.count("\t") == 2]
        if run.returncode or not runs[label]:
            sys.exit(f"bench/train.py --here ({label}) failed with exit code {run.returncode}:\n{run.stderr}")
    width = max(len(r[0]) for r in runs["pinned"])
    print(f"{'model / step':<{width}}  {'input':<22}  pinned  unpinned  pinned/unpinned  (clips/s)")
    for (name, inp, p), (_, _, n) in zip(runs["pinned"], runs["unpinned"]):
        print(f"{name:<{width}}  {inp:<22}  {float(p):6.0f}  {float(n):8.0f}  {float(p) / float(n):15.2f}")


if __name__ == "__main__":
    main()

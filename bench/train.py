"""Throughput of the models the teachers and student chapters train, on this machine's CPU (2 threads).

    python bench/train.py

Prints clips per second for: the small BEATs teacher (a training step of full fine-tuning, of the frozen
SSL* head, and inference), TF-SepNet-64 (a training step and inference) at several input sizes, and the
INT8 TF-SepNet against float inference. Random inputs; the best of a few repeats.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from asc_lib.models.beats import BEATs
from asc_lib.models.tfsepnet import TFSepNet
from asc_lib.pretrain import small_config
from asc_lib.quantize import logits as int8_logits
from asc_lib.quantize import quantize_int8
from asc_lib.teachers import TokenClassifier


def best(fn, repeats: int = 4) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def train_rate(model, x, y) -> float:
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 1e-4)
    model.train()

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return len(x) / best(step)


def infer_rate(model, x) -> float:
    model.eval()
    with torch.no_grad():
        return len(x) / best(lambda: model(x))


def main():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    rows = []
    fb, y = torch.randn(32, 98, 128), torch.randint(0, 10, (32,))
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
                     len(x) / best(lambda: int8_logits(q, x))))
    width = max(len(r[0]) for r in rows)
    print(f"{'model / step':<{width}}  {'input':<22}  clips/s")
    for name, inp, rate in rows:
        print(f"{name:<{width}}  {inp:<22}  {rate:8.0f}")


if __name__ == "__main__":
    main()

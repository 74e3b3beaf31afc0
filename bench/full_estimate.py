"""What the `full` book costs on real TAU22: training steps and clips scored (counted from the split sizes and
the recipes), the time on this machine (one step of each kind measured with the released 12-layer BEATs
and TF-SepNet at 512 mels, per clip, scaled to the recipes' batches), and the disk.

    python bench/full_estimate.py [--device cuda] [--batch 8]

The teachers chapter's preflight makes the same estimate from the first batches of the real data.
"""

import argparse
import math

import torch

from asc_lib.data.tau import SPLITS
from asc_lib.features import beats_fbank, student_logmel
from asc_lib.models.beats import BEATs, released_config
from asc_lib.models.tfsepnet import TFSepNet
from asc_lib.distill import STUDENTS
from asc_lib.preflight import estimate, forward_seconds, step_seconds
from asc_lib.profiles import get_profile
from asc_lib.teachers import STRATEGIES, TokenClassifier

SIZES = dict(zip(SPLITS, (6_980, 13_960, 34_900, 69_800, 139_620)))  # the DCASE2024 split files
TEST, CLIPS = 29_680, 230_350  # test.csv, every clip of the development set


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8, help="batch measured (the time is scaled per clip)")
    args = parser.parse_args()
    P, dev, B = get_profile("full"), torch.device(args.device), args.batch
    torch.manual_seed(0)
    fb = beats_fbank(torch.randn(B, 16000) * 0.1)
    mels = student_logmel(torch.randn(B, 32000) * 0.1, n_mels=P.student.n_mels).unsqueeze(1)
    per_clip = {"finetune": step_seconds(TokenClassifier(BEATs(released_config())), fb, dev) / B,
                "frozen": step_seconds(TokenClassifier(BEATs(released_config()), frozen=True), fb, dev) / B,
                "forward": forward_seconds(TokenClassifier(BEATs(released_config())), fb, dev),
                "student": step_seconds(TFSepNet(), mels, dev) / B}
    t = {"finetune": per_clip["finetune"] * P.teachers.finetune.batch_size,
         "frozen": per_clip["frozen"] * P.teachers.frozen.batch_size,
         "forward": per_clip["forward"], "student": per_clip["student"] * P.student.recipe.batch_size}
    seconds = estimate(P, SIZES, TEST, t)
    n_train = {s: round(n * (1 - P.teachers.val_fraction)) for s, n in SIZES.items()}
    steps = {k: sum(r.epochs * math.ceil(n / r.batch_size) for n in n_train.values())
             for k, r in (("fine-tuning (each of 3)", P.teachers.finetune), ("frozen SSL*", P.teachers.frozen),
                          (f"student (each of {len(STUDENTS)})", P.student.recipe))}
    print(f"measured on {args.device} ({torch.get_num_threads()} threads), batch {B}, per clip: "
          + ", ".join(f"{k} {1000 * v:.1f} ms" for k, v in per_clip.items()))
    print("\noptimiser steps over the five splits: " + ", ".join(f"{k} {v:,}" for k, v in steps.items()))
    frozen = estimate(P, SIZES, TEST, {**t, "forward": 0.0, "finetune": 0.0})["teachers"]
    trained = estimate(P, SIZES, TEST, {**t, "forward": 0.0})["teachers"]
    print(f"teacher runs: {len(SIZES) * len(STRATEGIES)}, {seconds['teachers'] / 3600:,.0f} h here: fine-tuning "
          f"{(trained - frozen) / 3600:,.0f} h, frozen SSL* {frozen / 3600:,.0f} h, scoring (validation, "
          f"test after every epoch, logits) {(seconds['teachers'] - trained) / 3600:,.0f} h")
    print(f"student runs: {len(SIZES) * len(STUDENTS)}, {seconds['students'] / 3600:,.1f} h here")
    caches = CLIPS * (16_000 + 32_000) * 4
    runs = (len(SIZES) * len(STRATEGIES) + 4) * sum(p.numel() for p in BEATs(released_config()).parameters()) * 4
    print(f"disk beyond the dataset: {caches / 1e9:.1f} GB waveform caches + {runs / 1e9:.1f} GB teacher runs")


if __name__ == "__main__":
    main()

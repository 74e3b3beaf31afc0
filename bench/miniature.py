#!/usr/bin/env python3
"""Calibrating the twin's overlap: TF-SepNet trained alone (the ``ci`` student recipe, the student
chapter's scratch runs) at each split, for twins that differ only in ``synthetic.OVERLAP``.

    python bench/miniature.py [--overlap 0.5 0.7] [--seed 0] [--into /tmp/asc-miniature]

The target is the real learning curve, the DCASE2024 baseline's 42.4 / 50.3 / 57.0 % at 5 / 25 / 100 %
(within 5 points each): the overlap is set from it and never from a claim's outcome. Each twin is built
without its pre-training pool (it does not change the student's runs) under ``--into``. Prints one row per
overlap: macro accuracy per split and its distance from the baseline's.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--overlap", type=float, nargs="+", default=[0.7])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--into", default="/tmp/asc-miniature")
    parser.add_argument("--steps-per-epoch", type=int, default=None, help="the student recipe's (default: the profile's)")
    args = parser.parse_args()
    rows = []
    for overlap in args.overlap:
        os.environ["ASC_ARTIFACTS"] = f"{args.into}/overlap-{overlap}"
        from asc_lib import distill, paper, profiles
        from asc_lib.data import dataset, synthetic
        from asc_lib.data.tau import read_meta, read_split
        from asc_lib.repro import seed_everything

        synthetic.OVERLAP = overlap
        synthetic.TWIN_SIZES["ci"] = dataclasses.replace(synthetic.TWIN_SIZES["ci"], pool_clips=8)
        P = profiles.get_profile("ci")
        if args.steps_per_epoch:
            P = dataclasses.replace(P, student=dataclasses.replace(P.student, recipe=dataclasses.replace(
                P.student.recipe, steps_per_epoch=args.steps_per_epoch)))
        seed_everything(args.seed, threads=P.threads)
        t0 = time.perf_counter()
        root = dataset.prepare("", P, 0)
        meta = read_meta(root)
        test = read_split(root, "test", meta)
        w32 = dataset.waves(meta, 32000, P)
        features = distill.logmel_all(w32, P.student.n_mels).half()
        row = {"overlap": overlap, "steps/epoch": P.student.recipe.steps_per_epoch}
        for split in P.student.splits:
            m = distill.run_student(None, split, meta=meta, split_part=read_split(root, split, meta),
                                    test_part=test, w32=w32, manifests={}, settings=P.student, root=root,
                                    profile=P.name, seed=args.seed, device="cpu", features=features,
                                    progress=False)
            row[f"{split} %"] = m["test"]["macro"]
            row[f"{split} % - baseline"] = m["test"]["macro"] - paper.BASELINE_ACC[split]
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        print(row, flush=True)
    import pandas as pd

    print(pd.DataFrame(rows).set_index("overlap").round(1).to_string())


if __name__ == "__main__":
    main()

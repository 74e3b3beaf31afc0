#!/usr/bin/env python3
"""The seed study: every teacher and student of the book, for several training seeds on the same data.

    python bench/seeds.py [--seeds 0 1 2] [--data-seed 0] [--profile ci]

Run it alone: two torch processes on the same two cores slow each other down tenfold or more (their
threads spin while they wait for each other).

A training seed changes the initial weights, the batch order, the augmentation and which recordings are
held out for validation; the twin and the small BEATs encoders stay those of ``--data-seed``. The runs go through the library exactly as the chapters call it, so seed 0 reuses the runs of
an executed book (their cache keys are equal) and the study's seed-0 numbers are the chapters' numbers.

Writes ``book/results/seeds.csv`` (long format: ``system, split, seed, accuracy``: test macro accuracy in
%) and ``book/results/claims.csv`` (per claim of the Results chapter: ``claim, seeds_holding,
margin_mean, margin_sd, holds``), then prints both.
"""

from __future__ import annotations

import argparse
import os
import time

import pandas as pd

from asc_lib import checkpoints, distill, profiles, results, teachers
from asc_lib.data import dataset
from asc_lib.data.tau import read_meta, read_split
from asc_lib.paths import results_dir
from asc_lib.repro import resolve_device, seed_everything


def rows_of(seed, teacher_runs, students, int8, y_test):
    splits = sorted({s for _, s in teacher_runs})
    out = []
    for s in splits:
        for k in teachers.STRATEGIES:
            out.append((f"teacher: {k}", s, teacher_runs[k, s]["test"]["macro"]))
        for members in teachers.subsets():
            if len(members) > 1:
                acc = teachers.ensemble_accuracy({m: teacher_runs[m, s] for m in members}, members, y_test)
                out.append((f"teacher: ensemble {teachers.ensemble_name(members)}", s, acc))
        for (name, split), m in students.items():
            if split == s:
                label = "student: from scratch" if name == "scratch" else f"student: KD from {name}"
                out.append((label, s, m["test"]["macro"]))
        out.append((f"{results.SUBMISSION}, INT8", s, int8[s]))
    return [{"system": a, "split": s, "seed": seed, "accuracy": acc} for a, s, acc in out]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--profile", default="ci")
    args = parser.parse_args()
    P = profiles.get_profile(args.profile)
    seed_everything(args.data_seed, threads=P.threads)
    dev = resolve_device(P.device)
    root = dataset.prepare("", P, args.data_seed)
    meta = read_meta(root)
    test = read_split(root, "test", meta)
    y_test = dataset.labels(test)
    w16, w32 = dataset.waves(meta, 16000, P), dataset.waves(meta, 32000, P)
    ckpts = {k: v for k, v in checkpoints.small_beats(P, root, seed=args.data_seed, device=dev).items() if k != "history"}
    inputs = teachers.TeacherInputs(w16, cache=P.teachers.cache_inputs)
    features = distill.logmel_all(w32, P.student.n_mels).half()
    test_x = features[dataset.rows(meta, test)].float()
    rows, timing = [], []
    for seed in args.seeds:
        t0 = time.perf_counter()
        teacher_runs = teachers.run_all(P.teachers.splits, meta=meta, root=root, test_part=test, w16=w16,
                                        checkpoints=ckpts, settings=P.teachers, profile=P.name, seed=seed,
                                        device=dev, inputs=inputs, progress=False)
        students, _ = distill.run_all(P.student.splits, meta=meta, root=root, test_part=test, w16=w16, w32=w32,
                                      checkpoints=ckpts, teacher_settings=P.teachers, settings=P.student,
                                      profile=P.name, seed=seed, device=dev, features=features, progress=False)
        int8 = {}
        for s in P.student.splits:
            calib = features[dataset.rows(meta, read_split(root, s, meta))[:P.student.calibration_clips]].float()
            int8[s] = distill.int8_check(students[teachers.ensemble_name(teachers.TEACHERS), s], calib, test_x,
                                         y_test)["INT8 accuracy"]
        rows += rows_of(seed, teacher_runs, students, int8, y_test)
        timing.append((seed, time.perf_counter() - t0))
        print(f"seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
        seeds = pd.DataFrame(rows)  # written after every seed: an interrupted study keeps the seeds it ran
        folder = results_dir()
        for name, table, index in (("seeds", seeds, False), ("claims", results.claims_table(seeds), True)):
            tmp = folder / f".{name}.csv.tmp"
            table.to_csv(tmp, index=index, float_format="%.4f")
            os.replace(tmp, folder / f"{name}.csv")
    spread = seeds.groupby(["system", "seed"]).accuracy.mean().groupby("system").agg(["mean", "std"])
    print(spread.round(2).to_string())
    print(results.claims_table(seeds).round(2).to_string())
    print("seconds per seed: " + ", ".join(f"{s}: {t:.0f}" for s, t in timing))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The seed study: every teacher and student of the book, for several training seeds on the same data.

    python bench/seeds.py [--seeds 0 1 2] [--data-seed 0] [--profile ci] [--keep]

Run it alone: two torch processes on the same two cores slow each other down tenfold or more (their
threads spin while they wait for each other).

A training seed changes the initial weights, the batch order, the augmentation and which recordings are
held out for validation; the twin and the small BEATs encoders stay those of ``--data-seed``. The runs go through the library exactly as the chapters call it, so seed 0 reuses the runs of
an executed book (their cache keys are equal) and the study's seed-0 numbers are the chapters' numbers.

Writes ``book/results/seeds.csv`` (long format: ``system, split, seed, accuracy``: test macro accuracy in
%), ``book/results/seeds_predictions.npz`` (every system's class for every test clip, per seed and split,
with the test labels and locations) and ``book/results/claims.csv`` (per claim of the Results chapter:
``claim, seeds_holding, seeds_reversed, seeds_not_resolved, margin_mean, margin_sd, holds``: on each seed a
claim holds when its 95 % paired interval over test locations lies above 0, and it holds only if it holds
on every seed), then prints both.

``--keep`` adds seeds to an existing study (``--seeds 0 2 --keep`` runs seed 2 and keeps seed 1's rows):
the existing ``seeds.csv``'s rows of the seeds not listed are kept only if its seed-0 rows equal this
code's seed 0 (then its other seeds were trained by the same code on the same data, as far as a study can
tell); otherwise it stops before training another seed. It stops before training anything when the file is
not whole (a seed short of a row, a duplicated row, an empty cell). ``--seeds`` must start with 0.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import pandas as pd

from asc_lib import checkpoints, distill, profiles, results, teachers
from asc_lib.data import SCENES, dataset
from asc_lib.data.tau import read_meta, read_split
from asc_lib.paths import results_dir
from asc_lib.repro import resolve_device, seed_everything


def rows_of(seed, teacher_runs, students, int8, y_test):
    """One seed's rows of seeds.csv and its predictions: ``(rows, {(seed, system, split): classes})``;
    ``int8``: ``{split: (accuracy, classes)}``."""
    splits = sorted({s for _, s in teacher_runs})
    out, preds = [], {}
    for s in splits:
        for k in teachers.STRATEGIES:
            out.append((f"teacher: {k}", s, teacher_runs[k, s]["test"]["macro"]))
            preds[seed, f"teacher: {k}", s] = teachers.load_logits(teacher_runs[k, s], "test").argmax(1)
        for members in teachers.subsets():
            if len(members) > 1:
                mans = {m: teacher_runs[m, s] for m in members}
                name = f"teacher: ensemble {teachers.ensemble_name(members)}"
                out.append((name, s, teachers.ensemble_accuracy(mans, members, y_test)))
                preds[seed, name, s] = teachers.ensemble_logits(mans, members, "test").argmax(1)
        for (name, split), m in students.items():
            if split == s:
                label = "student: from scratch" if name == "scratch" else f"student: KD from {name}"
                out.append((label, s, m["test"]["macro"]))
                preds[seed, label, s] = teachers.load_logits(m, "test").argmax(1)
        out.append((f"{results.SUBMISSION}, INT8", s, int8[s][0]))
        preds[seed, f"{results.SUBMISSION}, INT8", s] = int8[s][1]
    return [{"system": a, "split": s, "seed": seed, "accuracy": acc} for a, s, acc in out], preds


def keep_other_seeds(old: pd.DataFrame, seed0: pd.DataFrame, listed, path) -> pd.DataFrame:
    """``old``'s rows of the seeds not ``listed``, if its seed-0 rows equal ``seed0`` (to the file's 4
    decimals); otherwise exit, naming the first row that differs."""
    key = ["system", "split"]
    mine = seed0.set_index(key).accuracy.round(4)
    theirs = old[old.seed == 0].set_index(key).accuracy
    if set(mine.index) != set(theirs.index):
        sys.exit(f"--keep: {path}'s seed-0 systems are not this code's: run the study without --keep")
    diff = (mine - theirs.reindex(mine.index)).abs()
    if diff.max() > 1e-4:
        where = diff.idxmax()
        sys.exit(f"--keep: {path} is of other runs: its seed 0 gives {theirs[where]:.4f} for {where[0]} at "
                 f"{where[1]} %, this code {mine[where]:.4f}; run the study without --keep")
    other = old[~old.seed.isin(listed)]
    print(f"keeping seeds {sorted(map(int, other.seed.unique()))} of {path} (its seed 0 is this code's)",
          flush=True)
    return other


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--profile", default="ci")
    parser.add_argument("--keep", action="store_true",
                        help="keep seeds.csv's rows of the seeds not listed, if its seed-0 rows are this code's")
    args = parser.parse_args()
    kept = []  # the rows of the seeds not listed, with --keep
    if args.keep:
        if args.seeds[0] != 0:
            parser.error("--keep: --seeds must start with 0 (its rows are compared with seeds.csv's)")
        old_path = results_dir() / "seeds.csv"
        if not old_path.exists():
            parser.error(f"--keep: {old_path} does not exist: there is no study to add seeds to")
        try:
            old = results.read_seeds(old_path)  # whole, before any training
        except ValueError as err:
            sys.exit(f"--keep: {err}")
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
    rows, timing, preds = [], [], {}
    where = test.identifier.to_numpy()
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
            check, classes = distill.int8_check(students[teachers.ensemble_name(teachers.TEACHERS), s], calib,
                                                test_x, y_test, predictions=True)
            int8[s] = (check["INT8 accuracy"], classes)
        seed_rows, seed_preds = rows_of(seed, teacher_runs, students, int8, y_test)
        rows += seed_rows
        preds.update(seed_preds)
        if args.keep and seed == 0:
            kept = keep_other_seeds(old, pd.DataFrame(rows), args.seeds, old_path).to_dict("records")
            kept_seeds = {r["seed"] for r in kept}
            old_preds = results_dir() / "seeds_predictions.npz"
            if not old_preds.exists():
                sys.exit(f"--keep: {old_preds} is missing: the kept seeds' predictions are needed for their verdicts; "
                         "run the study without --keep")
            preds.update({k: p for k, p in results.read_predictions(old_preds)[0].items() if k[0] in kept_seeds})
        timing.append((seed, time.perf_counter() - t0))
        print(f"seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
        # written after every seed: an interrupted study keeps the seeds it ran
        seeds = pd.DataFrame(rows + kept).sort_values("seed", kind="stable")
        done = set(seeds.seed)
        mine = {k: p for k, p in preds.items() if k[0] in done}
        claims = results.claims_table(seeds, results.claim_verdicts(mine, y_test, where, len(SCENES)))
        folder = results_dir()
        results.save_predictions(folder / "seeds_predictions.npz", mine, y_test, where)
        for name, table, index in (("seeds", seeds, False), ("claims", claims, True)):
            tmp = folder / f".{name}.csv.tmp"
            table.to_csv(tmp, index=index, float_format="%.4f")
            os.replace(tmp, folder / f"{name}.csv")
    spread = seeds.groupby(["system", "seed"]).accuracy.mean().groupby("system").agg(["mean", "std"])
    print(spread.round(2).to_string())
    print(claims.round(2).to_string())
    print("seconds per seed: " + ", ".join(f"{s}: {t:.0f}" for s, t in timing))


if __name__ == "__main__":
    main()

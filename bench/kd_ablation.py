#!/usr/bin/env python3
"""The distillation ablation: what decides whether the student gains from its teachers here.

    python bench/kd_ablation.py [--splits 5 25] [--seeds 0 1 2] [--arms ...] [--csv book/results/kd_ablation.csv]

Run it alone (two torch processes on two cores slow each other down many times over). Every run goes
through the library exactly as the chapters call it, so seed 0's book runs (teachers, the students from
scratch and distilled from SSL+SL and from the ensemble) are reused from the cache of an executed book.

Each arm changes one thing against the paper's recipe (clean precomputed logits, lambda 0.02, T 2, the
profile's student schedule, the epoch of best validation loss), and each distilled student is compared with
the student from scratch trained for the same number of steps and selected the same way:

=============  ==============================================================================================
arm            what changes
=============  ==============================================================================================
recipe         nothing: KD from SSL+SL and from the ensemble, as the book trains them
oracle         the teacher's logits with its top logit swapped with the true class's (where they differ):
               every target right, its sharpness unchanged (:func:`asc_lib.distill.oracle_repair`)
fit            the SSL+SL teacher's logits after earlier epochs of its run (``TeacherSettings.fit_study``)
lambda         the label's weight kd_lambda: 0.1 and 0.5 (the paper: 0.02)
selection      the student's last epoch instead of its best validation loss (scratch: its last epoch too)
steps          the student's steps x1/4 and x4 (the real recipe trains 150 epochs; scratch: the same steps)
views          consistent views: the teacher's logits on K=4 stored mixed-and-shifted views of each clip,
               the student trained on those same views (:mod:`asc_lib.views`)
ensemble       the ensemble without SSL* (SSL + SSL+SL)
=============  ==============================================================================================

For every (arm, variant, teacher, split) the table gives, over the seeds: the student's and its scratch
partner's accuracy (mean over seeds), the gain (points), its 95 % interval from the paired bootstrap over
test locations of the seed-averaged accuracies, the verdict of that interval, how many seeds hold on their
own paired interval (``holds``: the interval above 0), each seed's gain (``gain by seed``: ``seed:gain``, so
that the student chapter can check its own seed's run against the table), and the teacher's accuracy on the
clips it teaches (the training clips, without the held-out validation recordings).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import numpy as np
import pandas as pd

from asc_lib import checkpoints, distill, profiles, results, teachers
from asc_lib.data import SCENES, dataset
from asc_lib.data.tau import read_meta, read_split
from asc_lib.repro import seed_everything

ARMS = ("recipe", "oracle", "fit", "lambda", "selection", "steps", "views", "ensemble")
ALL = teachers.TEACHERS
WITHOUT_STAR = ("SSL", "SSL+SL")


def scaled(settings, k: float):
    """The student's settings with ``k`` times the steps (every epoch longer: the schedule keeps its shape)."""
    steps = max(1, round(settings.recipe.steps_per_epoch * k))
    return dataclasses.replace(settings, recipe=dataclasses.replace(settings.recipe, steps_per_epoch=steps),
                               min_passes=settings.min_passes * k)


def students_of(arms, settings):
    """``[(arm, variant, teacher, settings, run_student keywords, scratch settings, which test logits)]``."""
    out = []
    add = lambda arm, variant, teacher, s=settings, kw=None, scratch=settings, pick="test": out.append(
        (arm, variant, teacher, s, kw or {}, scratch, pick))
    if "recipe" in arms:
        add("recipe", "paper's recipe", ("SSL+SL",))
        add("recipe", "paper's recipe", ALL)
    if "oracle" in arms:
        add("oracle", "oracle-repaired targets", ("SSL+SL",), kw={"targets": "oracle"})
        add("oracle", "oracle-repaired targets", ALL, kw={"targets": "oracle"})
    if "lambda" in arms:
        for lam in (0.1, 0.5):
            add("lambda", f"kd_lambda {lam}", ("SSL+SL",), s=dataclasses.replace(settings, kd_lambda=lam))
    if "selection" in arms:
        add("selection", "last epoch", ("SSL+SL",), pick="test_last")
        add("selection", "last epoch", ALL, pick="test_last")
    if "steps" in arms:
        for k in (0.25, 4):
            add("steps", f"steps x{k:g}", ("SSL+SL",), s=scaled(settings, k), scratch=scaled(settings, k))
            add("steps", f"steps x{k:g}", ALL, s=scaled(settings, k), scratch=scaled(settings, k))
    if "views" in arms:
        add("views", "consistent views (K=4)", ("SSL+SL",), kw={"views": 4})
        add("views", "consistent views (K=4)", ALL, kw={"views": 4})
    if "ensemble" in arms:
        add("ensemble", "without SSL*", WITHOUT_STAR)
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--splits", type=int, nargs="+", default=[5, 25])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--profile", default="ci")
    parser.add_argument("--csv", help="also write the table here (e.g. book/results/kd_ablation.csv)")
    args = parser.parse_args()
    P = profiles.get_profile(args.profile)
    started = time.perf_counter()
    seed_everything(0, threads=P.threads)
    root = dataset.prepare("", P, 0)
    meta = read_meta(root)
    test = read_split(root, "test", meta)
    y_test, where = dataset.labels(test), test.identifier.to_numpy()
    w16, w32 = dataset.waves(meta, 16000, P), dataset.waves(meta, 32000, P)
    ckpts = {k: v for k, v in checkpoints.small_beats(P, root, seed=0, device="cpu").items() if k != "history"}
    features = distill.logmel_all(w32, P.student.n_mels).half()
    tset = P.teachers  # the book's teachers (the fit arm: on the splits of its fit_study_splits)
    preds, scratch, taught = {}, {}, {}  # (row, split) -> {seed: predictions}; (settings, pick, split) -> ...
    rows_of = {}
    for seed in args.seeds:
        for split in args.splits:
            part = read_split(root, split, meta)
            common = dict(meta=meta, split_part=part, test_part=test, w32=w32, root=root, profile=P.name,
                          seed=seed, device="cpu", features=features, progress=False)
            mans = {t: teachers.run_teacher(t, split, meta=meta, split_part=part, test_part=test, w16=w16,
                                            checkpoints=ckpts, settings=tset, root=root, profile=P.name, seed=seed,
                                            device="cpu", progress=False) for t in ALL}
            arms = students_of(args.arms, P.student)
            if "fit" in args.arms:
                for e in mans["SSL+SL"].get("fit_study", []):
                    arms.append(("fit", f"SSL+SL after epoch {e}", ("SSL+SL",), P.student,
                                 {"logits": f"train_e{e}"}, P.student, "test"))
            for arm, variant, members, settings, kw, scratch_settings, pick in arms:
                name = teachers.ensemble_name(members)
                kd = distill.run_student(members, split, manifests=mans, settings=settings, w16=w16, **kw, **common)
                base = distill.run_student(None, split, manifests=mans, settings=scratch_settings, **common)
                row = (arm, variant, name, split)
                rows_of[row] = None
                preds.setdefault(row, {})[seed] = teachers.load_logits(kd, pick).argmax(1)
                scratch.setdefault(row, {})[seed] = teachers.load_logits(base, pick).argmax(1)
                if "teacher_on_its_clips" not in kd or "test_last_files" not in kd:
                    raise SystemExit(f"{kd['folder']}: a student run of older code (no test_last logits, no "
                                     "teacher_on_its_clips); delete it to train it again")
                taught.setdefault(row, {})[seed] = kd["teacher_on_its_clips"]
            print(f"seed {seed}, {split} %: {len(arms)} students ({time.perf_counter() - started:.0f} s so far)",
                  flush=True)
    table = []
    for row in rows_of:
        arm, variant, name, split = row
        seeds = sorted(preds[row])
        both = {"kd": preds[row], "scratch": scratch[row]}
        pooled = results.verdicts(both, [("gain", "kd", "scratch")], y_test, where, len(SCENES)).iloc[0]
        each = [results.verdicts({"kd": {0: preds[row][s]}, "scratch": {0: scratch[row][s]}},
                                 [("gain", "kd", "scratch")], y_test, where, len(SCENES)).iloc[0] for s in seeds]
        acc = results.accuracy_table(both, y_test, where, len(SCENES))["mean"]
        table.append({"arm": arm, "variant": variant, "teacher": name, "split": split,
                      "gain": pooled.margin, "low": pooled.low, "high": pooled.high, "verdict": pooled.verdict,
                      "seeds holding": f"{sum(v.verdict == 'holds' for v in each)}/{len(seeds)}",
                      "gain by seed": " ".join(f"{s}:{v.margin:+.2f}" for s, v in zip(seeds, each)),
                      "seeds reversed": f"{sum(v.verdict == 'reversed' for v in each)}/{len(seeds)}",
                      "student": acc["kd"], "scratch": acc["scratch"],
                      "teacher on its clips": float(np.mean([taught[row][s] for s in seeds]))})
    table = pd.DataFrame(table)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    print(f"{len(table)} rows, seeds {args.seeds}, splits {args.splits}: {time.perf_counter() - started:.0f} s")
    if args.csv:
        part = f"{args.csv}.partial"  # never a half-written table where the chapter reads it
        table.to_csv(part, index=False, float_format="%.4f")
        os.replace(part, args.csv)
        print(f"wrote {args.csv}")


if __name__ == "__main__":
    main()

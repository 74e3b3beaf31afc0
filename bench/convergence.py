#!/usr/bin/env python3
"""How many steps the ``ci`` teachers and students need: validation loss and test accuracy against the
length of the schedule, on the ``ci`` twin, each run a fresh run of the library's own code.

    python bench/convergence.py [--splits 5 100] [--scales 1 2 4] [--lr-scales 1 3]
                                [--roles teacher:SSL+SL student:scratch] [--book-student]

A scale ``k`` multiplies the profile's steps per epoch and its ``min_passes`` (epochs, evaluations, batch
and learning rate stay; ``--lr-scales`` multiplies the learning rate),
so the schedule has the same shape over its epochs, only more steps; scale 1 is the book's run (reused
from the cache when the chapters ran). For each run the table gives the steps, the clips seen, the
epoch that validation loss selected, the validation loss there, how much it fell over the last third of
the epochs (``tail drop``: about 0 when it has flattened), the macro accuracy of the selected epoch on the
split's clips (``own clips acc``: for a teacher, the clips it teaches) and the test macro accuracy with its 95 %
interval (bootstrap over test locations). Students are distilled from the SSL+SL teacher of the same
scale (``student:SSL+SL``) or trained from scratch (``student:scratch``); with ``--book-student`` the
students keep the book's recipe at every scale, so only the teacher they learn from changes.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import pandas as pd

from asc_lib import checkpoints, distill, profiles, results, teachers
from asc_lib.data import SCENES, dataset
from asc_lib.data.tau import read_meta, read_split
from asc_lib.metrics import bootstrap_macro, interval, macro_accuracy
from asc_lib.repro import seed_everything
from asc_lib.train import with_passes


def scaled(recipe, k, lr=1.0):
    return dataclasses.replace(recipe, steps_per_epoch=recipe.steps_per_epoch * k, lr=recipe.lr * lr)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--splits", type=int, nargs="+", default=[5, 100])
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--roles", nargs="+", default=["teacher:SSL+SL", "teacher:scratch", "student:scratch",
                                                       "student:SSL+SL"])
    parser.add_argument("--lr-scales", type=float, nargs="+", default=[1.0],
                        help="multiply the teachers' and the student's learning rates")
    parser.add_argument("--book-student", action="store_true",
                        help="the students keep the book's recipe: only their teachers' schedules scale")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--csv", help="also write the table here (book/results/convergence.csv is read by the "
                                      "Results chapter)")
    args = parser.parse_args()
    if args.csv and args.lr_scales != [1.0]:
        parser.error("--csv records the book's learning rates only: leave out --lr-scales")
    if args.csv and args.book_student:
        parser.error("--csv records students scaled with their teachers: leave out --book-student")
    P = profiles.get_profile("ci")
    seed_everything(args.seed, threads=P.threads)
    root = dataset.prepare("", P, 0)
    meta = read_meta(root)
    test = read_split(root, "test", meta)
    y_test, where = dataset.labels(test), test.identifier.to_numpy()
    w16, w32 = dataset.waves(meta, 16000, P), dataset.waves(meta, 32000, P)
    ckpts = {k: v for k, v in checkpoints.small_beats(P, root, seed=0, device="cpu").items() if k != "history"}
    inputs = teachers.TeacherInputs(w16, cache=True)
    features = distill.logmel_all(w32, P.student.n_mels).half()
    rows = []
    for split in args.splits:
        part = read_split(root, split, meta)
        for k, lr in [(k, lr) for k in args.scales for lr in args.lr_scales]:
            tset = dataclasses.replace(P.teachers, finetune=scaled(P.teachers.finetune, k, lr),
                                       frozen=scaled(P.teachers.frozen, k, lr), min_passes=P.teachers.min_passes * k)
            sk = 1 if args.book_student else k
            sset = dataclasses.replace(P.student, recipe=scaled(P.student.recipe, sk, lr),
                                       min_passes=P.student.min_passes * sk)
            mans = {}
            for role in args.roles:
                kind, name = role.split(":")
                t0 = time.perf_counter()
                if kind == "teacher" or name != "scratch":
                    mans[name] = teachers.run_teacher(
                        name, split, meta=meta, split_part=part, test_part=test, w16=w16, checkpoints=ckpts,
                        settings=tset, root=root, profile="ci", seed=args.seed, device="cpu", inputs=inputs,
                        progress=False)
                m = mans[name] if kind == "teacher" else distill.run_student(
                    None if name == "scratch" else name, split, meta=meta, split_part=part, test_part=test,
                    w32=w32, manifests=mans, settings=sset, root=root, profile="ci", seed=args.seed,
                    device="cpu", features=features, progress=False)
                n = len(teachers.hold_out_recordings(part, tset.val_fraction, args.seed)[0])  # training clips
                recipe = (teachers.recipe_of(name, tset, n, split) if kind == "teacher"
                          else with_passes(sset.recipe, n, sset.min_passes))
                h = m["history"]
                val = [e["val_loss"] for e in h]
                own = (teachers.load_logits(m, "train", part.filename.tolist()).argmax(1)  # the clips it teaches
                       if kind == "teacher" else None)
                pred = teachers.load_logits(m, "test").argmax(1)
                lo, hi = interval(bootstrap_macro(y_test, pred[None], where, len(SCENES))[0])
                rows.append({"split": split, "role": role, "scale": k, "lr": recipe.lr, "steps": recipe.epochs * recipe.steps_per_epoch,
                             "clips seen": recipe.epochs * recipe.steps_per_epoch * recipe.batch_size,
                             "best epoch": f"{m['best_epoch']}/{len(h)}", "val loss": min(val),
                             "tail drop": results.last_third_drop(val),
                             "own clips acc": (float("nan") if own is None
                                               else 100 * macro_accuracy(dataset.labels(part), own, len(SCENES))),
                             "test acc": m["test"]["macro"],
                             "ci low": lo, "ci high": hi, "seconds": m.get("seconds", time.perf_counter() - t0)})
                print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    if args.csv:
        part = f"{args.csv}.partial"  # never a half-written table where the Results chapter reads it
        table.drop(columns="seconds").to_csv(part, index=False)
        os.replace(part, args.csv)
        print(f"wrote {args.csv}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""How well a teacher fits the clips it teaches, epoch by epoch, under a longer or changed recipe.

    python bench/teacher_fit.py [--split 5] [--strategy SSL+SL] [--epochs 10] [--spe 16] [--lr 1e-3]
                                [--mixup A] [--threads N]

Trains one teacher with the ``ci`` profile's recipe changed as asked (``--spe``: steps per epoch;
``--mixup``: the mixup alpha) through the library's own ``run_teacher`` and prints, after every epoch, its
accuracy on its training clips (the clips it teaches, held-out validation recordings excluded; clean, eval
mode), its validation loss and accuracy and the monitored test accuracy; then one JSON line: the epoch that
validation loss selected, the fit there and at every epoch, and the test accuracy of the selected epoch.
A recipe the chapters use is reused from the cache (then no per-epoch fit is printed).
"""

import argparse
import dataclasses
import json
import time

from asc_lib import checkpoints, profiles, teachers
from asc_lib.data import SCENES, dataset
from asc_lib.data.tau import read_meta, read_split
from asc_lib.metrics import macro_accuracy
from asc_lib.repro import seed_everything
from asc_lib.train import predict_logits


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--split", type=int, default=5)
    p.add_argument("--strategy", default="SSL+SL", choices=[s for s in teachers.STRATEGIES if s != "SSL*"])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--spe", type=int, default=16, help="steps per epoch")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--mixup", type=float, default=None, help="mixup alpha (default: the profile's)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the profile's)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    P = profiles.get_profile("ci")
    seed_everything(a.seed, threads=a.threads or P.threads)
    root = dataset.prepare("", P, 0)
    meta = read_meta(root)
    test = read_split(root, "test", meta)
    w16 = dataset.waves(meta, 16000, P)
    ckpts = {k: v for k, v in checkpoints.small_beats(P, root, seed=0, device="cpu").items() if k != "history"}
    inputs = teachers.TeacherInputs(w16, cache=True)
    recipe = dataclasses.replace(P.teachers.finetune, epochs=a.epochs, steps_per_epoch=a.spe, lr=a.lr)
    settings = dataclasses.replace(P.teachers, finetune=recipe, finetune_epochs=(),
                                   **({} if a.mixup is None else {"mixup_alpha": a.mixup}))
    part = read_split(root, a.split, meta)
    taught, _ = teachers.hold_out_recordings(part, settings.val_fraction, a.seed)
    rows, y = dataset.rows(meta, taught), dataset.labels(taught)
    real = teachers.train

    def with_fit(model, step_loss, n, recipe, **kw):  # each epoch's evaluation also scores the taught clips
        evaluate = kw["evaluate"]

        def scored(m):
            z = predict_logits(m, len(rows), lambda i: inputs.fbank(rows[i.numpy()]), device="cpu", batch_size=64)
            return {**evaluate(m), "own_acc": 100 * macro_accuracy(y, z.argmax(1), len(SCENES))}
        return real(model, step_loss, n, recipe, **{**kw, "evaluate": scored})

    teachers.train = with_fit
    t0 = time.perf_counter()
    m = teachers.run_teacher(a.strategy, a.split, meta=meta, split_part=part, test_part=test, w16=w16,
                             checkpoints=ckpts, settings=settings, root=root, profile="ci", seed=a.seed,
                             device="cpu", inputs=inputs, progress=True)
    z = teachers.load_logits(m, "train", taught.filename.tolist())
    print(json.dumps({"args": vars(a), "best_epoch": m["best_epoch"],
                      "fit_at_selected": round(100 * macro_accuracy(y, z.argmax(1), len(SCENES)), 1),
                      "fit_per_epoch": [round(h["own_acc"], 1) for h in m["history"] if "own_acc" in h],
                      "test_at_selected": round(m["test"]["macro"], 1), "seconds": round(time.perf_counter() - t0)}))


if __name__ == "__main__":
    main()

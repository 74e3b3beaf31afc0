"""Is the dataset a real problem? A small CNN trained from scratch on a few splits, evaluated the way
the challenge does (macro accuracy, per device), with the criteria the twin must meet."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from ..metrics import bootstrap_macro, confusion, group_accuracy, interval, macro_accuracy
from ..models.tiny import TinyCNN
from ..profiles import DataSettings
from ..repro import seed_everything
from ..train import fit, predict
from . import DEVICES, SCENES
from .dataset import labels, rows
from .synthetic import RECIPES
from .tau import read_split

UNSEEN = ("s4", "s5", "s6")


def scratch_check(root, meta: pd.DataFrame, feats: torch.Tensor, settings: DataSettings, device: torch.device,
                  seed: int = 0, threads: int | None = None, histories: dict | None = None
                  ) -> tuple[pd.DataFrame, np.ndarray]:
    """Train a TinyCNN per split in ``settings.check_splits`` on ``feats`` (log-mels of every clip of
    ``meta``); returns one row per split (macro accuracy with its 95 % interval bootstrapped over test
    locations, device-wise accuracy, %) and the confusion matrix of the largest split's model on the test split.
    ``histories``: a dict that receives each split's training history (:func:`asc_lib.train.fit`)."""
    test = read_split(root, "test", meta)
    x_test, y_test = feats[rows(meta, test)], labels(test)
    results, matrix = [], None
    for split in settings.check_splits:
        part = read_split(root, split, meta)
        x, y = feats[rows(meta, part)], torch.from_numpy(labels(part))
        steps_per_epoch = math.ceil(len(x) / settings.check_batch_size)
        epochs = max(settings.check_epochs, math.ceil(settings.check_min_steps / steps_per_epoch))
        generator = seed_everything(seed, threads=threads)
        model = TinyCNN(n_classes=len(SCENES))
        history = fit(model, x, y, epochs=epochs, batch_size=settings.check_batch_size, lr=settings.check_lr,
                      device=device, generator=generator)
        if histories is not None:
            histories[f"{split} %"] = history
        pred = predict(model, x_test, device=device)
        per_device = group_accuracy(y_test, pred, test.device.to_numpy(), len(SCENES))
        low, high = interval(bootstrap_macro(y_test, pred, test.identifier.to_numpy(), len(SCENES))[0])
        results.append({"split": f"{split} %", "train clips": len(x), "epochs": epochs,
                        "macro": 100 * macro_accuracy(y_test, pred, len(SCENES)), "low": low, "high": high,
                        **{d: 100 * per_device[d] for d in DEVICES if d in per_device}})
        matrix = confusion(y_test, pred, len(SCENES))  # the last split is the largest
    return pd.DataFrame(results).set_index("split"), matrix


def criteria(table: pd.DataFrame) -> list[tuple[str, bool]]:
    """The twin's difficulty criteria, each with whether ``table`` (from :func:`scratch_check`) meets it."""
    full, small = table.loc["100 %"], table.loc["5 %"]
    unseen = np.mean([full[d] for d in UNSEEN])
    return [
        (f"100 % split: {full.macro:.1f} % macro accuracy, between 55 and 85", 55 <= full.macro <= 85),
        (f"5 % split: {small.macro:.1f} %, at least 10 points below 100 % ({full.macro - small.macro:.1f})",
         full.macro - small.macro >= 10),
        (f"unseen devices s4-s6: {unseen:.1f} %, below device a ({full['a']:.1f} %)", unseen < full["a"]),
    ]


def top_confusions(matrix: np.ndarray, k: int = 3) -> list[tuple[str, str, float, list[str]]]:
    """The ``k`` largest off-diagonal cells of a confusion matrix (counts, rows = true scene): ``(true,
    predicted, % of the true scene's clips, the sound sources the twin's recipes of the two scenes share)``."""
    share = 100 * matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    np.fill_diagonal(share, -1)
    order = np.argsort(share, axis=None, kind="stable")[::-1][:k]
    out = []
    for true, pred in zip(*np.unravel_index(order, share.shape)):
        a, b = ({f.__name__.strip("_") for f, _, _ in RECIPES.get(SCENES[i], [])} for i in (true, pred))
        out.append((SCENES[true], SCENES[pred], float(share[true, pred]), sorted(a & b)))
    return out


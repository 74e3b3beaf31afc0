"""Is the twin a faithful miniature? The student trained alone on each split, evaluated the way the
challenge does (macro accuracy, per device), with the criteria the twin must meet."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .. import paper
from ..metrics import bootstrap_macro, confusion, group_accuracy, interval, macro_accuracy
from ..profiles import Profile
from . import DEVICES, SCENES
from .dataset import labels
from .synthetic import RECIPES
from .tau import read_split

UNSEEN = ("s4", "s5", "s6")


def student_check(root, meta: pd.DataFrame, w32, features: torch.Tensor, profile: Profile, device,
                  seed: int = 0, progress: bool = True) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """The student trained alone, as the student chapter trains it (the same runs: the cache serves both),
    on each of the profile's splits: one row per split (macro accuracy with its 95 % interval bootstrapped
    over test locations, the DCASE2024 baseline's published accuracy, device-wise accuracy, %), the
    confusion matrix of the largest split's run on the test split, and the runs ``{("scratch", split):
    manifest}``. ``features``: log-mels of every clip of ``meta`` (:func:`asc_lib.distill.logmel_all`)."""
    from ..distill import run_student
    from ..teachers import load_logits

    test = read_split(root, "test", meta)
    y_test = labels(test)
    results, runs, matrix = [], {}, None
    for split in profile.student.splits:
        m = run_student(None, split, meta=meta, split_part=read_split(root, split, meta), test_part=test, w32=w32,
                        manifests={}, settings=profile.student, root=root, profile=profile.name, seed=seed,
                        device=device, features=features, progress=progress)
        runs["scratch", split] = m
        pred = load_logits(m, "test").argmax(1)
        per_device = group_accuracy(y_test, pred, test.device.to_numpy(), len(SCENES))
        low, high = interval(bootstrap_macro(y_test, pred, test.identifier.to_numpy(), len(SCENES))[0])
        results.append({"split": f"{split} %", "train clips": len(read_split(root, split, meta)),
                        "macro": 100 * macro_accuracy(y_test, pred, len(SCENES)), "low": low, "high": high,
                        "baseline": paper.BASELINE_ACC.get(split, float("nan")),
                        **{d: 100 * per_device[d] for d in DEVICES if d in per_device}})
        matrix = confusion(y_test, pred, len(SCENES))  # the last split is the largest
    return pd.DataFrame(results).set_index("split"), matrix, runs


TOLERANCE = 5.0  # points: the student alone within this of the real learning curve at every split


def criteria(table: pd.DataFrame) -> list[tuple[str, bool]]:
    """The twin's contract, each criterion with whether ``table`` (from :func:`student_check`) meets it: the
    student alone within :data:`TOLERANCE` points of the DCASE2024 baseline on TAU22 at every split (the
    real learning curve: more data helps, and stops helping near 60 %), and the unseen devices harder
    than device a."""
    out = [(f"{split}: {r.macro:.1f} % macro accuracy, within {TOLERANCE:.0f} points of the baseline's "
            f"{r.baseline:.1f} % on TAU22 ({r.macro - r.baseline:+.1f})", abs(r.macro - r.baseline) <= TOLERANCE)
           for split, r in table.iterrows()]
    full = table.iloc[-1]
    unseen = np.mean([full[d] for d in UNSEEN])
    out.append((f"unseen devices s4-s6 at {table.index[-1]}: {unseen:.1f} %, below device a ({full['a']:.1f} %)",
                unseen < full["a"]))
    return out


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


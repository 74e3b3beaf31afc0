"""Accuracy the way DCASE Task 1 reports it: macro (class-averaged), class-wise, device-wise."""

from __future__ import annotations

import numpy as np


def confusion(y_true, y_pred, n_classes: int) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return m


def class_accuracy(y_true, y_pred, n_classes: int) -> np.ndarray:
    """Accuracy of each class (NaN for a class with no example)."""
    m = confusion(y_true, y_pred, n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.diag(m) / m.sum(axis=1)


def macro_accuracy(y_true, y_pred, n_classes: int) -> float:
    """Mean of the class-wise accuracies over the classes present: the challenge metric."""
    return float(np.nanmean(class_accuracy(y_true, y_pred, n_classes)))


def group_accuracy(y_true, y_pred, groups, n_classes: int) -> dict:
    """Macro accuracy within each group (e.g. device): ``{group: accuracy}``."""
    y_true, y_pred, groups = map(np.asarray, (y_true, y_pred, groups))
    return {g: macro_accuracy(y_true[groups == g], y_pred[groups == g], n_classes) for g in np.unique(groups)}


def bootstrap_macro(y_true, preds, groups, n_classes: int, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """Macro accuracy (%) of each row of ``preds`` (S, N) on ``n_boot`` resamples of the test set by
    ``groups`` (N,) (the recording locations): a resample draws as many groups as there are, with
    replacement, and keeps all clips of each drawn group together. Every row sees the same resamples, so
    differences between rows are paired. Returns (S, n_boot)."""
    y_true, groups = np.asarray(y_true), np.asarray(groups)
    preds = np.atleast_2d(np.asarray(preds))
    _, g = np.unique(groups, return_inverse=True)
    G = g.max() + 1
    total = np.zeros((G, n_classes))
    np.add.at(total, (g, y_true), 1)  # (G, C) clips of each class at each group
    correct = np.zeros((len(preds), G, n_classes))
    for s, pred in enumerate(preds):
        np.add.at(correct[s], (g, y_true), pred == y_true)
    draws = np.random.default_rng([seed, 13]).integers(0, G, size=(n_boot, G))
    weights = np.stack([np.bincount(d, minlength=G) for d in draws]).astype(float)  # (n_boot, G)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = (weights @ correct) / (weights @ total)  # (S, n_boot, C)
    return 100 * np.nanmean(acc, axis=-1)


def interval(samples, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap ``samples`` (last axis)."""
    lo, hi = np.percentile(samples, [50 * (1 - level), 50 * (1 + level)], axis=-1)
    return lo, hi

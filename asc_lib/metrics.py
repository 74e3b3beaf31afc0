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

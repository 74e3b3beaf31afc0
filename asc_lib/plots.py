"""Figures the chapters show."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns


def spectrograms(specs, titles, hop_seconds: float, ncols: int = 3):
    """Log-mel spectrograms side by side; ``specs`` are (mels, frames) arrays."""
    nrows = -(-len(specs) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3 * nrows), squeeze=False, layout="constrained")
    for ax, spec, title in zip(axes.flat, specs, titles):
        spec = np.asarray(spec)
        im = ax.imshow(spec, origin="lower", aspect="auto", cmap="magma",
                       extent=(0, spec.shape[1] * hop_seconds, 0, spec.shape[0]))
        ax.set(title=title, xlabel="time (s)", ylabel="mel bin")
    for ax in axes.flat[len(specs):]:
        ax.axis("off")
    fig.colorbar(im, ax=axes, shrink=0.8, label="normalised log-mel")
    return fig


def confusion_matrix(matrix, labels, title: str = ""):
    """Row-normalised confusion matrix (rows: true scene) in percent."""
    matrix = np.asarray(matrix, dtype=float)
    share = 100 * matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7, 6))
    sns.heatmap(share, annot=True, fmt=".0f", cmap="Blues", xticklabels=labels, yticklabels=labels,
                cbar_kws={"label": "% of true class"}, ax=ax)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    return fig

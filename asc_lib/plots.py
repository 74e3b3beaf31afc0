"""Figures the chapters show."""

from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.backend_bases import FigureCanvasBase
from matplotlib.text import Text

MIN_FONT_KEY = "asc-min-font-px"  # a PNG text chunk: the figure's smallest text, in pixels of the PNG


def smallest_font_px(fig, dpi: float) -> float | None:
    """The size (pixels at ``dpi``) of the smallest visible, non-empty text of ``fig``; None if it has none."""
    fig.draw_without_rendering()  # tick labels get their text when the figure is laid out
    sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    return min(sizes) * dpi / 72 if sizes else None


def _print_figure_with_font_size(print_figure):
    """Every PNG a figure is saved to (the notebook's inline images too) carries :data:`MIN_FONT_KEY`, so
    that the site check can tell how large the figure's smallest text is where the page shows it."""
    def wrapped(self, filename, *args, **kwargs):
        fmt = kwargs.get("format")
        if fmt is None and isinstance(filename, (str, os.PathLike)):
            fmt = os.path.splitext(os.fspath(filename))[1].lstrip(".") or plt.rcParams["savefig.format"]
        if str(fmt).lower() == "png":
            dpi = kwargs.get("dpi") or self.figure.dpi
            px = smallest_font_px(self.figure, dpi if isinstance(dpi, (int, float)) else self.figure.dpi)
            if px is not None:
                kwargs["metadata"] = {**(kwargs.get("metadata") or {}), MIN_FONT_KEY: f"{px:.2f}"}
        return print_figure(self, filename, *args, **kwargs)
    wrapped.asc_wrapped = True
    return wrapped


if not getattr(FigureCanvasBase.print_figure, "asc_wrapped", False):
    FigureCanvasBase.print_figure = _print_figure_with_font_size(FigureCanvasBase.print_figure)


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


def feature_views(fbank, logmel, title: str = ""):
    """The same clip as BEATs sees it (128-band fbank, 10 ms frames) and as the student does."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.5), layout="constrained")
    fbank, logmel = np.asarray(fbank), np.asarray(logmel)
    a.imshow(fbank.T, origin="lower", aspect="auto", cmap="magma", extent=(0, fbank.shape[0] * 0.01, 0, fbank.shape[1]))
    a.set(title=f"BEATs fbank: 16 kHz, {fbank.shape[1]} mels, {fbank.shape[0]} frames", xlabel="time (s)", ylabel="mel bin")
    b.imshow(logmel, origin="lower", aspect="auto", cmap="magma", extent=(0, logmel.shape[1] * 500 / 32000, 0, logmel.shape[0]))
    b.set(title=f"student log-mel: 32 kHz, {logmel.shape[0]} mels, {logmel.shape[1]} frames", xlabel="time (s)")
    fig.suptitle(title)
    return fig


def device_responses(freqs, curves: dict, title: str = "Devices relative to device a"):
    """Measured average spectrum of each device minus device a's (dB) against frequency."""
    fig, ax = plt.subplots(figsize=(9, 4), layout="constrained")
    for i, (device, db) in enumerate(curves.items()):
        ax.plot(freqs[1:], db[1:], label=device, lw=1.5 if device in ("a", "b", "c") else 1,
                ls="-" if device not in ("s4", "s5", "s6") else "--", color=plt.cm.tab10(i))
    ax.set(xscale="log", xlabel="frequency (Hz)", ylabel="dB relative to device a", title=title)
    ax.legend(ncol=3, title="device (dashed: unseen in training)")
    ax.grid(alpha=0.3)
    return fig


def patches(fbank, masked=None, patch: int = 16, title: str = ""):
    """A BEATs fbank (frames, mels) cut into ``patch``x``patch`` patches, numbered in token order
    (time-major); ``masked`` (tokens,) bool greys out the patches the encoder does not see."""
    fbank = np.asarray(fbank)
    frames = fbank.shape[0] // patch * patch
    fig, ax = plt.subplots(figsize=(10, 4), layout="constrained")
    ax.imshow(fbank[:frames].T, origin="lower", aspect="auto", cmap="magma", extent=(0, frames, 0, fbank.shape[1]))
    per_time = fbank.shape[1] // patch
    for t in range(frames // patch):
        for f in range(per_time):
            token = t * per_time + f
            if masked is not None and masked[token]:
                ax.add_patch(plt.Rectangle((t * patch, f * patch), patch, patch, color="0.85"))
            ax.text(t * patch + patch / 2, f * patch + patch / 2, str(token), ha="center", va="center",
                    fontsize=7, color="k" if masked is not None and masked[token] else "w")
    ax.set_xticks(range(0, frames + 1, patch))
    ax.set_yticks(range(0, fbank.shape[1] + 1, patch))
    ax.grid(color="w", lw=0.6)
    ax.set(xlabel="frame (10 ms)", ylabel="mel bin", title=title)
    return fig


def curves(history: list[dict], keys, chance: dict | None = None, title: str = "", xlabel: str = "epoch"):
    """Curves of ``keys`` against each row's ``epoch`` in a training history, one panel each, with chance
    levels."""
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5), layout="constrained", squeeze=False)
    epochs = [h["epoch"] for h in history]
    for ax, key in zip(axes.flat, keys):
        ax.plot(epochs, [h[key] for h in history], marker=".")
        if chance and key in chance:
            ax.axhline(chance[key], color="0.5", ls="--", label="chance")
            ax.legend()
        ax.set(xlabel=xlabel, title=key)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return fig


def training_curves(runs: dict, steps_per_epoch, title: str = ""):
    """Every run's loss and validation accuracy against optimiser steps (``runs``: ``(name, split) ->
    manifest`` with a per-epoch ``history``; ``steps_per_epoch(name, split)``), one column per split. Top:
    training loss (dashed; on mixed-up batches, so above the loss on clean clips) and validation loss
    (solid), the open circle at the epoch kept; bottom: validation accuracy."""
    splits = sorted({s for _, s in runs})
    fig, axes = plt.subplots(2, len(splits), figsize=(3.3 * len(splits), 5.2), layout="constrained",
                             squeeze=False, sharey="row")
    for col, split in enumerate(splits):
        for k, name in enumerate(n for n, s in runs if s == split):
            m, color = runs[name, split], plt.cm.tab10(k % 10)
            h = m["history"]
            x = [e["epoch"] * steps_per_epoch(name, split) for e in h]
            axes[0, col].plot(x, [e["loss"] for e in h], "--", lw=1, color=color)
            axes[0, col].plot(x, [e["val_loss"] for e in h], "-", color=color, label=name)
            best = m["best_epoch"] - 1
            axes[0, col].plot(x[best], h[best]["val_loss"], "o", mfc="none", ms=8, color=color)
            axes[1, col].plot(x, [e["val_acc"] for e in h], "-", color=color, label=name)
        axes[0, col].set_title(f"{split} % split")
        axes[1, col].set_xlabel("optimiser steps")
        for ax in axes[:, col]:
            ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("loss (dashed: training)")
    axes[1, 0].set_ylabel("validation accuracy (%)")
    axes[1, -1].legend(fontsize=7)
    fig.suptitle(title)
    return fig


def fit_curves(histories: dict, title: str = ""):
    """Training loss and training accuracy per epoch of :func:`asc_lib.train.fit` runs (``histories``:
    ``{label: history}``), one line per run."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), layout="constrained")
    for k, (label, h) in enumerate(histories.items()):
        epochs = [e["epoch"] for e in h]
        axes[0].plot(epochs, [e["loss"] for e in h], color=plt.cm.tab10(k), label=label)
        axes[1].plot(epochs, [100 * e["train_acc"] for e in h], color=plt.cm.tab10(k), label=label)
    axes[0].set(xlabel="epoch", ylabel="training loss")
    axes[1].set(xlabel="epoch", ylabel="training accuracy (%)", ylim=(0, 101))
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle(title)
    return fig


def embedding_scatter(xy, groups: dict, title: str = ""):
    """2-D embeddings coloured by each grouping in ``groups`` ({name: (labels array, label names)})."""
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 5), layout="constrained", squeeze=False)
    for ax, (name, (labels, names)) in zip(axes.flat, groups.items()):
        for k, label in enumerate(names):
            pick = np.asarray(labels) == k
            if pick.any():
                ax.scatter(xy[pick, 0], xy[pick, 1], s=6, alpha=0.6, label=label, color=plt.cm.tab10(k % 10))
        ax.set(title=f"coloured by {name}", xticks=[], yticks=[])
        ax.legend(fontsize=7, markerscale=2, ncol=2)
    fig.suptitle(title)
    return fig


def _fraction_axis(ax, splits, title: str) -> None:
    """Accuracy against the labelled fraction: a log x axis labelled with the splits."""
    ax.set(xscale="log", xticks=splits, xticklabels=[f"{s} %" for s in splits], xlabel="labelled training data",
           ylabel="macro accuracy (%)", title=title)
    ax.minorticks_off()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def accuracy_vs_fraction(table, references: dict | None = None, title: str = ""):
    """One line per system (rows of ``table``; columns are split percentages) on a log x axis;
    ``references``: {label: {split: accuracy}} drawn dashed (e.g. the published baseline)."""
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    for name, row in table.iterrows():
        ax.plot(row.index, row.values, marker="o", label=name)
    for label, values in (references or {}).items():
        ax.plot(list(values), list(values.values()), ls="--", color="0.4", marker=".", label=label)
    splits = list(table.columns)
    _fraction_axis(ax, splits, title)
    return fig


def seed_curves(seeds, systems, references: dict | None = None, title: str = ""):
    """Accuracy against the labelled fraction for ``systems`` (names in ``seeds``, the seed study's long
    table: system, split, seed, accuracy): the mean over the seeds as a line, each seed as a dot;
    ``references`` ({label: {split: accuracy}}) dashed."""
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    for k, name in enumerate(systems):
        rows = seeds[seeds.system == name]
        mean = rows.groupby("split").accuracy.mean()
        color = plt.cm.tab10(k % 10)
        ax.plot(mean.index, mean.values, marker="o", color=color, label=name)
        ax.scatter(rows.split, rows.accuracy, s=12, color=color, alpha=0.5)
    for label, values in (references or {}).items():
        ax.plot(list(values), list(values.values()), ls="--", color="0.4", marker=".", label=label)
    splits = sorted(seeds.split.unique())
    _fraction_axis(ax, splits, title)
    return fig


def heatmap(table, title: str = "", fmt: str = ".1f", cmap: str = "viridis"):
    """A table of numbers (rows x columns) as an annotated heatmap."""
    fig, ax = plt.subplots(figsize=(1 + 0.8 * table.shape[1], 0.8 + 0.45 * table.shape[0]), layout="constrained")
    sns.heatmap(table, annot=True, fmt=fmt, cmap=cmap, cbar=False, ax=ax)
    ax.set(title=title, ylabel="")
    return fig


def layer_chain(layers, title: str = ""):
    """A network as a chain of boxes, one per layer: ``layers`` is a list of (name, output shape (C, F, T),
    parameters); box height grows with the channels, and each box is labelled with its output shape."""
    fig, ax = plt.subplots(figsize=(max(8, 0.62 * len(layers)), 3.4), layout="constrained")
    top = max(np.log2(shape[0] + 1) for _, shape, _ in layers)
    for i, (name, shape, params) in enumerate(layers):
        h = np.log2(shape[0] + 1) / top
        colour = {"N": "0.85", "M": "tab:orange"}.get(name[0], "tab:blue")
        ax.add_patch(plt.Rectangle((i, -h / 2), 0.8, h, color=colour, alpha=0.8))
        ax.text(i + 0.4, h / 2 + 0.04, name, ha="center", va="bottom", fontsize=7, rotation=90)
        ax.text(i + 0.4, -h / 2 - 0.04, "×".join(map(str, shape)) + (f"\n{params:,} p" if params else ""),
                ha="center", va="top", fontsize=6, rotation=90)
    ax.set(xlim=(-0.2, len(layers)), ylim=(-1.6, 1.5), title=title)
    ax.axis("off")
    return fig


def ablation(table, title: str = ""):
    """The distillation ablation (``bench/kd_ablation.py``'s table, with a short ``label`` per row): each
    arm's gain over the student from scratch with its 95 % interval, one panel per split, stacked and narrow
    so that a phone shows it at a readable size; filled: the interval holds, open: not resolved, a cross:
    reversed. Blue: the single teacher SSL+SL; orange: an ensemble."""
    splits = sorted(table["split"].unique())
    n = max(len(table[table["split"] == s]) for s in splits)
    fig, axes = plt.subplots(len(splits), 1, figsize=(4.2, 0.9 + 0.26 * n * len(splits)), sharex=True,
                             layout="constrained", squeeze=False)
    for ax, split in zip(axes[:, 0], splits):
        part = table[table["split"] == split].reset_index(drop=True)
        y = np.arange(len(part))[::-1]
        for yi, r in zip(y, part.itertuples()):
            color = "tab:blue" if r.teacher == "SSL+SL" else "tab:orange"
            ax.plot([r.low, r.high], [yi, yi], color=color, lw=2)
            face = color if r.verdict == "holds" else "white"
            ax.plot(r.gain, yi, "x" if r.verdict == "reversed" else "o", color=color, mfc=face, ms=6)
        ax.axvline(0, color="0.4", lw=1)
        ax.set_yticks(y, part["label"], fontsize=10)
        ax.set_title(f"{split} % split", fontsize=11)
        ax.tick_params(axis="x", labelsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[-1, 0].set_xlabel("gain over scratch (points)", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig

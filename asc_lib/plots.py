"""Figures the chapters show."""

from __future__ import annotations

import os
import textwrap

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

# Figures are drawn for the text column, which a phone shows 358 px wide: at most WIDTH inches, with no
# text under 9.5 points, so that every text is at least 9 px there (9.5 pt x 358 px / (72 x 5 in), with
# room for labels that reach past the axes).
WIDTH = 4.8
plt.rcParams.update({"font.size": 10, "axes.titlesize": 10.5, "axes.labelsize": 10, "xtick.labelsize": 9.5,
                     "ytick.labelsize": 9.5, "legend.fontsize": 9.5, "legend.title_fontsize": 9.5,
                     "figure.titlesize": 11})


def spectrograms(specs, titles, hop_seconds: float, ncols: int = 2):
    """Log-mel spectrograms side by side; ``specs`` are (mels, frames) arrays."""
    nrows = -(-len(specs) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(WIDTH, 2.1 * nrows), squeeze=False, layout="constrained",
                             sharex=True, sharey=True)
    for ax, spec, title in zip(axes.flat, specs, titles):
        spec = np.asarray(spec)
        im = ax.imshow(spec, origin="lower", aspect="auto", cmap="magma",
                       extent=(0, spec.shape[1] * hop_seconds, 0, spec.shape[0]))
        ax.set(title=title)
    for ax in axes[-1]:
        ax.set_xlabel("time (s)")
    for ax in axes[:, 0]:
        ax.set_ylabel("mel bin")
    for ax in axes.flat[len(specs):]:
        ax.axis("off")
    fig.colorbar(im, ax=axes, shrink=0.6, label="normalised log-mel", location="bottom")
    return fig


def confusion_matrix(matrix, labels, title: str = ""):
    """Row-normalised confusion matrix (rows: true scene) in percent."""
    matrix = np.asarray(matrix, dtype=float)
    share = 100 * matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(WIDTH, 4.9))
    sns.heatmap(share, annot=True, fmt=".0f", cmap="Blues", xticklabels=labels, yticklabels=labels, cbar=False,
                annot_kws={"fontsize": 9.5}, ax=ax)
    ax.set(xlabel="predicted (% of the true scene's clips)", ylabel="true", title=title)
    fig.tight_layout()
    return fig


def feature_views(fbank, logmel, title: str = ""):
    """The same clip as BEATs sees it (128-band fbank, 10 ms frames) and as the student does."""
    fig, (a, b) = plt.subplots(2, 1, figsize=(WIDTH, 5), layout="constrained")
    fbank, logmel = np.asarray(fbank), np.asarray(logmel)
    a.imshow(fbank.T, origin="lower", aspect="auto", cmap="magma", extent=(0, fbank.shape[0] * 0.01, 0, fbank.shape[1]))
    a.set(title=f"BEATs fbank: 16 kHz, {fbank.shape[1]} mels, {fbank.shape[0]} frames", ylabel="mel bin")
    b.imshow(logmel, origin="lower", aspect="auto", cmap="magma", extent=(0, logmel.shape[1] * 500 / 32000, 0, logmel.shape[0]))
    b.set(title=f"student log-mel: 32 kHz, {logmel.shape[0]} mels, {logmel.shape[1]} frames", xlabel="time (s)",
          ylabel="mel bin")
    fig.suptitle(title)
    return fig


def device_responses(freqs, curves: dict, title: str = "Devices relative to device a"):
    """Measured average spectrum of each device minus device a's (dB) against frequency."""
    fig, ax = plt.subplots(figsize=(WIDTH, 4.2), layout="constrained")
    for i, (device, db) in enumerate(curves.items()):
        ax.plot(freqs[1:], db[1:], label=device, lw=1.5 if device in ("a", "b", "c") else 1,
                ls="-" if device not in ("s4", "s5", "s6") else "--", color=plt.cm.tab10(i))
    ax.set(xscale="log", xlabel="frequency (Hz)", ylabel="dB relative to device a", title=title)
    ax.legend(ncol=5, title="device (dashed: unseen in training)", loc="upper center", bbox_to_anchor=(0.5, -0.2))
    ax.grid(alpha=0.3)
    return fig


def patches(fbank, masked=None, patch: int = 16, title: str = ""):
    """A BEATs fbank (frames, mels) cut into ``patch``x``patch`` patches, numbered in token order
    (time-major); ``masked`` (tokens,) bool greys out the patches the encoder does not see."""
    fbank = np.asarray(fbank)
    frames = fbank.shape[0] // patch * patch
    fig, ax = plt.subplots(figsize=(WIDTH, 4), layout="constrained")
    ax.imshow(fbank[:frames].T, origin="lower", aspect="auto", cmap="magma", extent=(0, frames, 0, fbank.shape[1]))
    per_time = fbank.shape[1] // patch
    for t in range(frames // patch):
        for f in range(per_time):
            token = t * per_time + f
            if masked is not None and masked[token]:
                ax.add_patch(plt.Rectangle((t * patch, f * patch), patch, patch, color="0.85"))
            ax.text(t * patch + patch / 2, f * patch + patch / 2, str(token), ha="center", va="center",
                    fontsize=9.5, color="k" if masked is not None and masked[token] else "w")
    ax.set_xticks(range(0, frames + 1, patch))
    ax.set_yticks(range(0, fbank.shape[1] + 1, patch))
    ax.grid(color="w", lw=0.6)
    ax.set(xlabel="frame (10 ms)", ylabel="mel bin", title=title)
    return fig


def curves(history: list[dict], keys, chance: dict | None = None, title: str = "", xlabel: str = "epoch"):
    """Curves of ``keys`` against each row's ``epoch`` in a training history, one panel each, with chance
    levels."""
    fig, axes = plt.subplots(len(keys), 1, figsize=(WIDTH, 2.4 * len(keys)), layout="constrained", squeeze=False,
                             sharex=True)
    epochs = [h["epoch"] for h in history]
    for ax, key in zip(axes.flat, keys):
        ax.plot(epochs, [h[key] for h in history], marker=".")
        if chance and key in chance:
            ax.axhline(chance[key], color="0.5", ls="--", label="chance")
            ax.legend()
        ax.set(title=key)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel(xlabel)
    fig.suptitle(title)
    return fig


def training_curves(runs: dict, steps_per_epoch, title: str = ""):
    """Every run's loss and validation accuracy against optimiser steps (``runs``: ``(name, split) ->
    manifest`` with a per-epoch ``history``; ``steps_per_epoch(name, split)``), one column per split. Top:
    training loss (dashed; on mixed-up batches, so above the loss on clean clips) and validation loss
    (solid), the open circle at the epoch kept; bottom: validation accuracy."""
    splits = sorted({s for _, s in runs})
    fig, axes = plt.subplots(len(splits), 2, figsize=(WIDTH, 0.9 + 2.2 * len(splits)), layout="constrained",
                             squeeze=False, sharey="col")
    for row, split in enumerate(splits):
        for k, name in enumerate(n for n, s in runs if s == split):
            m, color = runs[name, split], plt.cm.tab10(k % 10)
            h = m["history"]
            x = [e["epoch"] * steps_per_epoch(name, split) for e in h]
            axes[row, 0].plot(x, [e["loss"] for e in h], "--", lw=1, color=color)
            axes[row, 0].plot(x, [e["val_loss"] for e in h], "-", color=color, label=name)
            best = m["best_epoch"] - 1
            axes[row, 0].plot(x[best], h[best]["val_loss"], "o", mfc="none", ms=8, color=color)
            axes[row, 1].plot(x, [e["val_acc"] for e in h], "-", color=color, label=name)
        axes[row, 0].set_ylabel(f"{split} % split")
        for ax in axes[row]:
            ax.grid(alpha=0.3)
    axes[0, 0].set_title("loss (dashed: training)")
    axes[0, 1].set_title("validation accuracy (%)")
    for ax in axes[-1]:
        ax.set_xlabel("optimiser steps")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3)
    fig.suptitle(title)
    return fig


def fit_curves(histories: dict, title: str = ""):
    """Training loss and training accuracy per epoch of :func:`asc_lib.train.fit` runs (``histories``:
    ``{label: history}``), one line per run."""
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 2.8), layout="constrained")
    for k, (label, h) in enumerate(histories.items()):
        epochs = [e["epoch"] for e in h]
        axes[0].plot(epochs, [e["loss"] for e in h], color=plt.cm.tab10(k), label=label)
        axes[1].plot(epochs, [100 * e["train_acc"] for e in h], color=plt.cm.tab10(k), label=label)
    axes[0].set(xlabel="epoch", ylabel="training loss")
    axes[1].set(xlabel="epoch", ylabel="training accuracy (%)", ylim=(0, 101))
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend()
    fig.suptitle(title)
    return fig


def embedding_scatter(xy, groups: dict, title: str = ""):
    """2-D embeddings coloured by each grouping in ``groups`` ({name: (labels array, label names)})."""
    fig, axes = plt.subplots(len(groups), 1, figsize=(WIDTH, 4.6 * len(groups)), layout="constrained", squeeze=False)
    for ax, (name, (labels, names)) in zip(axes.flat, groups.items()):
        for k, label in enumerate(names):
            pick = np.asarray(labels) == k
            if pick.any():
                ax.scatter(xy[pick, 0], xy[pick, 1], s=6, alpha=0.6, label=label, color=plt.cm.tab10(k % 10))
        ax.set(title=f"coloured by {name}", xticks=[], yticks=[])
        ax.legend(markerscale=2, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(title)
    return fig


def _fraction_axis(ax, splits, title: str) -> None:
    """Accuracy against the labelled fraction: a log x axis labelled with the splits."""
    ax.set(xscale="log", xticks=splits, xticklabels=[f"{s} %" for s in splits], xlabel="labelled training data",
           ylabel="macro accuracy (%)", title=title)
    ax.minorticks_off()
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22))


def accuracy_vs_fraction(table, references: dict | None = None, title: str = ""):
    """One line per system (rows of ``table``; columns are split percentages) on a log x axis;
    ``references``: {label: {split: accuracy}} drawn dashed (e.g. the published baseline)."""
    fig, ax = plt.subplots(figsize=(WIDTH, 4.6), layout="constrained")
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
    fig, ax = plt.subplots(figsize=(WIDTH, 4.6), layout="constrained")
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
    """A table of numbers (rows x columns) as an annotated heatmap; long row labels are wrapped so that the
    figure keeps the column's width (a wider one is shrunk on a phone, and its numbers with it)."""
    labels = [textwrap.fill(str(r), 16) for r in table.index]
    lines = sum(max(1, label.count("\n") + 1) for label in labels)
    fig, ax = plt.subplots(figsize=(WIDTH, 0.9 + 0.24 * lines + 0.18 * len(labels)), layout="constrained")
    sns.heatmap(table, annot=True, fmt=fmt, cmap=cmap, cbar=False, annot_kws={"fontsize": 9.5}, ax=ax,
                yticklabels=labels)
    ax.tick_params(axis="y", rotation=0)
    ax.set(ylabel="")
    ax.set_title(textwrap.fill(title, 52))
    return fig


def layer_chain(layers, title: str = ""):
    """A network as a chain of boxes, one per layer: ``layers`` is a list of (name, output shape (C, F, T),
    parameters); box height grows with the channels, and each box is labelled with its output shape."""
    fig, ax = plt.subplots(figsize=(WIDTH, 0.6 + 0.3 * len(layers)), layout="constrained")
    top = max(np.log2(shape[0] + 1) for _, shape, _ in layers)
    for i, (name, shape, params) in enumerate(layers):
        w = np.log2(shape[0] + 1) / top  # the chain runs down the page: box widths follow the channels
        y = len(layers) - 1 - i
        colour = {"N": "0.85", "M": "tab:orange"}.get(name[0], "tab:blue")
        ax.add_patch(plt.Rectangle((-w / 2, y), w, 0.8, color=colour, alpha=0.8))
        ax.text(-0.55, y + 0.4, name, ha="right", va="center", fontsize=9.5)
        ax.text(0.55, y + 0.4, "×".join(map(str, shape)) + (f"  ({params:,} p)" if params else ""),
                ha="left", va="center", fontsize=9.5)
    ax.set(xlim=(-1.9, 2.1), ylim=(-0.2, len(layers)), title=title)
    ax.axis("off")
    return fig


def ablation(table, title: str = ""):
    """The distillation ablation (``bench/kd_ablation.py``'s table, with a short ``label`` per row): each
    arm's gain over the student from scratch with its 95 % interval, one panel per split, stacked and narrow
    so that a phone shows it at a readable size; the bar: the seed mean's interval over test locations;
    grey dots: each seed's gain; filled: holds on every seed, a cross: reversed on every seed, open:
    otherwise. Blue: the single teacher SSL+SL; orange: an ensemble."""
    from .results import on_every_seed, seed_gains

    splits = sorted(table["split"].unique())
    n = max(len(table[table["split"] == s]) for s in splits)
    fig, axes = plt.subplots(len(splits), 1, figsize=(4.2, 0.9 + 0.26 * n * len(splits)), sharex=True,
                             layout="constrained", squeeze=False)
    for ax, split in zip(axes[:, 0], splits):
        part = table[table["split"] == split].reset_index(drop=True)
        y = np.arange(len(part))[::-1]
        for yi, (_, r) in zip(y, part.iterrows()):
            color = "tab:blue" if r.teacher == "SSL+SL" else "tab:orange"
            ax.plot([r.low, r.high], [yi, yi], color=color, lw=2)
            each = list(seed_gains(r["gain by seed"]).values())
            ax.plot(each, [yi] * len(each), ".", color="0.45", ms=4)
            face = color if on_every_seed(r["seeds holding"]) else "white"
            lost = on_every_seed(r["seeds reversed"])
            ax.plot(r.gain, yi, "x" if lost else "o", color=color, mfc=face, ms=6)
        ax.axvline(0, color="0.4", lw=1)
        ax.set_yticks(y, part["label"], fontsize=10)
        ax.set_title(f"{split} % split", fontsize=11)
        ax.tick_params(axis="x", labelsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[-1, 0].set_xlabel("gain over scratch (points)", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig

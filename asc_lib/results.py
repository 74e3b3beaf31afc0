"""Result tables the chapters write to ``book/results/<name>.csv`` (the Results chapter reads them)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .metrics import bootstrap_macro, interval, macro_accuracy
from .paths import results_dir


def save(table: pd.DataFrame, name: str) -> Path:
    """Write ``table`` (index included) atomically; returns the path. Four decimals: numbers are rounded
    once, for display (:func:`fmt`), so a chapter that reads the table shows what the writer showed.
    Under the chapter runner the table is staged (``ASC_RESULTS_STAGING``) and reaches the results folder
    with its executed chapter, only if the whole chapter succeeded."""
    staging = os.environ.get("ASC_RESULTS_STAGING")
    path = (Path(staging) if staging else results_dir()) / f"{name}.csv"
    tmp = path.with_suffix(".csv.tmp")
    table.to_csv(tmp, float_format="%.4f")
    os.replace(tmp, path)
    return path


def _bootstrap(preds: dict, y_true, groups, n_classes: int, n_boot: int):
    """Point accuracies (systems x splits) and their bootstrap samples (systems x splits x n_boot)."""
    names, splits = list(preds), list(next(iter(preds.values())))
    stack = np.stack([preds[n][s] for n in names for s in splits])
    boot = bootstrap_macro(y_true, stack, groups, n_classes, n_boot).reshape(len(names), len(splits), n_boot)
    point = 100 * np.array([[macro_accuracy(y_true, preds[n][s], n_classes) for s in splits] for n in names])
    return names, splits, point, boot


def accuracy_table(preds: dict, y_true, groups, n_classes: int, n_boot: int = 2000) -> pd.DataFrame:
    """``preds``: ``{system: {split: predicted classes (N,)}}`` on one test set (``y_true``, and ``groups``
    its recording locations). Per system: the macro accuracy (%) on each split, their ``mean``, the 95 %
    interval of the mean (``low``, ``high``) and the largest half-width of a single split's 95 % interval
    (``± split``), from one bootstrap over test locations (the same resamples for every system and split)."""
    names, splits, point, boot = _bootstrap(preds, y_true, groups, n_classes, n_boot)
    lo, hi = interval(boot.mean(axis=1))
    split_lo, split_hi = interval(boot)
    table = pd.DataFrame(point, index=names, columns=splits)
    table["mean"] = point.mean(axis=1)
    table["low"], table["high"] = lo, hi
    table["± split"] = ((split_hi - split_lo) / 2).max(axis=1)
    return table


def verdicts(preds: dict, comparisons, y_true, groups, n_classes: int, n_boot: int = 2000) -> pd.DataFrame:
    """Each ``(statement, a, b)`` of ``comparisons`` checked on this run: the margin (points) of system ``a``
    over ``b`` in accuracy averaged over the splits, its 95 % interval from the paired bootstrap over test
    locations, and the verdict: ``holds`` (the interval is above 0), ``reversed`` (below 0) or ``not
    resolved`` (it contains 0: this test set cannot tell)."""
    names, _, point, boot = _bootstrap(preds, y_true, groups, n_classes, n_boot)
    mean, boot_mean = point.mean(axis=1), boot.mean(axis=1)
    rows = []
    for statement, a, b in comparisons:
        i, j = names.index(a), names.index(b)
        lo, hi = interval(boot_mean[i] - boot_mean[j])
        rows.append({"statement": statement, "margin": mean[i] - mean[j], "low": lo, "high": hi,
                     "verdict": "holds" if lo > 0 else "reversed" if hi < 0 else "not resolved"})
    return pd.DataFrame(rows).set_index("statement")


def say(verdict: pd.DataFrame, markdown: bool = False) -> str:
    """The verdicts as sentences, one per line (numbers rounded here, once); ``markdown``: a Markdown list
    with each verdict in bold, for ``IPython.display.Markdown``."""
    b = "**" if markdown else ""
    return "\n".join(f"- {s}: {r.margin:+.1f} points (95 % CI {r.low:+.1f} to {r.high:+.1f}): {b}{r.verdict}{b}"
                     for s, r in verdict.iterrows())


def fmt(table: pd.DataFrame, digits: int = 1) -> pd.DataFrame:
    """``table`` for display: numbers rounded to ``digits`` (once, here), empty cells instead of NaN."""
    return table.apply(lambda col: col.map(lambda v: "" if pd.isna(v) else f"{v:,.{digits}f}"
                                           if isinstance(v, (float, np.floating)) else v))


ENSEMBLE = "ensemble SSL* + SSL + SSL+SL"  # the paper's teacher: all three
SUBMISSION = "student: KD from SSL* + SSL + SSL+SL"  # the student the paper submits (then INT8)


def last_third_drop(val: list[float]) -> float:
    """How much the lowest of the losses ``val`` (one per epoch) fell in the last third of the epochs."""
    third = max(1, len(val) // 3)
    return min(val[:-third]) - min(val[-third:])


def convergence(runs: dict, recipe_of) -> pd.DataFrame:
    """Has each run's validation loss flattened? One row per run (``runs``: ``(name, split) ->
    manifest`` with a per-epoch ``history``; ``recipe_of(name, split)``: the recipe it trained with): its
    optimiser steps, the epoch that validation loss selected, the lowest validation loss, and how much
    that lowest loss fell in the last third of the epochs (``last-third drop``: about 0 once flat)."""
    out = []
    for (name, split), m in runs.items():
        r, val = recipe_of(name, split), [h["val_loss"] for h in m["history"]]
        out.append({"run": name, "split": split, "steps": r.epochs * r.steps_per_epoch,
                    "selected epoch": f"{m['best_epoch']}/{len(val)}", "lowest val loss": min(val),
                    "last-third drop": last_third_drop(val)})
    return pd.DataFrame(out).set_index(["run", "split"])


FITTED = 95.0  # a teacher this accurate (%) on every clip it teaches has fitted them (the real recipe: 30 epochs)
FLAT = 0.02  # a run whose lowest validation loss fell by more than this in its last third was still learning


def still_learning(drops: pd.Series) -> str:
    """The line under a convergence table: how many runs (``drops``: ``(name, split) -> last-third drop``)
    lowered their lowest validation loss by more than :data:`FLAT` in the last third of their epochs, and which."""
    still = drops[drops > FLAT]
    which = ", ".join(f"{name} {split} %" for name, split in still.index)
    return (f"{len(still)} of {len(drops)} runs lowered their validation loss by more than {FLAT} in the last third "
            f"of their epochs" + (f": {which}" if which else ""))


def describe_curves(runs: dict) -> str:
    """What the training curves of ``runs`` (``(name, split) -> manifest``) show, as a Markdown list: which
    runs were still learning when their schedule ended (lowest validation loss still falling by more than
    :data:`FLAT` in the last third), which overfitted (validation loss up by more than :data:`FLAT` from its
    lowest point at the end, while the training loss fell), and which had flattened."""
    still, over, flat = [], [], []
    for (name, split), m in runs.items():
        val, tr = [h["val_loss"] for h in m["history"]], [h["loss"] for h in m["history"]]
        label = f"{name} {split} %"
        if last_third_drop(val) > FLAT:
            still.append(label)
        elif val[-1] - min(val) > FLAT and tr[-1] < tr[val.index(min(val))]:
            over.append(f"{label} (+{val[-1] - min(val):.2f})")
        else:
            flat.append(label)
    n = len(runs)
    return "\n".join([
        f"- **Still learning** when the schedule ended, {len(still)} of {n} runs: {', '.join(still) or 'none'}.",
        f"- **Overfitting** (validation loss up from its lowest by the end while the training loss fell), "
        f"{len(over)} of {n}: {', '.join(over) or 'none'}. Selection keeps each run's lowest point (the circle).",
        f"- **Flat**, {len(flat)} of {n}: {', '.join(flat) or 'none'}.",
    ])


def less_with_more_data(acc: dict, conv: pd.DataFrame, passes: dict) -> list[str]:
    """Sentences for each run that is less accurate on a larger split than on the next smaller one.

    ``acc``: ``(name, split) -> test accuracy (%)``; ``conv``: :func:`convergence`'s table; ``passes``:
    ``(name, split) -> passes over the training clips`` (steps x batch / clips). Each sentence gives both
    runs' steps and passes and whether the larger run's validation loss was still falling (:data:`FLAT`)."""
    out = []
    names = list(dict.fromkeys(name for name, _ in acc))
    for name in names:
        splits = sorted(s for n, s in acc if n == name)
        for small, large in zip(splits, splits[1:]):
            if acc[name, large] >= acc[name, small]:
                continue
            steps = [int(conv.loc[(name, s), "steps"]) for s in (small, large)]
            drop = conv.loc[(name, large), "last-third drop"]
            state = (f"its validation loss was still falling when the schedule ended (last-third drop {drop:.3f})"
                     if drop > FLAT else "its validation loss had flattened")
            out.append(f"**{name}** is {acc[name, small]:.1f} % on the {small} % split but {acc[name, large]:.1f} % "
                       f"on the {large} % split. The two runs took {steps[0]} and {steps[1]} optimiser steps, "
                       f"{passes[name, small]:.1f} and {passes[name, large]:.1f} passes over their clips"
                       + (": the larger split's run saw each clip fewer times, and "
                          if passes[name, large] < passes[name, small] else "; ") + f"{state}.")
    return out


SEED_COLUMNS = ["system", "split", "seed", "accuracy"]


def check_seeds(seeds: pd.DataFrame, source="the seed study (seeds.csv)") -> pd.DataFrame:
    """``seeds`` (long: system, split, seed, accuracy, one row per line of ``source``), if it is whole: no
    empty cell, one row per (system, split, seed), and every seed with every (system, split) that another
    seed has. Otherwise a ``ValueError`` naming ``source``, the seed and the row: a seed short of a row
    would move the means and the claims' margins silently, and drop claims from 3/3 to 2/3."""
    missing = [c for c in SEED_COLUMNS if c not in seeds.columns]
    if missing:
        raise ValueError(f"{source}: no column(s) {missing}; expected the columns {', '.join(SEED_COLUMNS)}")
    # line numbers: row i of the table is line i + 2 of its file (the header is line 1)
    empty = np.flatnonzero(seeds[SEED_COLUMNS].isna().any(axis=1).to_numpy())
    if len(empty):
        row = seeds.iloc[empty[0]]
        raise ValueError(f"{source}: line {empty[0] + 2} (seed {row.seed}, {row.system!r} at split {row.split}) "
                         f"has no {', '.join(c for c in SEED_COLUMNS if pd.isna(row[c]))}")
    key = ["system", "split", "seed"]
    twice = seeds.duplicated(key, keep=False).to_numpy()
    if twice.any():
        row = seeds.iloc[np.flatnonzero(twice)[0]]
        lines = [i + 2 for i in np.flatnonzero((seeds[key] == row[key]).all(axis=1).to_numpy())]
        raise ValueError(f"{source}: seed {row.seed} has {len(lines)} rows for {row.system!r} at split {row.split} "
                         f"(lines {', '.join(map(str, lines))}); a study has one per system, split and seed")
    rows = list(dict.fromkeys(zip(seeds.system, seeds.split)))  # in the order of the file
    have = {seed: set(zip(part.system, part.split)) for seed, part in seeds.groupby("seed", sort=True)}
    for seed, mine in have.items():
        lacks = [r for r in rows if r not in mine]
        if lacks:
            system, split = lacks[0]
            others = [str(s) for s, theirs in have.items() if (system, split) in theirs]
            who = f"seeds {', '.join(others)} have" if len(others) > 1 else f"seed {others[0]} has"
            more = f" (and {len(lacks) - 1} more)" if len(lacks) > 1 else ""
            raise ValueError(f"{source}: seed {seed} has no row for {system!r} at split {split}{more}, which {who}: "
                             "a study needs every system and split on every seed (python bench/seeds.py)")
    return seeds


def read_seeds(path) -> pd.DataFrame:
    """The seed study ``path`` (``seeds.csv``), checked whole by :func:`check_seeds`."""
    return check_seeds(pd.read_csv(path), path)


def _mean_over_splits(seeds: pd.DataFrame) -> pd.DataFrame:
    """``seeds`` (long: system, split, seed, accuracy) -> accuracy averaged over splits, (seed x system)."""
    return seeds.groupby(["seed", "system"]).accuracy.mean().unstack("system")


def claim_margins(seeds: pd.DataFrame) -> pd.DataFrame:
    """The margin (points) of every claim the Results chapter checks, on each seed (rows) of ``seeds``
    (long format: system, split, seed, accuracy; checked whole, :func:`check_seeds`). A claim holds on a seed
    when its margin is > 0."""
    m = _mean_over_splits(check_seeds(seeds))
    at = lambda system, split: seeds[(seeds.system == system) & (seeds.split == split)].set_index("seed").accuracy
    small, large = seeds.split.min(), seeds.split.max()
    t = lambda n: m[f"teacher: {n}"]
    gain = lambda split: at("teacher: SSL+SL", split) - at("teacher: scratch", split)
    return pd.DataFrame({
        "SSL+SL teachers beat the same encoder trained from scratch": t("SSL+SL") - t("scratch"),
        "self-supervised pre-training alone helps: SSL beats scratch": t("SSL") - t("scratch"),
        "full fine-tuning beats a frozen encoder: SSL beats SSL*": t("SSL") - t("SSL*"),
        "the tagged checkpoint is the better start: SSL+SL beats SSL": t("SSL+SL") - t("SSL"),
        f"pre-training helps most with least data: the SSL+SL gain over scratch at {small} % exceeds it at {large} %":
            gain(small) - gain(large),
        "the three-teacher ensemble beats its best member": t(ENSEMBLE) - m[[f"teacher: {n}" for n in ("SSL*", "SSL", "SSL+SL")]].max(axis=1),
        "distillation from the ensemble beats the student from scratch": m[SUBMISSION] - m["student: from scratch"],
        "distillation from SSL+SL beats the student from scratch": m["student: KD from SSL+SL"] - m["student: from scratch"],
        "INT8 loses at most 1 point (margin: 1 + INT8 - float32)": 1 + m[f"{SUBMISSION}, INT8"] - m[SUBMISSION],
    })


def claims_table(seeds: pd.DataFrame) -> pd.DataFrame:
    """Per claim: on how many seeds it holds (``"3/3"``), the margin's mean and sample standard deviation
    over the seeds, and ``holds`` (True only when it holds on every seed)."""
    margins = claim_margins(seeds)
    held = (margins > 0).sum()
    return pd.DataFrame({"seeds_holding": [f"{held[c]}/{len(margins)}" for c in margins],
                         "margin_mean": margins.mean().to_numpy(), "margin_sd": margins.std(ddof=1).to_numpy(),
                         "holds": (held == len(margins)).to_numpy()},
                        index=pd.Index(margins.columns, name="claim"))


def systems(teachers: pd.DataFrame, student: pd.DataFrame) -> pd.DataFrame:
    """The chapters' tables (``teachers.csv``, ``student.csv``: one row per system, one column per split)
    in the seed study's long format and names: ``system, split, seed (0), accuracy``."""
    splits = [c for c in teachers.columns if str(c).isdigit()]
    wide = pd.concat([teachers[splits].rename(index=lambda n: f"teacher: {n}"),
                      student[splits].rename(index=lambda n: n.replace("student ", "student: "))])
    out = wide.rename_axis("system").reset_index().melt("system", var_name="split", value_name="accuracy")
    return out.assign(split=out.split.astype(int), seed=0)[["system", "split", "seed", "accuracy"]]


def compare(published: pd.DataFrame, new: pd.DataFrame, seeds: pd.DataFrame, k: float = 3.0,
            floor: float = 0.5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A re-execution (``new``) against the published numbers (``published``), both as :func:`systems`
    gives them, with tolerances from the seed study ``seeds``: a number has *moved* when it differs by
    more than ``k`` times its standard deviation over the training seeds at that split (at least
    ``floor`` points). Returns (one row per system and split: published, new, difference, tolerance,
    moved) and (one row per claim: its margin in each and whether its verdict changed)."""
    key = ["system", "split"]
    sd = seeds.groupby(key).accuracy.std(ddof=1).rename("sd")
    both = published.merge(new, on=key, how="outer", suffixes=(" published", " new"))
    both = both.merge(sd.reset_index(), on=key, how="left").set_index(key).sort_index()
    both["difference"] = both["accuracy new"] - both["accuracy published"]
    both["tolerance"] = np.maximum(k * both.sd.fillna(0), floor)
    both["moved"] = ~(both.difference.abs() <= both.tolerance)  # a missing number has moved too
    claims = pd.DataFrame({"margin published": claim_margins(published).iloc[0],
                           "margin new": claim_margins(new).iloc[0]})
    claims["verdict changed"] = (claims["margin published"] > 0) != (claims["margin new"] > 0)
    return both.drop(columns=["seed published", "seed new", "sd"]), claims


# bench/convergence.py's roles, as the chapters' tables name them, and the two claims they decide
LONGER_ROLES = {"teacher:SSL+SL": "teacher: SSL+SL", "teacher:scratch": "teacher: scratch",
                "student:scratch": "student: from scratch", "student:SSL+SL": "student: KD from SSL+SL"}
LONGER_CLAIMS = {"pre-training: the SSL+SL teacher beats the teacher from scratch":
                     ("teacher: SSL+SL", "teacher: scratch"),
                 "distillation: KD from SSL+SL beats the student from scratch":
                     ("student: KD from SSL+SL", "student: from scratch")}


def longer_training(conv: pd.DataFrame, chapters: pd.DataFrame, path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The side runs of ``bench/convergence.py`` (``conv``, read from ``path``: the same runs with ``scale``
    times the book's steps) next to the chapters' own runs (``chapters``, as :func:`systems` gives them).

    Returns one row per system and split (accuracy, its 95 % interval and the last-third drop of validation
    loss at each scale) and one row per claim of :data:`LONGER_CLAIMS`, split and scale: the margin, the
    mean half-width of the two accuracies' intervals, and the verdict (``not resolved`` when the margin is
    smaller than that half-width). The scale-1 rows must be the chapters' numbers: otherwise the file is
    stale."""
    c = conv.assign(system=conv.role.map(LONGER_ROLES))
    roles = sorted(LONGER_ROLES.values())
    complete = c.groupby(["split", "scale"]).system.apply(lambda s: sorted(s.dropna()) == roles)
    if not len(c) or not complete.all():
        raise ValueError(f"{path}: expected exactly the roles {', '.join(LONGER_ROLES)} at every split and scale; "
                         f"run python bench/convergence.py --scales 1 4 --csv {path}")
    base = c[c.scale == 1].set_index(["system", "split"])["test acc"]
    mine = chapters.set_index(["system", "split"]).accuracy.reindex(base.index)
    off = (base - mine).abs().fillna(float("inf")).max() if len(base) else float("inf")
    if off > 0.01:
        raise ValueError(f"{path} is stale: its scale-1 runs are not the chapters' (they differ by up to "
                         f"{off:.2f} points, or are missing); run python bench/convergence.py --scales 1 4 "
                         f"--csv {path}")
    c = c.assign(ci=[f"{lo:.1f}-{hi:.1f}" for lo, hi in zip(c["ci low"], c["ci high"])],
                 half=(c["ci high"] - c["ci low"]) / 2)
    wide = c.pivot(index=["system", "split"], columns="scale", values=["test acc", "ci", "tail drop"])
    wide.columns = [f"{k}x {'accuracy' if v == 'test acc' else v}" for v, k in wide.columns]
    wide = wide[sorted(wide.columns, key=lambda n: int(n.split("x")[0]))].infer_objects()
    at = c.set_index(["system", "split", "scale"])
    rows = []
    for claim, (a, b) in LONGER_CLAIMS.items():
        for split, scale in sorted({(s, k) for s, k in zip(c.split, c.scale)}):
            margin = at.loc[(a, split, scale), "test acc"] - at.loc[(b, split, scale), "test acc"]
            half = (at.loc[(a, split, scale), "half"] + at.loc[(b, split, scale), "half"]) / 2
            rows.append({"claim": claim, "split": split, "scale": scale, "margin": margin, "half-width": half,
                         "verdict": "not resolved" if abs(margin) < half else "holds" if margin > 0 else "fails"})
    return wide, pd.DataFrame(rows).set_index(["claim", "split", "scale"])


def miniature(student_alone: dict, split_seconds: dict, pool_seconds: float, pool_devices: str,
              pool_scene_like: float, teacher_params: int, student_params: int, teacher_fit: dict | None = None,
              teacher_passes: dict | None = None) -> pd.DataFrame:
    """The proportions that decide the paper's mechanism, the miniature's beside the real setting's:
    ``quantity, ci, real`` (strings: each row says its own unit). ``student_alone``: {split: TF-SepNet from
    scratch, test macro %}; ``split_seconds``: {split: seconds of labelled audio}; ``teacher_fit``:
    {(teacher, split): accuracy % on the clips it teaches}; ``teacher_passes``: {split: passes over its
    training clips} (the data chapter, which trains no teacher, leaves both out)."""
    from . import paper

    real_split = {s: n for s, n in paper.TRAIN_CLIPS.items()}  # 1 s clips
    rows = [(f"student alone, {s} % (macro %)", f"{a:.1f}", f"{paper.BASELINE_ACC[s]:.1f} (DCASE2024 baseline)")
            for s, a in student_alone.items()]
    first, last = min(student_alone), max(student_alone)
    rows.append((f"student alone, gain from {first} to {last} % (points)",
                 f"{student_alone[last] - student_alone[first]:+.1f}",
                 f"{paper.BASELINE_ACC[last] - paper.BASELINE_ACC[first]:+.1f}"))
    for s in (max(split_seconds), min(split_seconds)):
        rows.append((f"pre-training audio / the {s} % split (seconds)",
                     f"{pool_seconds / split_seconds[s]:.1f}x ({pool_seconds:,.0f} s / {split_seconds[s]:,.0f} s)",
                     f"~{paper.AS2M_SECONDS / real_split[s]:,.0f}x (AS-2M ~{round(paper.AS2M_SECONDS / 3600, -2):,.0f} h / "
                     f"{real_split[s]:,} s)"))
    rows += [("recording devices in the pre-training audio", pool_devices, "countless"),
             ("scene-like mixtures in the pre-training audio", f"{100 * pool_scene_like:.0f} % of its clips",
              "yes (traffic, crowds, vehicles, speech)"),
             ("teacher / student parameters", f"{teacher_params / student_params:.0f}x "
              f"({teacher_params:,} / {student_params:,})",
              f"~{paper.BEATS_PARAMS / 127_000:.0f}x (~90 M / ~127 k)")]
    for s, p in (teacher_passes or {}).items():
        rows.append((f"teacher fine-tuning, {s} % split (passes over its clips)", f"{p:.1f}",
                     f"{paper.TEACHER_EPOCHS} epochs"))
    for (t, s), a in (teacher_fit or {}).items():
        rows.append((f"teacher {t}, {s} %: accuracy on the clips it teaches (%)", f"{a:.1f}",
                     f"unknown (fitted: {paper.TEACHER_EPOCHS} epochs)"))
    return pd.DataFrame(rows, columns=["quantity", "ci", "real"])


def gains(preds: dict, scratch: dict, y_true, groups, n_classes: int, n_boot: int = 2000) -> pd.DataFrame:
    """Each distilled student's gain over the student from scratch on its split, with its 95 % interval
    from the paired bootstrap over test locations. ``preds``: ``{(teacher, split): predictions}``;
    ``scratch``: ``{split: predictions}``. One row per entry: ``gain, low, high, verdict``."""
    rows = []
    for (name, split), pred in preds.items():
        v = verdicts({"kd": {split: pred}, "scratch": {split: scratch[split]}}, [("gain", "kd", "scratch")],
                     y_true, groups, n_classes, n_boot).iloc[0]
        rows.append({"teacher": name, "split": split, "gain": v.margin, "low": v.low, "high": v.high,
                     "verdict": v.verdict})
    return pd.DataFrame(rows).set_index(["teacher", "split"])

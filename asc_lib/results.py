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


def claim_verdicts(predictions: dict, y_true, groups, n_classes: int, n_boot: int = 1000) -> pd.DataFrame:
    """Every claim of :func:`claim_margins` on each training seed, by the book's one rule: the margin's 95 %
    interval from the paired bootstrap over test locations (``groups``), every system and split of a seed
    scored on the same resamples; ``holds`` when the interval lies above 0, ``reversed`` below it, ``not
    resolved`` when it contains 0. ``predictions``: ``{(seed, system, split): predicted class per test clip}``.
    Rows ``(claim, seed)``: ``margin, low, high, verdict``."""
    rows = []
    for seed in sorted({k[0] for k in predictions}):
        keys = [k for k in predictions if k[0] == seed]
        point = [100 * macro_accuracy(y_true, predictions[k], n_classes) for k in keys]
        boot = bootstrap_macro(y_true, np.stack([predictions[k] for k in keys]), groups, n_classes, n_boot)
        # the resamples stand in for seeds: claim_margins gives one row of margins per resample
        long = pd.DataFrame({"system": np.repeat([k[1] for k in keys], n_boot),
                             "split": np.repeat([k[2] for k in keys], n_boot),
                             "seed": np.tile(np.arange(n_boot), len(keys)), "accuracy": boot.ravel()})
        margins = claim_margins(pd.DataFrame({"system": [k[1] for k in keys], "split": [k[2] for k in keys],
                                              "seed": seed, "accuracy": point})).iloc[0]
        low, high = interval(claim_margins(long).to_numpy().T)
        for claim, m, lo, hi in zip(margins.index, margins, low, high):
            rows.append({"claim": claim, "seed": seed, "margin": m, "low": lo, "high": hi,
                         "verdict": "holds" if lo > 0 else "reversed" if hi < 0 else "not resolved"})
    return pd.DataFrame(rows).set_index(["claim", "seed"])


def claims_table(seeds: pd.DataFrame, verdicts: pd.DataFrame | None) -> pd.DataFrame:
    """Per claim, over the seeds of ``seeds`` (long: system, split, seed, accuracy): on how many seeds it
    holds, is reversed and is not resolved by :func:`claim_verdicts` (``"3/3"``), the margin's mean and sample
    standard deviation over the seeds, and ``holds``: True only when it holds on every seed. Without
    ``verdicts`` (no predictions to test with) the counts say "not tested" and no claim holds."""
    margins = claim_margins(seeds)
    n = len(margins)
    if verdicts is None:  # no predictions (a profile without a seed study): margins only, no claim holds
        return pd.DataFrame({"seeds_holding": "not tested", "seeds_reversed": "not tested",
                             "seeds_not_resolved": "not tested", "margin_mean": margins.mean().to_numpy(),
                             "margin_sd": margins.std(ddof=1).to_numpy(), "holds": False},
                            index=pd.Index(margins.columns, name="claim"))
    count = lambda c, v: int((verdicts.loc[c].verdict == v).sum())
    if sorted(verdicts.index.get_level_values("seed").unique()) != sorted(margins.index):
        raise ValueError(f"the verdicts are of seeds {sorted(verdicts.index.get_level_values('seed').unique())}, "
                         f"the accuracies of seeds {sorted(margins.index)}")
    return pd.DataFrame({"seeds_holding": [f"{count(c, 'holds')}/{n}" for c in margins],
                         "seeds_reversed": [f"{count(c, 'reversed')}/{n}" for c in margins],
                         "seeds_not_resolved": [f"{count(c, 'not resolved')}/{n}" for c in margins],
                         "margin_mean": margins.mean().to_numpy(), "margin_sd": margins.std(ddof=1).to_numpy(),
                         "holds": [count(c, "holds") == n for c in margins]},
                        index=pd.Index(margins.columns, name="claim"))


def save_predictions(path, predictions: dict, y_true, groups) -> Path:
    """The seed study's predictions (``{(seed, system, split): classes}``), the test labels and locations, in
    one compressed file (written whole or not at all): what :func:`claim_verdicts` needs again."""
    path = Path(path)
    arrays = {f"{seed}|{system}|{split}": np.asarray(p, dtype=np.int8) for (seed, system, split), p in predictions.items()}
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez_compressed(tmp, y_true=np.asarray(y_true, dtype=np.int8), groups=np.asarray(groups).astype(str), **arrays)
    os.replace(tmp, path)
    return path


def read_predictions(path) -> tuple[dict, np.ndarray, np.ndarray]:
    """:func:`save_predictions`' file: ``(predictions, y_true, groups)``."""
    with np.load(path) as f:
        preds = {}
        for name in f.files:
            if "|" in name:
                seed, system, split = name.split("|")
                preds[int(seed), system, int(split)] = f[name].astype(np.int64)
        return preds, f["y_true"].astype(np.int64), f["groups"]


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
              teacher_passes: dict | None = None, student_passes: dict | None = None) -> pd.DataFrame:
    """The proportions that decide the paper's mechanism, the miniature's beside the real setting's:
    ``quantity, ci, real`` (strings: each row says its own unit). ``student_alone``: {split: TF-SepNet from
    scratch, test macro %}; ``split_seconds``: {split: seconds of labelled audio}; ``teacher_fit``:
    {(teacher, split): accuracy % on the clips it teaches}; ``teacher_passes``: {split: passes over its
    training clips} (the data chapter, which trains no teacher, leaves both out); ``student_passes``: the
    same for the students (the real recipe: 150 epochs)."""
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
    for s, p in (student_passes or {}).items():
        rows.append((f"student training, {s} % split (passes over its clips)", f"{p:.1f}",
                     f"{paper.STUDENT_EPOCHS} epochs"))
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


ABLATION_KEY = ["arm", "variant", "teacher", "split"]
ABLATION_NUMBERS = ["gain", "low", "high", "student", "scratch", "teacher on its clips"]


def read_ablation(folder) -> pd.DataFrame | None:
    """``bench/kd_ablation.py``'s table in ``folder`` (``kd_ablation.csv``), checked whole: its columns, one
    row per (arm, variant, teacher, split), no empty number, the same seeds on every row (in
    ``attrs["seeds"]``); None when the folder has none (a chapter run into a folder of its own)."""
    path = Path(folder) / "kd_ablation.csv"
    if not path.is_file():
        return None
    table = pd.read_csv(path)
    redo = f"write it again with python bench/kd_ablation.py --csv {path}"
    missing = [c for c in [*ABLATION_KEY, *ABLATION_NUMBERS, "verdict", "seeds holding", "seeds reversed",
                              "gain by seed"]
               if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: no column(s) {missing}; {redo}")
    twice = table.duplicated(ABLATION_KEY, keep=False)
    if twice.any():
        raise ValueError(f"{path}: rows {[i + 2 for i in np.flatnonzero(twice)]} repeat an (arm, variant, teacher, "
                         f"split); {redo}")
    empty = table[ABLATION_NUMBERS].isna().any(axis=1)
    if empty.any():
        raise ValueError(f"{path}: an empty number on line(s) {[i + 2 for i in np.flatnonzero(empty)]}; {redo}")
    seeds = {tuple(sorted(seed_gains(g))) for g in table["gain by seed"]}
    if len(seeds) != 1:
        raise ValueError(f"{path}: its rows are of different seeds {sorted(seeds)}; {redo}")
    table.attrs["seeds"] = ", ".join(map(str, next(iter(seeds))))
    table.attrs["path"] = str(path)
    return table


def seed_gains(text: str) -> dict:
    """``"0:+1.20 1:-0.35"`` (the ablation's ``gain by seed``) -> ``{0: 1.2, 1: -0.35}``."""
    return {int(s): float(g) for s, g in (part.split(":") for part in str(text).split())}


def check_ablation_seed(ablation: pd.DataFrame | None, run: pd.DataFrame, seed: int, split: int) -> str:
    """Check a chapter's own students against the ablation table's rows of the same seed: ``run`` is
    :func:`gains`' table with rows ``("<variant>, <teacher>", split)`` (variant "oracle-repaired targets" or
    "paper's recipe"). A table whose row disagrees is stale: an error says how to make it again."""
    if ablation is None:
        return ("no kd_ablation.csv in this run's results folder: the table is python bench/kd_ablation.py's "
                "(the published one is in book/results)")
    checked = 0
    for (label, s), r in run.iterrows():
        variant, teacher = label.split(", ", 1)
        row = ablation[(ablation.variant == variant) & (ablation.teacher == teacher) & (ablation.split == s)]
        gains_ = seed_gains(row["gain by seed"].iloc[0]) if len(row) else {}
        if seed not in gains_:
            return f"the ablation table has no seed-{seed} row for {variant} from {teacher} at {s} %: nothing to check"
        if abs(gains_[seed] - r.gain) > 0.01:
            raise ValueError(f"{ablation.attrs['path']} is stale: its seed-{seed} gain for {variant} from {teacher} "
                             f"at {s} % is {gains_[seed]:+.2f} points, this run's {r.gain:+.2f}; run python "
                             "bench/kd_ablation.py --csv book/results/kd_ablation.csv")
        checked += 1
    return f"the ablation table's seed-{seed} rows give this run's gains ({checked} rows checked, {split} % split)"


ABLATION_SHORT = {"paper's recipe": "recipe", "oracle-repaired targets": "oracle", "last epoch": "last epoch",
                  "consistent views (K=4)": "views K=4", "without SSL*": "recipe"}


def ablation_labels(ablation: pd.DataFrame) -> pd.DataFrame:
    """The ablation with a short ``label`` per row for a narrow figure: the change and the teacher
    (ens3: all three teachers, ens2: SSL + SSL+SL)."""
    from .teachers import TEACHERS, ensemble_name

    who = {"SSL+SL": "SSL+SL", ensemble_name(TEACHERS): "ens3", ensemble_name(("SSL", "SSL+SL")): "ens2"}

    def short(v: str) -> str:
        if v in ABLATION_SHORT:
            return ABLATION_SHORT[v]
        return (v.replace("kd_lambda ", "λ ").replace("steps x0.25", "steps ×¼").replace("steps x", "steps ×")
                .replace("SSL+SL after epoch ", "fit: epoch "))

    return ablation.assign(label=[f"{short(r.variant)}, {who.get(r.teacher, r.teacher)}"
                                  for r in ablation.itertuples()])


def on_every_seed(count: str) -> bool:
    """``"3/3"`` (the ablation's ``seeds holding`` or ``seeds reversed``) -> True: the book's one rule."""
    done, of = str(count).split("/")
    return done == of


def say_ablation(ablation: pd.DataFrame | None) -> str:
    """What the ablation's table says, computed from it, with the book's one rule (a change holds only if
    it holds on every seed): per split, the paper's recipe; the changes that hold, and that reverse, on
    every seed; those whose seed-mean interval alone lies above or below zero; and the change that moves
    the gain most."""
    if ablation is None:
        return "No ablation table in this run's results folder."
    n = len(ablation.attrs["seeds"].split(", "))

    def said(r, count="holds") -> str:
        return (f"{r.variant} from {r.teacher} ({r.gain:+.1f}: {r.student:.1f} % against {r.scratch:.1f} %; "
                f"{count} on {r['seeds ' + ('holding' if count == 'holds' else count)]} seeds)")

    lines = []
    for split, part in ablation.groupby("split"):
        base = [f"{r.teacher} {r.gain:+.1f} (holds on {r['seeds holding']} seeds, reversed on "
                f"{r['seeds reversed']}; seed mean: {r.verdict})" for _, r in part[part.arm == "recipe"].iterrows()]
        arms = part[part.arm != "recipe"]
        held = arms["seeds holding"].map(on_every_seed)
        lost = arms["seeds reversed"].map(on_every_seed)
        above = (arms.verdict == "holds") & ~held
        below = (arms.verdict == "reversed") & ~lost
        name = lambda mask, count="holds": ", ".join(said(r, count) for _, r in arms[mask].iterrows()) or "none"
        lines.append(f"- **{split} %.** The paper's recipe: {'; '.join(base)}. Changes whose gain (the distilled "
                     f"student against the student from scratch trained as long) holds on every seed: "
                     f"{name(held)}. Reversed on every seed: {name(lost, 'reversed')}. Above zero on the seed mean "
                     f"only: {name(above)}. Below zero on the seed mean only: {name(below, 'reversed')}.")
    spread = [np.std(list(seed_gains(g).values()), ddof=1) for g in ablation["gain by seed"]] if n > 1 else []
    if spread:
        lines.append(f"- **Noise.** The same row's gain differs between seeds by a standard deviation of "
                     f"{np.median(spread):.1f} points (median over the rows; {min(spread):.1f} to "
                     f"{max(spread):.1f}), so a row's gain, a mean over {n} seeds, carries a standard error of about "
                     f"{np.median(spread) / np.sqrt(n):.1f} points from the training seed alone, which its interval "
                     "(over test locations) does not include.")
    headline = ablation_headline(ablation)
    if headline:
        lines.append(f"- **Against the recipe**, {headline}.")
    return "\n".join(lines)


def ablation_headline(ablation: pd.DataFrame) -> str:
    """One plain sentence from the ablation: against the paper's recipe, averaged over its teachers and
    splits, the change that raises the student's gain most and the one that lowers it most."""
    recipe = ablation[ablation.arm == "recipe"].set_index(["teacher", "split"]).gain
    moved = ablation[ablation.arm != "recipe"].copy()
    moved = moved[[(t, s) in recipe.index for t, s in zip(moved.teacher, moved.split)]]
    if moved.empty:
        return ""
    moved["change"] = [g - recipe[t, s] for g, t, s in zip(moved.gain, moved.teacher, moved.split)]
    by_arm = moved.groupby("variant").change.mean().sort_values()
    return (f"averaged over its teachers and splits, the change that raises the student's gain most is "
            f"{by_arm.index[-1]} ({by_arm.iloc[-1]:+.1f} points) and the one that lowers it most "
            f"{by_arm.index[0]} ({by_arm.iloc[0]:+.1f}); seeds {ablation.attrs['seeds']}")


def explain_failures(claims: pd.DataFrame, seeds: pd.DataFrame, ablation: pd.DataFrame | None) -> str:
    """One short Markdown paragraph per claim that does not hold on every seed: its evidence from the seed
    study (means over the seeds) and, for distillation and the ensemble, from the ablation's table
    (``bench/kd_ablation.py``), then its verdict. Computed, so it says what the numbers say."""
    m = seeds.groupby(["system", "split"]).accuracy.mean().unstack("split")
    T = lambda n: m.loc[f"teacher: {n}"]
    members = ["SSL*", "SSL", "SSL+SL"]
    means = {n: T(n).mean() for n in members}
    best, weakest = max(means, key=means.get), min(means, key=means.get)
    scratch = m.loc["student: from scratch"]

    def verdict(c):
        r = claims.loc[c]
        return (f"**Verdict:** holds on {r.seeds_holding} seeds, reversed on {r.seeds_reversed}, not resolved on "
                f"{r.seeds_not_resolved}; margin {r.margin_mean:+.1f} ± {r.margin_sd:.1f} points over the seeds.")

    def arms(teacher):  # the ablation's rows for this teacher: the recipe's gain, and the arm that moves it most
        if ablation is None:
            return " The ablation's table is not in this folder."
        part = ablation[ablation.teacher == teacher]
        if part.empty:
            return ""
        out = []
        for split, rows in part.groupby("split"):
            base = rows[rows.arm == "recipe"]
            if base.empty:
                continue
            g0 = base.gain.iloc[0]
            top = rows[rows.arm != "recipe"].sort_values("gain").iloc[-1]
            out.append(f"at {split} % the paper's recipe gains {g0:+.1f} points (holds on "
                       f"{base['seeds holding'].iloc[0]} seeds) and the change that gains most, *{top.variant}*, "
                       f"{top.gain:+.1f} ({top.student:.1f} % against a student from scratch of {top.scratch:.1f} %; "
                       f"holds on {top['seeds holding']} seeds)")
        return (" In the ablation (seeds " + ablation.attrs.get("seeds", "?") + "), " + "; ".join(out) + ".") if out else ""

    paragraphs = []
    for c in claims.index[~claims.holds.astype(bool)]:
        if c.startswith("the three-teacher ensemble"):
            without = T(f"ensemble {' + '.join(n for n in members if n != weakest)}").mean() - means[best]
            whole = T(f"ensemble {' + '.join(members)}").mean() - means[best]
            why = (f"its weakest member, {weakest}, averages {means[weakest]:.1f} % against {best}'s "
                   f"{means[best]:.1f} %. The ensemble of all three is {whole:+.1f} points from {best}; without "
                   f"{weakest} it is {without:+.1f}, "
                   + ("so the weak member is not the whole reason: the claim fails either way."
                      if without <= 0 else
                      f"so {weakest} accounts for the loss: without it the ensemble is level with {best} on the seed "
                      "mean (a difference this study does not test), not above it."
                      if without < 1 else
                      f"so leaving {weakest} out puts the ensemble above {best} on the seed mean (a difference this "
                      "study does not test)."))
            paragraphs.append(f"**{c}.** Evidence: {why} {verdict(c)}")
        elif c.startswith("distillation from"):
            teacher = "SSL+SL" if "SSL+SL" in c else ENSEMBLE.removeprefix("ensemble ")
            student = "student: KD from SSL+SL" if teacher == "SSL+SL" else SUBMISSION
            acc, kd = T(teacher if teacher == "SSL+SL" else f"ensemble {teacher}"), m.loc[student]
            split_lines = ", ".join(f"{s} %: teacher {acc[s]:.1f}, scratch {scratch[s]:.1f}, distilled {kd[s]:.1f}"
                                    for s in m.columns)
            paragraphs.append(f"**{c}.** Evidence (means over the seeds, %): {split_lines}."
                              f"{arms(teacher)} {verdict(c)}")
        else:
            paragraphs.append(f"**{c}.** {verdict(c)}")
    return "\n\n".join(paragraphs) if paragraphs else "Every claim holds on every seed."


def curve_contract(seeds: pd.DataFrame, tolerance: float | None = None) -> pd.DataFrame:
    """The twin's learning-curve contract checked on the seed study: per split, the student alone's mean
    over the seeds, each seed's accuracy, the DCASE2024 baseline's on TAU22, and whether the mean is within
    ``tolerance`` points of it (default: the data chapter's :data:`asc_lib.data.difficulty.TOLERANCE`)."""
    from . import paper
    from .data.difficulty import TOLERANCE

    tolerance = TOLERANCE if tolerance is None else tolerance
    alone = seeds[seeds.system == "student: from scratch"].pivot(index="split", columns="seed", values="accuracy")
    out = pd.DataFrame({"seed mean": alone.mean(axis=1), "seeds": alone.apply(
        lambda r: " / ".join(f"{v:.1f}" for v in r), axis=1),
        "baseline (TAU22)": [paper.BASELINE_ACC[int(s)] for s in alone.index]}, index=alone.index)
    out["difference"] = out["seed mean"] - out["baseline (TAU22)"]
    out["within"] = out["difference"].abs() <= tolerance
    return out


def say_contract(contract: pd.DataFrame, tolerance: float | None = None) -> str:
    """One sentence from :func:`curve_contract`: met at every split, or where not."""
    from .data.difficulty import TOLERANCE

    tolerance = TOLERANCE if tolerance is None else tolerance
    missed = contract[~contract.within]
    head = (f"On the mean of the seeds, the student alone is within {tolerance:.0f} points of the baseline's "
            f"learning curve at every split" if missed.empty else
            f"On the mean of the seeds, the student alone misses the contract ({tolerance:.0f} points of the "
            "baseline's learning curve) at " + ", ".join(f"{s} % ({r.difference:+.1f})" for s, r in missed.iterrows()))
    return head + " (" + "; ".join(f"{s} %: {r['seed mean']:.1f}, seeds {r.seeds}" for s, r in contract.iterrows()) + ")."

"""The teachers: BEATs fine-tuned three ways on each data fraction, and their ensembles.

=========  ==============================  ==================================================
row        encoder weights                 trained
=========  ==============================  ==================================================
scratch    random (same architecture)      everything (the ``finetune`` recipe)
SSL*       self-supervised (``SSL``)       a new linear head only, the encoder frozen
SSL        self-supervised (``SSL``)       everything
SSL+SL     SSL, then tagged (``SSL+SL``)   everything
=========  ==============================  ==================================================

Every teacher is :class:`TokenClassifier`: one ``Linear(C, 10)`` applied to every patch token of the
encoder's last layer, logits averaged over the tokens (the authors' ``PretrainedBEATs``). A training step
follows the paper's order: DIR on the device-a waveforms, BEATs fbank, Freq-MixStyle, SpecAugment, mixup
(the ``SSL*`` recipe uses only SpecAugment and mixup, as the authors' ``beats_ssl_star.yaml``).

Model selection. The authors keep the epoch with the best accuracy on their validation file, which is
the test split (``test.csv``). Here the default holds out whole recordings of the training split as a
validation set (:func:`hold_out_recordings`) and keeps the epoch of lowest validation loss; with
``keep="last"`` (the ``ci`` profile) a teacher keeps its last epoch, the end of its schedule, as a
teacher that has fitted its clips (see ``asc_lib.profiles``). Either way the validation-selected epoch is
recorded, and the test split is scored after every epoch, so a run reports the kept, the
validation-selected and the test-selected accuracy.

A run (:func:`run_teacher`) writes into its own folder under ``artifacts/<profile>/teachers/``:
``last.pt`` (resume state of :func:`asc_lib.train.train`, deleted once the run is complete),
``model.pt`` (the selected weights), ``train_logits.npy`` (logits on every clip of the split, no
augmentation: the student's targets), ``test_logits.npy`` and, last, ``manifest.json`` (teacher, split,
configuration, code version, clip names in row order, metrics, history and the content hash of each of
those files, which readers check). A folder with a manifest is complete and is reused. One process trains
a run at a time; a second waits for it, then reuses the run (:mod:`asc_lib.runs` keeps these books).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import __version__
from .augment import dir_augment, freq_mixstyle, mixup, mixup_loss, spec_augment
from .data import SCENES
from .data.dataset import data_key, device_ids, labels, rows
from .data.synthetic import impulse_responses
from .data.tau import read_split
from .features import beats_fbank
from .integrity import verify
from .metrics import macro_accuracy
from .models.beats import BEATs, BEATsConfig, load_beats_checkpoint
from .profiles import TeacherSettings
from .runs import checkpoint_ids, claim, run_folder, scores, write_manifest
from .train import Recipe, predict_logits, train, with_passes

TEACHER_VERSION = 4  # bump when a run's results would change
STRATEGIES = ("scratch", "SSL*", "SSL", "SSL+SL")
TEACHERS = ("SSL*", "SSL", "SSL+SL")  # the rows that teach the student
CHECKPOINT_OF = {"scratch": None, "SSL*": "SSL", "SSL": "SSL", "SSL+SL": "SSL+SL"}


class TokenClassifier(nn.Module):
    """A BEATs encoder with a linear head on every token; logits averaged over tokens.

    fbank (B, F, 128) normalised (:func:`asc_lib.features.beats_fbank`) -> logits (B, n_classes).
    ``frozen=True``: the encoder stays in eval mode, without gradients (the ``SSL*`` teacher).
    A fine-tuned (tagging) checkpoint's own predictor is dropped: only its encoder is used.
    """

    def __init__(self, encoder: BEATs, n_classes: int = len(SCENES), frozen: bool = False):
        super().__init__()
        encoder.predictor = None
        self.encoder, self.frozen = encoder, frozen
        self.head = nn.Linear(encoder.cfg.encoder_embed_dim, n_classes)
        if frozen:
            self.encoder.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            tokens = self.encoder.forward_fbank(fbank)[0]  # (B, T, C)
        return self.head(tokens).mean(1)  # (B, n_classes)


def hold_out_recordings(part: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``part`` into (train, validation) by whole 10 s recordings, scene by scene: of a scene's R
    recordings, ``max(1, round(fraction * R))`` drawn at random (seeded) go to validation, so every scene
    is in the validation set and no recording is in both. A scene with a single recording keeps it for
    training (a clear error if that leaves a scene out of validation)."""
    rng = np.random.default_rng([seed, 7])
    val = set()
    for scene, recs in sorted(part.groupby("scene").recording.unique().items()):
        recs = np.array(sorted(recs))
        if len(recs) < 2:
            raise ValueError(f"cannot hold out a validation recording of scene {scene!r}: the split has "
                             f"{len(recs)} recording(s) of it")
        val.update(rng.choice(recs, min(len(recs) - 1, max(1, round(fraction * len(recs)))), replace=False))
    is_val = part.recording.isin(val).to_numpy()
    return part[~is_val], part[is_val]


def monitor_rows(test_part: pd.DataFrame, fraction: float, seed: int) -> np.ndarray:
    """Positions in ``test_part`` of the clips scored after every epoch: all of them when ``fraction``
    is 1, else the clips of a seeded random ``fraction`` of the test recordings."""
    if fraction >= 1:
        return np.arange(len(test_part))
    recs = np.array(sorted(test_part.recording.unique()))
    pick = np.random.default_rng([seed, 11]).choice(recs, max(1, round(fraction * len(recs))), replace=False)
    return np.flatnonzero(test_part.recording.isin(pick).to_numpy())


def recipe_of(strategy: str, settings: TeacherSettings, n_train: int, split: int) -> Recipe:
    """The recipe of ``strategy`` for a run on ``n_train`` training clips of ``split`` (see ``min_passes``
    and ``finetune_epochs``)."""
    if strategy == "SSL*":
        return with_passes(settings.frozen, n_train, settings.min_passes)
    epochs = dict(settings.finetune_epochs).get(split, settings.finetune.epochs)
    return with_passes(replace(settings.finetune, epochs=epochs), n_train, settings.min_passes)


def make_teacher(strategy: str, checkpoints: dict, seed: int, config=None) -> TokenClassifier:
    """The untrained teacher of ``strategy``: encoder from ``checkpoints[CHECKPOINT_OF[strategy]]`` (a path)
    or, for ``scratch``, random weights of ``config`` drawn from ``seed`` alone; the head is drawn from
    ``seed`` too (independent of the global random state)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown teacher strategy {strategy!r}: expected one of {STRATEGIES}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        source = CHECKPOINT_OF[strategy]
        if source is None:
            encoder = BEATs(config if config is not None else load_beats_checkpoint(checkpoints["SSL"]).cfg)
        else:
            encoder = load_beats_checkpoint(checkpoints[source])
        return TokenClassifier(encoder, frozen=strategy == "SSL*")


class Augmenter:
    """One training batch for a teacher: waveforms (B, 16000) -> augmented fbank (B, F, 128)."""

    def __init__(self, settings: TeacherSettings, strategy: str, irs):
        frozen = strategy == "SSL*"
        self.dir_p = 0.0 if frozen else settings.dir_p
        self.mixstyle_p = 0.0 if frozen else settings.mixstyle_p
        self.settings, self.irs = settings, irs

    def __call__(self, wave, is_a, y, generator):
        s = self.settings
        if self.dir_p > 0:
            wave = dir_augment(wave, is_a, self.irs, self.dir_p, generator)
        x = beats_fbank(wave).transpose(1, 2).unsqueeze(1)  # (B, 1, 128 mel, F frames)
        if self.mixstyle_p > 0:
            x = freq_mixstyle(x, s.mixstyle_alpha, self.mixstyle_p, generator)
        x = spec_augment(x, s.specaug, s.specaug, generator)
        x, y_a, y_b, lam = mixup(x, y, s.mixup_alpha, generator)
        return x.squeeze(1).transpose(1, 2), y_a, y_b, lam  # (B, F, 128)


def fbank_all(waves, batch: int = 512) -> torch.Tensor:
    """BEATs fbanks (N, F, 128) of 16 kHz ``waves`` (N, T), no augmentation."""
    return torch.cat([beats_fbank(torch.from_numpy(np.array(waves[i:i + batch], dtype=np.float32)))
                      for i in range(0, len(waves), batch)])


class TeacherInputs:
    """What the teachers see of the clips (rows of ``meta``, 16 kHz ``w16``) without augmentation, shared
    by all runs: BEATs fbanks and, for the frozen SSL* encoder, its last-layer tokens. With ``cache``
    (the small ``ci`` data) both are computed once for every clip and kept in memory; without it (TAU22:
    230,350 clips) they are computed batch by batch when needed."""

    def __init__(self, w16, cache: bool = True):
        self.w16, self.cache = w16, cache
        self._fbank, self._tokens = None, {}

    def fbank(self, idx) -> torch.Tensor:
        """Fbanks (n, F, 128) of the clips at rows ``idx``."""
        idx = np.asarray(idx)
        if not self.cache:
            return fbank_all(self.w16[idx])
        if self._fbank is None:
            self._fbank = fbank_all(self.w16)
        return self._fbank[torch.from_numpy(idx)]

    def tokens(self, encoder: BEATs, key: str, device) -> torch.Tensor | None:
        """Last-layer tokens (N, T, C) of every clip through the frozen ``encoder`` (``key`` names its
        weights), or ``None`` without caching."""
        if not self.cache:
            return None
        if key not in self._tokens:
            fb = self.fbank(np.arange(len(self.w16)))
            encoder.to(device).eval()
            with torch.no_grad():
                self._tokens[key] = torch.cat([encoder.forward_fbank(fb[i:i + 64].to(device))[0].cpu()
                                               for i in range(0, len(fb), 64)])
        return self._tokens[key]


def run_teacher(strategy: str, split: int, *, meta: pd.DataFrame, split_part: pd.DataFrame,
                test_part: pd.DataFrame, w16, checkpoints: dict, settings: TeacherSettings, root: Path,
                profile: str, seed: int, device, inputs: TeacherInputs | None = None,
                progress: bool = True) -> dict:
    """Train (or reuse) one teacher on one split; return its manifest (see the module docstring)."""
    config = {"strategy": strategy, "split": split, "settings": asdict(settings),
              "checkpoints": checkpoint_ids(checkpoints, profile),
              "data": data_key(root, profile), "seed": seed, "version": [__version__, TEACHER_VERSION]}
    folder, key = run_folder("teachers", strategy, split, config, profile)
    with claim(folder, "teachers", strategy, split) as done:  # one process trains a run
        if done:
            return done
        t0 = time.perf_counter()

        train_part, val_part = hold_out_recordings(split_part, settings.val_fraction, seed)
        recipe = recipe_of(strategy, settings, len(train_part), split)
        tr_rows = torch.from_numpy(rows(meta, train_part))
        y_tr = torch.from_numpy(labels(train_part).copy())
        is_a = torch.from_numpy(train_part.device.to_numpy() == "a")
        inputs = inputs if inputs is not None else TeacherInputs(w16, cache=False)
        val_rows, test_rows, split_rows = rows(meta, val_part), rows(meta, test_part), rows(meta, split_part)
        y_val, y_test = labels(val_part).copy(), labels(test_part).copy()
        irs = [torch.from_numpy(ir) for ir in impulse_responses(12, 16000, seed)]
        augment = Augmenter(settings, strategy, irs)
        model = make_teacher(strategy, checkpoints, seed)
        dev = torch.device(device)

        def step_loss(net, idx, generator):
            wave = torch.from_numpy(np.asarray(w16[tr_rows[idx].numpy()], dtype=np.float32))
            x, y_a, y_b, lam = augment(wave, is_a[idx], y_tr[idx], generator)
            return mixup_loss(F.cross_entropy, net(x.to(dev)), y_a.to(dev), y_b.to(dev), lam)

        # the test split is scored after every epoch on a fixed share of its recordings (all of them in
        # ``full``), only to compare the authors' test-selected epoch with the validation-selected one
        mon = monitor_rows(test_part, settings.test_monitor, seed)
        y_mon = y_test[mon]
        monitored = []  # logits on the monitored test clips, one per epoch trained in this process
        # keyed by the weights' hash, not the file's name: another ssl.pt at the same path gets its own tokens
        tokens = inputs.tokens(model.encoder, config["checkpoints"]["SSL"][1], dev) if strategy == "SSL*" else None

        def score(m, r):
            """Logits of ``m`` on the clips at rows ``r`` of ``meta`` (eval mode, no augmentation)."""
            if tokens is not None:  # the frozen encoder's tokens never change: only the head runs
                with torch.no_grad():
                    return m.head(tokens[torch.from_numpy(r)].to(dev)).mean(1).float().cpu().numpy()
            return predict_logits(m, len(r), lambda i: inputs.fbank(r[i.numpy()]), device=dev, batch_size=64)

        # the KD study: the same teacher at increasing fit, as logits on its clips after some epochs
        at_fit = settings.fit_study if strategy == "SSL+SL" and split in settings.fit_study_splits else ()
        fit_logits = {}  # epoch -> logits on the split's clips

        def evaluate(m):
            val = score(m, val_rows)
            test = score(m, test_rows[mon])
            monitored.append(test)
            if len(monitored) in at_fit:  # the epoch, unless the run resumed (then they are dropped below)
                fit_logits[len(monitored)] = score(m, split_rows)
            return {"val_loss": F.cross_entropy(torch.from_numpy(val), torch.from_numpy(y_val)).item(),
                    "val_acc": 100 * macro_accuracy(y_val, val.argmax(1), len(SCENES)),
                    "test_acc": 100 * macro_accuracy(y_mon, test.argmax(1), len(SCENES))}

        out = train(model, step_loss, len(train_part), recipe, device=dev, seed=seed, evaluate=evaluate,
                    select=None if settings.keep == "last" else "val_loss", mode="min", workdir=folder, key=key,
                    desc=f"{strategy} {split} %", progress=progress, log=lambda line: print(f"  {strategy:>7} {split:>3} %  {line}"))
        history, best = out["history"], out["best_epoch"]
        val_best = 1 + int(np.argmin([h["val_loss"] for h in history]))  # the kept epoch unless keep="last"
        # a resumed run scored only the epochs after its resume: they are the last len(monitored) epochs
        monitored = dict(zip(range(len(history) - len(monitored) + 1, len(history) + 1), monitored))
        if len(monitored) < len(history):  # a resumed run: its fit logits were counted from its resume
            fit_logits.clear()
        # logits of the selected weights: on the whole test split (scored) and on every clip of the split
        # (the student's targets; not for the scratch row, which teaches nobody)
        test = monitored.get(best) if len(mon) == len(test_part) else None
        if test is None:  # only a share was monitored, or the run resumed after its selected epoch
            test = score(model, test_rows)
        train_logits = (score(model, split_rows) if strategy in TEACHERS
                        else np.zeros((0, len(SCENES)), dtype=np.float32))
        torch.save({"strategy": strategy, "encoder_cfg": model.encoder.cfg.to_dict(),
                    "state_dict": model.state_dict()}, folder / "model.pt")
        np.save(folder / "train_logits.npy", train_logits.astype(np.float32))
        np.save(folder / "test_logits.npy", test.astype(np.float32))
        for e, z in fit_logits.items():
            np.save(folder / f"train_e{e}_logits.npy", z.astype(np.float32))
        manifest = {"teacher": strategy, "split": split, "config": config, "key": key,
                    "code_version": f"asc_lib {__version__}, teachers v{TEACHER_VERSION}",
                    "train_files": split_part.filename.tolist(),
                    "test_files": test_part.filename.tolist(), "val_recordings": sorted(val_part.recording.unique()),
                    "monitored_test_clips": len(mon), "best_epoch": best, "kept": settings.keep,
                    "val_selected_epoch": val_best,
                    "test_selected_epoch": int(np.argmax([h["test_acc"] for h in history])) + 1,
                    "test": scores(y_test, test, device_ids(test_part)),
                    "val_selected_test_acc": history[val_best - 1]["test_acc"],
                    "test_selected_test_acc": max(h["test_acc"] for h in history),
                    "history": history, "seconds": time.perf_counter() - t0,
                    "fit_study": sorted(fit_logits),
                    **{f"train_e{e}_files": split_part.filename.tolist() for e in fit_logits}}
        done = write_manifest(folder, manifest, ["model.pt", "train_logits.npy", "test_logits.npy",
                                                 *(f"train_e{e}_logits.npy" for e in sorted(fit_logits))])
        (folder / "last.pt").unlink(missing_ok=True)  # resume state, of no use once the run is complete
        return done


def run_all(splits, *, meta: pd.DataFrame, root: Path, test_part: pd.DataFrame, w16, checkpoints: dict,
            settings: TeacherSettings, profile: str, seed: int, device, inputs: TeacherInputs | None = None,
            strategies=STRATEGIES, progress: bool = True) -> dict:
    """:func:`run_teacher` for every strategy on every split (split by split, in book order):
    ``{(strategy, split): manifest}``."""
    runs = {}
    for split in splits:
        part = read_split(root, split, meta)
        for strategy in strategies:
            runs[strategy, split] = run_teacher(
                strategy, split, meta=meta, split_part=part, test_part=test_part, w16=w16, checkpoints=checkpoints,
                settings=settings, root=root, profile=profile, seed=seed, device=device, inputs=inputs,
                progress=progress)
    return runs


def load_logits(manifest: dict, part: str, files=None) -> np.ndarray:
    """A teacher's logits on ``part`` ("train" or "test") from its manifest, rows in the order of ``files``
    (clip names; default the manifest's order). A clip the teacher never saw is a clear error."""
    folder = Path(manifest["folder"])
    path = folder / f"{part}_logits.npy"
    verify(path, manifest.get("files", {}).get(path.name), f"delete {folder} to train it again")
    try:
        logits = np.load(path)
    except (ValueError, OSError) as err:  # missing, truncated, not a .npy file
        raise RuntimeError(f"{path}: cannot read this teacher's logits ({type(err).__name__}: {err}); "
                           f"delete {folder} to train it again") from err
    names = manifest[f"{part}_files"]
    if len(names) != len(logits):
        raise ValueError(f"{folder}: {len(logits)} {part} logits for {len(names)} clips in manifest.json; "
                         f"delete {folder} to train it again")
    if files is None:
        return logits
    where = {n: i for i, n in enumerate(names)}
    missing = [f for f in files if f not in where]
    if missing:
        raise KeyError(f"{folder}: no {manifest['teacher']} logits for {len(missing)} clip(s), e.g. {missing[0]}")
    return logits[[where[f] for f in files]]


def load_teacher(manifest: dict) -> TokenClassifier:
    """The trained teacher of a run (its selected epoch's weights), in eval mode; a damaged ``model.pt`` is an
    error naming it and the way out."""
    folder = Path(manifest["folder"])
    path = folder / "model.pt"
    verify(path, manifest.get("files", {}).get("model.pt"), f"delete {folder} to train it again")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        model = TokenClassifier(BEATs(BEATsConfig.from_dict(saved["encoder_cfg"])), frozen=saved["strategy"] == "SSL*")
        model.load_state_dict(saved["state_dict"])
    except Exception as err:  # missing, truncated, not a torch file, other weights
        raise RuntimeError(f"{path}: cannot load this teacher ({type(err).__name__}: "
                           f"{str(err).splitlines()[0][:200] if str(err) else 'no detail'}); delete {folder} "
                           "to train it again") from err
    return model.eval()


def subsets(names=TEACHERS) -> list[tuple[str, ...]]:
    """Every non-empty subset of ``names`` (7 for three teachers), singles first."""
    return [c for r in range(1, len(names) + 1) for c in itertools.combinations(names, r)]


def ensemble_name(members) -> str:
    return " + ".join(members) if len(members) > 1 else members[0]


def ensemble_logits(manifests: dict, members, part: str, files=None) -> np.ndarray:
    """The ensemble of ``members``: the arithmetic mean of their raw logits (the paper's ensemble)."""
    return np.mean([load_logits(manifests[m], part, files) for m in members], axis=0)


def ensemble_accuracy(manifests: dict, members, y_test) -> float:
    """Test macro accuracy (%) of the mean-logit ensemble of ``members`` (one member: that teacher)."""
    return 100 * macro_accuracy(y_test, ensemble_logits(manifests, members, "test").argmax(1), len(SCENES))


def smoke_test(config, device, clips: int = 4, seed: int = 0) -> dict:
    """One short training step of every strategy on ``clips`` random 1 s clips with the encoder
    ``config`` (random weights; e.g. the released 12-layer config), on ``device``: exercises the
    ``full`` path (AMP on GPU) without data or checkpoints. Returns ``{strategy: loss}``."""
    gen = torch.Generator().manual_seed(seed)
    wave = torch.randn(clips, 16000, generator=gen) * 0.1
    y = torch.randint(0, len(SCENES), (clips,), generator=gen)
    losses = {}
    for strategy in STRATEGIES:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = TokenClassifier(BEATs(config), frozen=strategy == "SSL*")
        fb = beats_fbank(wave)
        recipe = Recipe(epochs=1, batch_size=clips, lr=1e-5, steps_per_epoch=1)
        out = train(model, lambda net, idx, g: F.cross_entropy(net(fb[idx].to(device)), y[idx].to(device)),
                    clips, recipe, device=torch.device(device), seed=seed, progress=False, log=lambda s: None)
        losses[strategy] = out["history"][0]["loss"]
    return losses

"""Knowledge distillation into the student (TF-SepNet), as the paper's code does it.

loss = lambda * CE(student, label) + (1 - lambda) * T^2 * KL(log_softmax(teacher / T) || log_softmax(student / T))

with lambda = 0.02 and T = 2; the KL takes log-probabilities on both sides (``log_target=True``) and torch's
``"mean"`` reduction (over batch and classes). With mixup the label term and the KD term are both mixed with
the same lambda, each against its own (permuted) teacher target (the authors' ``SoftMixUp``).

A student run (:func:`run_student`) trains on a split without its validation recordings (the same ones the
teachers held out), selects the epoch on them, scores the test split, and writes ``model.pt`` and, last,
``manifest.json`` (teacher(s), split, configuration, code version, metrics, history) into its own folder
under ``artifacts/<profile>/students/``. Teacher logits are read through the teachers' manifests
(:func:`asc_lib.teachers.load_logits`), aligned by clip name.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from . import __version__
from .augment import dir_augment, freq_mixstyle, mixup, mixup_loss
from .data import SCENES
from .data.dataset import data_key, device_ids, labels, rows
from .data.synthetic import impulse_responses
from .features import student_logmel
from .integrity import verify
from .complexity import param_bytes
from .metrics import macro_accuracy
from .models.tfsepnet import TFSepNet
from .quantize import cpu_speed, int8_param_bytes, logits as int8_logits, quantize_int8
from .profiles import StudentSettings
from .data.tau import read_split
from .profiles import TeacherSettings
from .runs import claim, run_folder, scores, write_manifest
from .teachers import TEACHERS, ensemble_logits, ensemble_name, hold_out_recordings, load_teacher
from .teachers import run_all as run_all_teachers
from .train import predict_logits, train, with_passes
from .views import make_views

STUDENT_VERSION = 4  # bump when a run's results would change
STUDENTS = (None, *[(t,) for t in TEACHERS], TEACHERS)  # from scratch, KD from each teacher, KD from all three
TARGETS = ("teacher", "oracle")


def oracle_repair(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The teacher's logits (N, C) with, on each clip whose top class is not its label ``y``, the top logit and
    the true class's swapped: every target right, the same values (so the same sharpness) otherwise. It tests
    whether the teacher's wrong answers are what holds the student back."""
    z = np.array(logits, copy=True)
    top = z.argmax(1)
    wrong = np.flatnonzero(top != y)
    z[wrong, top[wrong]], z[wrong, y[wrong]] = logits[wrong, y[wrong]], logits[wrong, top[wrong]]
    return z


def student_hold_out(split_part: pd.DataFrame, manifests: dict, members, fraction: float, seed: int):
    """(train, validation) parts of a student's split: its teachers' own validation recordings when it has
    teachers (they never trained on them, so their logits there are guesses; and whatever its seed, the student
    distils only on clips its teachers saw), else recordings drawn from ``seed``
    (:func:`asc_lib.teachers.hold_out_recordings`)."""
    if not members:
        return hold_out_recordings(split_part, fraction, seed)
    held = {tuple(manifests[m]["val_recordings"]) for m in members}
    if len(held) > 1:
        raise ValueError(f"teachers {', '.join(members)} held out different recordings (trained with other seeds "
                         "or settings): an ensemble's student needs teachers that held out the same ones")
    is_val = split_part.recording.isin(held.pop()).to_numpy()
    return split_part[~is_val], split_part[is_val]


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher || student) on temperature-softened log-probabilities, mean reduction.
    Both (B, classes); the teacher's side carries no gradient."""
    s = F.log_softmax(student_logits / temperature, dim=1)
    t = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    # torch's kl_div(..., reduction="mean", log_target=True), written out: torch warns that "mean" will
    # change to mean "batchmean" in a later release, and the paper's loss is the element-wise mean
    return temperature ** 2 * (t.exp() * (t - s)).sum() / s.numel()


def distill_loss(student_logits, y_a, y_b, lam: float, teacher_a=None, teacher_b=None, *, kd_lambda: float,
                 temperature: float) -> torch.Tensor:
    """The student's loss for a (mixed-up) batch: ``kd_lambda * CE + (1 - kd_lambda) * KD``, each term mixed
    with ``lam`` between the targets of the two mixed items. Without teacher logits: plain (mixed) CE."""
    ce = mixup_loss(F.cross_entropy, student_logits, y_a, y_b, lam)
    if teacher_a is None:
        return ce
    kd = mixup_loss(lambda s, t: kd_loss(s, t, temperature), student_logits, teacher_a, teacher_b, lam)
    return kd_lambda * ce + (1 - kd_lambda) * kd


def _check_settings(settings: StudentSettings) -> None:
    """Refuse a temperature or a ``kd_lambda`` out of its range before anything trains: at T = 0 every
    loss is NaN (the run would stop at its first step, after its teachers were trained)."""
    if not (settings.temperature > 0 and math.isfinite(settings.temperature)):
        raise ValueError(f"student settings: temperature (T of the distillation) must be a finite number > 0, "
                         f"got {settings.temperature!r}")
    if not 0 <= settings.kd_lambda <= 1:
        raise ValueError(f"student settings: kd_lambda (the weight of the label term) must be within [0, 1], "
                         f"got {settings.kd_lambda!r}")


def view_loss(views: dict, y: torch.Tensor, settings: StudentSettings, device):
    """The student's step on consistent views (:func:`asc_lib.views.make_views` of its training clips, labels
    ``y``): each clip of the batch as one of its k views drawn at random, Freq-MixStyle, then the label term
    mixed as the view's waveforms were and the KD term against the teachers' logits on that very view."""
    feats, logits = views["features"], torch.from_numpy(views["logits"])
    lam, y_b = torch.from_numpy(views["lam"]), y[torch.from_numpy(views["partner"])]  # (n, k)

    def step_loss(net, idx, generator):
        v = torch.randint(feats.shape[1], (len(idx),), generator=generator)
        x = freq_mixstyle(feats[idx, v].float(), settings.mixstyle_alpha, settings.mixstyle_p, generator)
        out = net(x.to(device))
        w = lam[idx, v].to(device)
        ce = (w * F.cross_entropy(out, y[idx].to(device), reduction="none")
              + (1 - w) * F.cross_entropy(out, y_b[idx, v].to(device), reduction="none")).mean()
        kd = kd_loss(out, logits[idx, v].to(device), settings.temperature)
        return settings.kd_lambda * ce + (1 - settings.kd_lambda) * kd
    return step_loss


def logmel_all(waves, n_mels: int, batch: int = 256) -> torch.Tensor:
    """Student log-mels (N, 1, n_mels, frames) float32 of 32 kHz ``waves`` (N, T), no augmentation."""
    return torch.cat([student_logmel(torch.from_numpy(np.array(waves[i:i + batch], dtype=np.float32)),
                                     n_mels=n_mels).unsqueeze(1) for i in range(0, len(waves), batch)])


def run_student(teacher, split: int, *, meta: pd.DataFrame, split_part: pd.DataFrame, test_part: pd.DataFrame,
                w32, manifests: dict, settings: StudentSettings, root: Path, profile: str, seed: int,
                device, features: torch.Tensor | None = None, progress: bool = True,
                logits: str = "train", targets: str = "teacher", views: int = 0, w16=None) -> dict:
    """Train (or reuse) the student on one split: from scratch (``teacher=None``) or distilled from one
    teacher or the mean-logit ensemble of several (a name or a tuple of names; ``manifests`` maps each
    teacher name to its manifest for this split). Returns the run's manifest.

    ``logits``: which of the teachers' logits on the split it learns from: ``"train"`` (the selected
    epoch's) or ``"train_e<k>"`` (after epoch k, kept for the KD study: ``TeacherSettings.fit_study``).
    ``targets="oracle"``: those logits repaired by :func:`oracle_repair`. ``views=k``: consistent views
    (:mod:`asc_lib.views`): the student trains on k stored mixed-and-shifted views of each clip, against its
    teachers' logits on those same views (needs ``w16``, the teachers' 16 kHz waveforms); no batch mixup.

    The student holds out its teachers' validation recordings (:func:`student_hold_out`). Besides the
    selected epoch's test logits it keeps the last epoch's (``test_last``), and, when distilled, the accuracy
    of its targets on its training clips (``teacher_on_its_clips``, %; with views: of the clean-clip logits).

    ``features``: log-mels of every clip of ``meta`` computed once (:func:`logmel_all`), used for the
    test and validation clips and, when ``settings.cache_features`` is set, for training too: then
    there is no waveform-level DIR (``settings.dir_p`` must be 0).

    ``progress``: a progress bar and a line per epoch on stdout; ``False`` trains quietly, so that a
    checked chapter cell prints the same text whether it trained or reused the run."""
    _check_settings(settings)
    if settings.cache_features and settings.dir_p > 0:
        raise ValueError("cache_features trains on precomputed log-mels: DIR (a waveform augmentation) "
                         f"cannot run, set dir_p=0 (got {settings.dir_p})")
    if settings.cache_features and features is None:
        raise ValueError("cache_features is set: pass features=logmel_all(w32, n_mels)")
    members = () if teacher is None else ((teacher,) if isinstance(teacher, str) else tuple(teacher))
    if targets not in TARGETS:
        raise ValueError(f"targets must be one of {TARGETS}, got {targets!r}")
    if (targets != "teacher" or views) and not members:
        raise ValueError("oracle targets and consistent views need a teacher (teacher=None trains from scratch)")
    if views and targets != "teacher":
        raise ValueError("consistent views learn from the teachers' logits on each view: oracle targets repair "
                         "clean-clip logits only, choose one")
    if views and w16 is None:
        raise ValueError("views: pass w16, the 16 kHz waveforms its teachers score the views on")
    name = ensemble_name(members) if members else "scratch"
    if logits != "train":
        name = f"{name} after epoch {logits.removeprefix('train_e')}"
    name += ", oracle-repaired" * (targets == "oracle") + f", {views} views" * bool(views)
    teacher_keys = {m: manifests[m]["key"] for m in members}
    config = {"teacher": name, "teachers": teacher_keys, "logits": logits, "split": split, "settings": asdict(settings),
              "data": data_key(root, profile), "seed": seed, "version": [__version__, STUDENT_VERSION],
              **({"targets": targets} if targets != "teacher" else {}), **({"views": views} if views else {})}
    folder, key = run_folder("students", name, split, config, profile)
    with claim(folder, "students", name, split) as done:  # one process trains a run
        if done:
            return done
        t0 = time.perf_counter()

        train_part, val_part = student_hold_out(split_part, manifests, members, settings.val_fraction, seed)
        tr_rows = rows(meta, train_part)
        y_tr = torch.from_numpy(labels(train_part).copy())
        is_a = torch.from_numpy(train_part.device.to_numpy() == "a")
        taught = ensemble_logits(manifests, members, logits, train_part.filename.tolist()) if members else None
        if targets == "oracle":
            taught = oracle_repair(taught, y_tr.numpy())
        targets = torch.from_numpy(taught) if members else None
        feats = (lambda r: features[torch.from_numpy(r)].float()) if features is not None else (
            lambda r: logmel_all(w32[r], settings.n_mels))
        val_x, test_x = feats(rows(meta, val_part)), feats(rows(meta, test_part))
        y_val, y_test = labels(val_part).copy(), labels(test_part).copy()
        irs = [torch.from_numpy(ir) for ir in impulse_responses(12, 32000, seed)]
        dev = torch.device(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = TFSepNet()

        def step_loss(net, idx, generator):
            if settings.cache_features:
                x = feats(tr_rows[idx.numpy()])  # (B, 1, mels, frames)
            else:
                wave = torch.from_numpy(np.asarray(w32[tr_rows[idx.numpy()]], dtype=np.float32))
                if settings.dir_p > 0:
                    wave = dir_augment(wave, is_a[idx], irs, settings.dir_p, generator)
                x = student_logmel(wave, n_mels=settings.n_mels).unsqueeze(1)  # (B, 1, mels, frames)
            x = freq_mixstyle(x, settings.mixstyle_alpha, settings.mixstyle_p, generator)
            y = (y_tr[idx], targets[idx]) if targets is not None else (y_tr[idx],)
            x, ya, yb, lam = mixup(x, y, settings.mixup_alpha, generator)
            logits = net(x.to(dev))
            ya, yb = [t.to(dev) for t in ya], [t.to(dev) for t in yb]
            return distill_loss(logits, ya[0], yb[0], lam, *(ya[1:] + yb[1:]), kd_lambda=settings.kd_lambda,
                                temperature=settings.temperature)

        if views:
            step_loss = view_loss(make_views([load_teacher(manifests[m]) for m in members], w16, w32, tr_rows,
                                             k=views, alpha=settings.mixup_alpha, seed=seed, n_mels=settings.n_mels,
                                             device=dev), y_tr, settings, dev)
        last = {}  # the weights after the latest epoch (the run keeps the selected epoch's)

        def evaluate(m):
            last["state"] = {k: v.detach().cpu().clone() for k, v in m.state_dict().items()}
            val = predict_logits(m, len(val_x), lambda i: val_x[i], device=dev, batch_size=128)
            return {"val_loss": F.cross_entropy(torch.from_numpy(val), torch.from_numpy(y_val)).item(),
                    "val_acc": 100 * macro_accuracy(y_val, val.argmax(1), len(SCENES))}

        recipe = with_passes(settings.recipe, len(train_part), settings.min_passes)
        out = train(model, step_loss, len(train_part), recipe, device=dev, seed=seed, evaluate=evaluate,
                    select="val_loss", mode="min", workdir=folder, key=key, desc=f"student {name} {split} %", progress=progress,
                    log=(lambda line: print(f"  student ({name}) {split:>3} %  {line}")) if progress else (lambda line: None))
        test = predict_logits(model, len(test_x), lambda i: test_x[i], device=dev, batch_size=128)
        test_last = test
        if out["best_epoch"] != len(out["history"]):  # the last epoch's weights: kept above, or (a run that
            final = copy.deepcopy(model)               # resumed after its last epoch) in its resume state
            final.load_state_dict(last["state"] if last else torch.load(folder / "last.pt", weights_only=True)["model"])
            test_last = predict_logits(final, len(test_x), lambda i: test_x[i], device=dev, batch_size=128)
        torch.save({"state_dict": model.state_dict()}, folder / "model.pt")
        np.save(folder / "test_logits.npy", test.astype(np.float32))
        np.save(folder / "test_last_logits.npy", test_last.astype(np.float32))
        manifest = {"student": "TF-SepNet", "teacher": name, "split": split, "config": config, "key": key,
                    "code_version": f"asc_lib {__version__}, distill v{STUDENT_VERSION}",
                    "test_files": test_part.filename.tolist(), "test_last_files": test_part.filename.tolist(),
                    "best_epoch": out["best_epoch"], "test": scores(y_test, test, device_ids(test_part)),
                    "test_last": scores(y_test, test_last, device_ids(test_part)),
                    **({"teacher_on_its_clips": 100 * macro_accuracy(y_tr.numpy(), taught.argmax(1), len(SCENES))}
                       if members else {}),
                    "history": out["history"], "seconds": time.perf_counter() - t0}
        done = write_manifest(folder, manifest, ["model.pt", "test_logits.npy", "test_last_logits.npy"])
        (folder / "last.pt").unlink(missing_ok=True)  # resume state, of no use once the run is complete
        return done


def run_all(splits, *, meta: pd.DataFrame, root: Path, test_part: pd.DataFrame, w16, w32, checkpoints: dict,
            teacher_settings: TeacherSettings, settings: StudentSettings, profile: str, seed: int, device,
            features: torch.Tensor | None = None, progress: bool = True) -> tuple[dict, dict]:
    """Every student of :data:`STUDENTS` on every split, with the teachers they need (trained or reused
    through :func:`asc_lib.teachers.run_all`): ``({(student, split): manifest}, {(teacher, split): manifest})``
    where a student is named by its teacher (``"scratch"`` or an ensemble name)."""
    _check_settings(settings)  # at once, not after the teachers
    teacher_runs = run_all_teachers(splits, meta=meta, root=root, test_part=test_part, w16=w16,
                                    checkpoints=checkpoints, settings=teacher_settings, profile=profile, seed=seed,
                                    device=device, strategies=TEACHERS, progress=progress)
    students = {}
    for split in splits:
        part = read_split(root, split, meta)
        mans = {t: teacher_runs[t, split] for t in TEACHERS}
        for who in STUDENTS:
            m = run_student(who, split, meta=meta, split_part=part, test_part=test_part, w32=w32, manifests=mans,
                            settings=settings, root=root, profile=profile, seed=seed, device=device,
                            features=features, progress=progress)
            students[m["teacher"], split] = m
    return students, teacher_runs


def load_student(manifest: dict) -> TFSepNet:
    """The trained student of a run, from its folder; a damaged ``model.pt`` is an error naming it and the
    way out."""
    folder = Path(manifest["folder"])
    verify(folder / "model.pt", manifest.get("files", {}).get("model.pt"), f"delete {folder} to train it again")
    model = TFSepNet()
    try:
        model.load_state_dict(torch.load(folder / "model.pt", weights_only=True)["state_dict"])
    except Exception as err:  # missing, truncated, not a torch file, other weights
        raise RuntimeError(f"{folder / 'model.pt'}: cannot load this student ({type(err).__name__}: "
                           f"{str(err).splitlines()[0][:200] if str(err) else 'no detail'}); delete {folder} "
                           "to train it again") from err
    return model.eval()


def int8_speed(manifest: dict, calibration: torch.Tensor, x: torch.Tensor) -> list[dict]:
    """The trained student's inference speed on this CPU, float32 and INT8 (calibrated on ``calibration``),
    eager and compiled, on the batch ``x`` (:func:`asc_lib.quantize.cpu_speed`)."""
    model = load_student(manifest)
    return cpu_speed(model, quantize_int8(model, calibration, batch=len(x)), x)


def int8_check(manifest: dict, calibration: torch.Tensor, test_x: torch.Tensor, y_test, predictions: bool = False):
    """Quantise a trained student to INT8 (calibrated on ``calibration`` log-mels), run it on the CPU over
    ``test_x`` and compare: float32 and INT8 test macro accuracy (%), the change, and the parameter memory
    by the challenge's count (1 byte per parameter) and as the INT8 model stores it. With ``predictions``:
    ``(that dict, the INT8 model's class for each test clip)`` (the seed study's paired verdicts)."""
    model = load_student(manifest)
    qmodel = quantize_int8(model, calibration)
    pred = int8_logits(qmodel, test_x).argmax(1).numpy()
    acc = 100 * macro_accuracy(y_test, pred, len(SCENES))
    out = {"float32 accuracy": manifest["test"]["macro"], "INT8 accuracy": acc,
           "change (points)": acc - manifest["test"]["macro"], "bytes (params x 1)": param_bytes(model),
           "bytes (all INT8 storage)": int8_param_bytes(qmodel)}
    return (out, pred) if predictions else out

"""Checks before the hours start: what the teachers and students of a profile will need, checked and
measured in a minute or two, so that a wrong file, a missing GPU or a full disk stops the run here
and not after hours of training.

    table = preflight.check(P, root=root, meta=meta, w16=w16, checkpoints=ckpts, device=dev)

Each row is a check with its verdict (``ok``, ``FAIL``, or ``note``) and what was found. When any check
fails, :func:`check` prints the table and raises :class:`PreflightError` naming the failures.
"""

from __future__ import annotations

import math
import os
import shutil
import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .data.dataset import rows
from .data.tau import check_audio, read_split
from .distill import STUDENTS
from .features import beats_fbank, student_logmel
from .models.beats import BEATsCheckpointError, load_beats_checkpoint
from .models.tfsepnet import TFSepNet
from .paths import artifacts_dir
from .profiles import Profile
from .teachers import STRATEGIES, make_teacher, recipe_of
from .train import bf16_autocast, with_passes

GB = 1e9


class PreflightError(RuntimeError):
    """A check before training failed (the message lists every failure)."""


def step_seconds(model: torch.nn.Module, x: torch.Tensor, device, steps: int = 2) -> float:
    """Seconds of one optimiser step (forward, backward, AdamW) of ``model`` on the batch ``x``: the median
    of ``steps`` steps after a first one that warms the kernels up (and, on CUDA, under bf16 autocast as
    the recipes train)."""
    dev = torch.device(device)
    model = model.to(dev).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-6)
    y = torch.zeros(len(x), dtype=torch.long, device=dev)
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16_autocast(dev)):
            loss = F.cross_entropy(model(x.to(dev)).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:]))


def forward_seconds(model: torch.nn.Module, x: torch.Tensor, device) -> float:
    """Seconds per clip of ``model`` in eval mode on the batch ``x`` (after a warm-up pass)."""
    dev = torch.device(device)
    model = model.to(dev).eval()
    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16_autocast(dev)):
        model(x.to(dev))
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        model(x.to(dev))
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
    return (time.perf_counter() - t0) / len(x)


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def estimate(profile: Profile, sizes: dict, n_test: int, t: dict, student_sizes: dict | None = None) -> dict:
    """Seconds of every teacher and student run of ``profile`` (``{"teachers": s, "students": s}``) on
    splits of ``sizes`` clips (``{split: n}``; the students': ``student_sizes``, default the same) and a
    test split of ``n_test``, from measured seconds ``t``: ``"finetune"`` and ``"frozen"`` (a teacher's
    optimiser step), ``"forward"`` (a clip scored by a teacher), ``"student"`` (a student's step); a
    missing one counts 0. Training steps, the validation and monitored test clips scored after every
    epoch, the selected weights' test and split logits."""
    T, S = profile.teachers, profile.student
    teach = stud = 0.0
    for split, n in sizes.items():
        n_train = round(n * (1 - T.val_fraction))
        for k in STRATEGIES:
            recipe = recipe_of(k, T, n_train, split)
            per_epoch = recipe.steps_per_epoch or math.ceil(n_train / recipe.batch_size)
            scored = recipe.epochs * (n - n_train + T.test_monitor * n_test) + n_test + n
            if "forward" in t:
                teach += recipe.epochs * per_epoch * t["frozen" if k == "SSL*" else "finetune"] + scored * t["forward"]
    for n in (sizes if student_sizes is None else student_sizes).values():
        recipe = with_passes(S.recipe, round(n * (1 - S.val_fraction)), S.min_passes)
        per_epoch = recipe.steps_per_epoch or math.ceil(n * (1 - S.val_fraction) / recipe.batch_size)
        stud += len(STUDENTS) * recipe.epochs * per_epoch * t.get("student", 0.0)
    return {"teachers": teach, "students": stud}


def check(profile: Profile, *, root, meta: pd.DataFrame, w16, checkpoints: dict, device) -> pd.DataFrame:
    """Check the dataset at ``root`` (audio of every clip), the BEATs ``checkpoints`` (strict load), the
    ``device``, the free disk for caches and runs, and measure a training step of each model kind on the
    first clips of the largest split to estimate the teachers' and students' time. Returns the table."""
    found = []

    def row(what, verdict, detail):
        found.append({"check": what, "verdict": verdict, "found": detail})

    # the dataset: split files were checked when it was opened; here every clip's audio header
    problems = check_audio(root, meta)
    size = sum(os.path.getsize(p) for p in meta.path if os.path.isfile(p))
    row("dataset", "FAIL" if problems else "ok",
        (f"{len(problems)} clip(s) with bad audio (all: python -m asc_lib.data.tau {root}), e.g. {problems[0]}"
         if problems else
         f"{len(meta):,} clips, {size / GB:.2f} GB, every file 44.1 kHz mono 1 s"))

    # the checkpoints: strict load (the official ones were also checked against the released cfg)
    params = {}
    for key, path in checkpoints.items():
        try:
            model = load_beats_checkpoint(path)
        except (BEATsCheckpointError, FileNotFoundError) as err:
            row(f"checkpoint {key}", "FAIL", str(err))
            continue
        params[key] = sum(p.numel() for p in model.parameters())
        row(f"checkpoint {key}", "ok", f"{path.name}: loads strictly, {model.cfg.encoder_layers} layers, "
                                       f"{params[key] / 1e6:.1f} M parameters")

    # the device
    dev = torch.device(device)
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
        memory = torch.cuda.get_device_properties(dev).total_memory / 2**30
        bf16 = ("native: the recipes train under bf16 autocast" if torch.cuda.is_bf16_supported(including_emulation=False)
                else "emulated only: bf16 autocast runs, slowly" if torch.cuda.is_bf16_supported()
                else "not supported: the recipes train in fp32")
        row("device", "ok" if "native" in bf16 else "note", f"{name}, {memory:.0f} GiB, bf16 {bf16}")
    else:
        row("device", "note", f"CPU, {torch.get_num_threads()} threads" + (
            "" if profile.device == "cpu" else "; no CUDA device: these recipes are meant for a GPU"))

    # time: one training step of each kind on the first clips of the largest split
    part = read_split(root, max(profile.teachers.splits), meta)
    sizes = {s: len(read_split(root, s, meta)) for s in profile.teachers.splits}
    student_sizes = {s: len(read_split(root, s, meta)) for s in profile.student.splits}
    t = {}
    st = profile.student.recipe
    try:
        if len(params) == len(checkpoints):
            ft, fr = profile.teachers.finetune, profile.teachers.frozen
            waves = torch.from_numpy(np.asarray(w16[rows(meta, part)[:max(ft.batch_size, fr.batch_size)]],
                                                dtype=np.float32))
            fb = beats_fbank(waves)
            t["finetune"] = step_seconds(make_teacher("SSL", checkpoints, 0), fb[:ft.batch_size], dev)
            t["frozen"] = step_seconds(make_teacher("SSL*", checkpoints, 0), fb[:fr.batch_size], dev)
            t["forward"] = forward_seconds(make_teacher("SSL", checkpoints, 0), fb[:ft.batch_size], dev)
        noise = torch.randn(st.batch_size, 32000, generator=torch.Generator().manual_seed(0)) * 0.1  # 1 s, 32 kHz
        t["student"] = step_seconds(TFSepNet(), student_logmel(noise, n_mels=profile.student.n_mels).unsqueeze(1), dev)
    except torch.cuda.OutOfMemoryError:
        memory = torch.cuda.get_device_properties(dev).total_memory / 2**30
        row("time", "FAIL", f"a training step of the recipes' batches (teachers {profile.teachers.finetune.batch_size}"
                            f" and {profile.teachers.frozen.batch_size}, students {st.batch_size}) does not fit in "
                            f"the GPU's {memory:.0f} GiB")
        t = {}
    seconds = estimate(profile, sizes, len(read_split(root, "test", meta)), t, student_sizes)
    peak = (f"; peak GPU memory {torch.cuda.max_memory_allocated(dev) / 2**30:.1f} GiB"
            if dev.type == "cuda" else "")
    if "forward" in t:
        row("time: teachers", "note", f"{len(sizes) * len(STRATEGIES)} runs, about {_duration(seconds['teachers'])} "
                                      f"(a step: {t['finetune']:.2f} s fine-tuning, {t['frozen']:.2f} s frozen, "
                                      f"{1000 * t['forward']:.1f} ms a clip scored{peak})")
    if "student" in t:
        row("time: students", "note", f"{len(student_sizes) * len(STUDENTS)} runs, about "
                                      f"{_duration(seconds['students'])} (a step of {st.batch_size}: {t['student']:.3f} s)")

    # disk: the waveform caches not built yet (16 and 32 kHz float32), the teacher runs' model.pt, and the
    # resume state of the run in progress (last.pt: weights, best weights, Adam's two moments; deleted when
    # a run completes)
    folder = artifacts_dir(profile.name)
    built = sum(f.stat().st_size for f in (folder / "waves").glob("wave_*.npy"))
    caches = max(0, len(meta) * (16000 + 32000) * 4 - built)
    encoder = max(params.values(), default=0) * 4
    runs = (len(sizes) * len(STRATEGIES) + 4) * encoder
    need, free = caches + runs, shutil.disk_usage(folder).free
    row("disk", "ok" if free > need else "FAIL",
        f"{need / GB:.1f} GB needed at most ({caches / GB:.1f} GB waveform caches still to build, {runs / GB:.1f} GB "
        "teacher runs), "
        f"{free / GB:.1f} GB free in {folder}")

    table = pd.DataFrame(found).set_index("check")
    failed = table[table.verdict == "FAIL"]
    if len(failed):
        print(table.to_string())
        raise PreflightError(f"{len(failed)} check(s) failed before training: "
                             + "; ".join(f"{k}: {v}" for k, v in failed.found.items()))
    table.attrs["seconds"] = seconds
    return table


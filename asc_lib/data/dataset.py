"""The dataset a chapter works on: a TAU22 folder (``data_root``) or the synthetic twin, and its
waveforms at the teachers' and the student's sample rates (decoded once, cached)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..paths import artifacts_dir
from ..profiles import Profile
from . import DEVICES, SCENES
from .cache import waveform_cache
from .synthetic import make_synthetic_tau
from .tau import DatasetFormatError, check_audio, check_dataset, data_id, is_tau_folder, read_tsv_rows, write_cut


def prepare(data_root: str, profile: Profile, seed: int = 0) -> Path:
    """``data_root`` when given (checked to be a TAU22 folder), else the profile's synthetic twin,
    generated once under ``artifacts/<profile>/`` and reused. A smoke profile (``profile.cut``) works on a
    cut of ``data_root``, written once under ``artifacts/<profile>/``, after ``data_root`` itself is checked
    (its split files each time, its clips' audio headers once: before any waveform is decoded)."""
    if data_root:
        root = Path(data_root).expanduser()
        if not is_tau_folder(root):
            raise DatasetFormatError(
                f"{root} is not a TAU22 folder: expected meta.csv, audio/, split5.csv ... split100.csv and "
                "test.csv there (asc_lib.data.download.fetch_tau22 downloads and arranges them)")
        problems = check_dataset(root)
        if problems:
            raise DatasetFormatError(f"{root}: {len(problems)} problem(s) in its split files (all of them: "
                                     f"python -m asc_lib.data.tau {root}):\n" + "\n".join(problems[:10]))
        fingerprint = data_key(root, profile.name)
        checked = artifacts_dir(profile.name) / f"audio-checked-{fingerprint}"  # once per dataset
        if not checked.is_file():
            problems = check_audio(root)
            if problems:
                raise DatasetFormatError(f"{root}: {len(problems)} clip(s) with bad audio (all of them: python -m "
                                         f"asc_lib.data.tau {root}):\n" + "\n".join(problems[:10]))
            checked.touch()
        if profile.cut is None:
            return root
        clips = profile.cut.clips_per_recording
        return write_cut(root, artifacts_dir(profile.name) / f"tau22-cut-v1-{fingerprint}-{clips}", clips)
    size = profile.data.twin_size
    return make_synthetic_tau(artifacts_dir(profile.name) / f"tau22-twin-{size}-seed{seed}", size=size, seed=seed)


def waves(meta: pd.DataFrame, sr: int, profile: Profile) -> np.ndarray:
    """Every clip of ``meta`` at ``sr`` (rows in ``meta``'s order), from the on-disk cache."""
    return waveform_cache([Path(p) for p in meta.path], sr, artifacts_dir(profile.name) / "waves")


def data_key(root: Path, profile: str) -> str:
    """:func:`~asc_lib.data.tau.data_id` of ``root``, the clips' hashes remembered with the waveform cache's
    (``artifacts/<profile>/waves/hashes.json``): the run keys of teachers and students."""
    return data_id(root, memo=artifacts_dir(profile) / "waves" / "hashes.json")


def rows(meta: pd.DataFrame, part: pd.DataFrame) -> np.ndarray:
    """Positions in ``meta`` of the clips of ``part`` (a split read with ``read_split``)."""
    return pd.Series(np.arange(len(meta)), index=meta.filename)[part.filename].to_numpy(copy=True)


def labels(part: pd.DataFrame) -> np.ndarray:
    """Scene indices (baseline order) of the clips of ``part``."""
    return part.scene.map(SCENES.index).to_numpy()


def device_ids(part: pd.DataFrame) -> np.ndarray:
    return part.device.map(DEVICES.index).to_numpy()


def device_responses(waves: np.ndarray, part: pd.DataFrame, sr: int, n_fft: int = 1024):
    """Each device's average log-power spectrum relative to device a's, in dB, measured on ``part``
    (clips recorded by every device in parallel, as in the test split). Returns ``(freqs, {device: dB})``."""
    window = np.hanning(n_fft)
    spectra = {}
    for device, group in part.groupby("device"):
        x = np.asarray(waves[group.index.to_numpy()])  # (clips, T)
        frames = np.lib.stride_tricks.sliding_window_view(x, n_fft, axis=1)[:, ::n_fft // 2]  # (clips, F, n_fft)
        power = np.mean(np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2, axis=(0, 1))
        spectra[device] = 10 * np.log10(power + 1e-12)
    freqs = np.fft.rfftfreq(n_fft, 1 / sr)
    return freqs, {d: spectra[d] - spectra["a"] for d in DEVICES if d in spectra}


def read_pool(pool_root) -> tuple[list[Path], list[str], torch.Tensor]:
    """``pool_root/tags.csv`` (tab-separated ``filename``, ``tags``; tags comma-separated) ->
    (absolute file paths, sorted tag names seen, multi-hot targets (N, K) float32)."""
    pool_root = Path(pool_root)
    path = pool_root / "tags.csv"
    rows = read_tsv_rows(path)
    if not rows or rows[0] != ["filename", "tags"]:
        raise DatasetFormatError(f"{path}: expected a tab-separated header 'filename<TAB>tags', "
                         f"got {rows[0] if rows else 'an empty file'}")
    body = [r for r in rows[1:] if r]
    bad = [i + 2 for i, r in enumerate(body) if len(r) != 2]
    if bad:
        raise DatasetFormatError(f"{path}: line(s) {bad[:5]} do not have 2 tab-separated fields")
    tags = [[t for t in r[1].split(",") if t] for r in body]
    names = sorted({t for ts in tags for t in ts})
    col = {n: k for k, n in enumerate(names)}
    targets = torch.zeros(len(body), len(names))
    for i, ts in enumerate(tags):
        targets[i, [col[t] for t in ts]] = 1.0
    return [pool_root / r[0] for r in body], names, targets


def pool_waves(twin: Path, profile: Profile):
    """The twin's unlabeled pool: ``(waves (N, 16000) memmap, tag names, multi-hot tags (N, K))``."""
    files, names, targets = read_pool(Path(twin) / "pool")
    return waveform_cache(files, 16000, artifacts_dir(profile.name) / "waves", source_sr=16000), names, targets

"""Decode and resample every clip once, into a memory-mapped cache.

The teachers read clips at 16 kHz and the student at 32 kHz; the dataset's WAVs are 44.1 kHz
24-bit mono. Decoding and resampling every epoch is slow, so :func:`waveform_cache` does it once
and stores the result as one ``(N, samples)`` float32 ``.npy`` file that later runs open
memory-mapped: reading a batch is then a copy out of the page cache.

The build is atomic and resumable. Rows are written into ``<name>.partial.npy`` next to a boolean
``<name>.done.npy`` progress mask, both flushed after every chunk (data first, then mask, so a row
marked done is on disk). When every row is done the partial file is renamed to ``<name>.npy`` with
:func:`os.replace`. Only a file under the final name is ever trusted; an interrupted build (an
exception, Ctrl-C, a killed kernel) picks up at the next call where the mask says it stopped. A build
that starts deletes the partial files of every other build in its folder that no process is running:
they would never be resumed. One process builds a cache at a time (:func:`asc_lib.integrity.build_lock`:
a second one waits, then reuses it); the bytes are reserved on disk before the first row is written. A
finished cache is read without the lock and without writing anything, so a read-only folder of finished
caches (a class's shared one) can be read.

The hash of the finished file's bytes is written beside it (``<name>.json``) before the rename, and a
reader checks it once per process: a cache whose bytes changed is an error naming it, never used.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from ..dsp import Resampler
from ..integrity import build_lock, check_free, file_hash, is_locked, reserve, verify

# Bump whenever a change to this module changes the cached values or layout: old caches are then
# ignored (their key no longer matches) instead of being read as if they were current.
CACHE_VERSION = 1


class AudioFormatError(ValueError):
    """A clip is missing, unreadable, or not in the format the dataset promises."""


def load_wav(path: Path | str, expected_sr: int = 44100, channels: int = 1,
             seconds: float | None = None) -> np.ndarray:
    """Read one WAV as float32 in [-1, 1].

    Returns shape ``(T,)`` when ``channels == 1``, else ``(T, channels)``. Raises
    :class:`AudioFormatError`, naming the file, what was expected and what was found, when the file
    is missing, cannot be decoded, has another sample rate or channel count, has 8-bit samples, lasts
    other than ``seconds`` (when given) within 1 %, or holds samples that are not finite or lie
    outside [-1, 1] (a float file can).
    """
    path = Path(path)
    want = f"a {expected_sr} Hz, {channels}-channel audio file"
    if not path.is_file():
        raise AudioFormatError(f"{path}: expected {want}, found no such file")
    try:
        with sf.SoundFile(path) as f:
            if f.samplerate != expected_sr:
                raise AudioFormatError(f"{path}: expected {expected_sr} Hz, found {f.samplerate} Hz")
            if f.channels != channels:
                raise AudioFormatError(f"{path}: expected {channels} channel(s), found {f.channels}")
            if f.subtype in ("PCM_U8", "PCM_S8"):
                raise AudioFormatError(f"{path}: expected 16-bit or more per sample, found {f.subtype}")
            data = f.read(dtype="float32", always_2d=True)
    except AudioFormatError:
        raise
    except (sf.SoundFileError, RuntimeError, OSError, ValueError) as err:
        raise AudioFormatError(f"{path}: expected {want}, found an unreadable file ({err})") from err
    if seconds is not None and abs(len(data) - seconds * expected_sr) > 0.01 * seconds * expected_sr:
        raise AudioFormatError(f"{path}: expected {seconds:g} s ({round(seconds * expected_sr)} samples, "
                               f"within 1 %), found {len(data)} samples ({len(data) / expected_sr:.3f} s)")
    if not np.isfinite(data).all():
        raise AudioFormatError(f"{path}: expected finite samples, found {int((~np.isfinite(data)).sum())} NaN or inf")
    if np.abs(data).max(initial=0.0) > 1.0:
        raise AudioFormatError(f"{path}: expected samples within [-1, 1], found {np.abs(data).max():.3f}")
    return np.ascontiguousarray(data[:, 0]) if channels == 1 else data


@functools.lru_cache(maxsize=None)
def _resampler(source_sr: int, sr: int) -> Resampler:
    """One resampling kernel per (source_sr, sr), built once and reused for every chunk."""
    return Resampler(source_sr, sr)


def _fit(x: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad at the end or cut ``x`` (..., T) to exactly ``length`` samples."""
    if x.shape[-1] >= length:
        return x[..., :length]
    return torch.nn.functional.pad(x, (0, length - x.shape[-1]))


def _stat(path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def content_hashes(files: list[Path], memo: Path | None = None) -> list[str]:
    """A hash of each file's bytes (BLAKE2b, 128 bits; ``"missing"`` for a missing file). With ``memo``
    (a JSON file), a file whose size, modification time, change time and inode are as remembered there
    is not read again: rewriting a file and restoring its modification time still changes its change
    time, so nothing stale is trusted, while an unchanged dataset costs one ``stat`` per file."""
    known = {}
    if memo is not None and memo.is_file():
        try:
            known = json.loads(memo.read_text())
        except ValueError:
            known = {}  # a damaged memo is only a slower start
    out, changed = [], False
    for f in files:
        st = _stat(f)
        if st is None:
            out.append("missing")
            continue
        sig = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        entry = known.get(str(f))
        if entry is None or entry[:4] != sig:
            entry = known[str(f)] = sig + [file_hash(f)]
            changed = True
        out.append(entry[4])
    if memo is not None and changed:
        # a name of this process's own: builders running at once each replace the memo whole
        tmp = memo.with_name(f".{memo.name}.{os.getpid()}.tmp")
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(known))
            os.replace(tmp, memo)
        except OSError as err:  # a read-only folder: the memo only saves time
            if err.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
    return out


def cache_key(files: list[Path], sr: int, *, source_sr: int = 44100, seconds: float = 1.0,
              memo: Path | None = None) -> str:
    """Hex SHA-256 of everything the cached values depend on.

    The file list enters as (name, hash of the bytes) in order (:func:`content_hashes`, remembered in
    ``memo``), so renaming, adding, removing, reordering or rewriting a clip gives a new key, whatever
    its size and times; moving the folder, or touching a file without changing it, does not.
    """
    payload = {
        "version": CACHE_VERSION,
        "files": [[Path(f).name, h] for f, h in zip(files, content_hashes(files, memo))],
        "sr": int(sr),
        "source_sr": int(source_sr),
        "seconds": float(seconds),
    }
    return hashlib.sha256(json.dumps(payload, separators=(",", ":")).encode()).hexdigest()


def _open_partial(partial: Path, mask: Path, shape: tuple[int, int]) -> tuple[np.memmap, np.memmap]:
    """Reopen an interrupted build if both of its files are intact, else start an empty one."""
    if partial.exists() and mask.exists():
        try:
            data = np.lib.format.open_memmap(partial, mode="r+")
            done = np.lib.format.open_memmap(mask, mode="r+")
            if data.shape == shape and data.dtype == np.float32 and done.shape == shape[:1] and done.dtype == bool:
                reserve(partial, f"the waveform cache {partial.name}")
                return data, done
            del data, done
        except (OSError, ValueError):
            pass
    # Data file first, mask second: a mask without its data file is never left behind.
    what = f"the waveform cache {partial.name} ({shape[0]} clips)"
    check_free(partial.parent, 4 * shape[0] * shape[1] + shape[0] + 256, what)
    data = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=shape)
    reserve(partial, what)
    done = np.lib.format.open_memmap(mask, mode="w+", dtype=bool, shape=shape[:1])
    done[:] = False
    done.flush()
    return data, done


def waveform_cache(files: list[Path], sr: int, cache_dir: Path, *, source_sr: int = 44100,
                   seconds: float = 1.0, progress: bool = True, chunk: int = 64) -> np.ndarray:
    """Every clip of ``files`` at ``sr`` Hz, as a read-only memory-mapped ``(N, round(sr*seconds))`` array.

    Row ``i`` is ``files[i]`` (mono, ``source_sr`` Hz, read with :func:`load_wav`) zero-padded at
    the end or cut to ``round(source_sr*seconds)`` samples, resampled to ``sr`` with a Hann-windowed
    sinc (:class:`asc_lib.dsp.Resampler`, torchaudio's default kernel), then zero-padded or cut to
    exactly ``round(sr*seconds)`` samples. For the dataset's 1 s clips neither step changes anything:
    the rows equal ``Resampler(source_sr, sr)(load_wav(f))``.

    The file is ``cache_dir/wave_{sr}_{key[:16]}.npy`` with ``key = cache_key(...)``; if it exists it
    is opened without decoding anything (or taking the build lock). Otherwise clips are decoded ``chunk``
    at a time, resampled as one batch, and written into the partial file; see the module docstring for
    how an interrupted build resumes. Raises :class:`AudioFormatError` on the first bad clip (the rows
    before it are kept for the next call).
    """
    files = [Path(f) for f in files]
    if not files:
        raise ValueError("waveform_cache: the file list is empty")
    if chunk < 1:
        raise ValueError(f"waveform_cache: chunk must be >= 1, got {chunk}")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(files, sr, source_sr=source_sr, seconds=seconds, memo=cache_dir / "hashes.json")
    name = f"wave_{sr}_{key[:16]}"
    final = cache_dir / f"{name}.npy"
    partial = cache_dir / f"{name}.partial.npy"
    mask = cache_dir / f"{name}.done.npy"
    shape = (len(files), round(sr * seconds))

    out = _reuse(final, shape, progress)  # finished: read without the lock (renamed into place whole)
    if out is not None:
        return out
    with build_lock(final, "waveform cache"):
        out = _reuse(final, shape, progress)  # finished by another process while this one waited
        if out is not None:
            mask.unlink(missing_ok=True)  # left behind if a build was killed right after its rename
            return out
        # an interrupted build of other clips or another rate is never resumed once another build starts
        # (the chapters build each rate in turn, so a build starting means the others finished or went
        # stale), unless a process is building it now
        for stale in [*cache_dir.glob("wave_*.partial.npy"), *cache_dir.glob("wave_*.done.npy")]:
            other = stale.name.split(".")[0]
            if other != name and not is_locked(cache_dir / f"{other}.npy"):
                stale.unlink(missing_ok=True)
        return _build(files, final, partial, mask, shape, sr, source_sr, seconds, progress, chunk)


def _reuse(final: Path, shape: tuple, progress: bool) -> np.ndarray | None:
    """The finished cache ``final``, its bytes checked against the hash written beside it; None if there
    is none (or one from before hashes were recorded, rebuilt then)."""
    record = final.with_suffix(".json")
    if not (final.exists() and record.exists()):
        return None
    try:
        expected = json.loads(record.read_text())["blake2b"]
        out = np.load(final, mmap_mode="r")
    except (OSError, ValueError, KeyError):
        return None
    if out.shape != shape or out.dtype != np.float32:
        return None
    verify(final, expected, f"delete {final} (and {record.name}) to decode the clips again")
    if progress:
        print(f"waveform cache: reusing {final.name} ({shape[0]} clips, "
              f"{final.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)
    return out


def _build(files, final, partial, mask, shape, sr, source_sr, seconds, progress, chunk) -> np.ndarray:
    data, done = _open_partial(partial, mask, shape)
    todo = np.flatnonzero(~done[:])
    resample = _resampler(source_sr, sr)
    src_len = round(source_sr * seconds)
    start = time.perf_counter()
    bar = tqdm(total=shape[0], initial=shape[0] - len(todo), unit="clip", disable=not progress,
               desc=f"decode + resample to {sr} Hz")
    try:
        for lo in range(0, len(todo), chunk):
            rows = todo[lo:lo + chunk]
            batch = torch.stack([_fit(torch.from_numpy(load_wav(files[i], source_sr, seconds=seconds)), src_len)
                                 for i in rows])
            with torch.inference_mode():
                wave = _fit(resample(batch), shape[1])
            data[rows] = wave.numpy()
            data.flush()  # the rows reach the file before the mask says they are done
            done[rows] = True
            done.flush()
            bar.update(len(rows))
    finally:
        bar.close()
    seconds_taken = time.perf_counter() - start
    data.flush()
    del data, done  # close both maps before renaming / deleting their files
    record = final.with_suffix(".json")
    tmp = record.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"blake2b": file_hash(partial), "shape": list(shape)}))
    os.replace(tmp, record)  # the hash first: a final file without it is never trusted
    os.replace(partial, final)
    mask.unlink(missing_ok=True)
    if progress:
        n = len(todo)
        print(f"waveform cache: {n} clips decoded in {seconds_taken:.1f} s "
              f"({n / max(seconds_taken, 1e-9):.0f} clips/s) -> {final.name} "
              f"({final.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)
    return np.load(final, mmap_mode="r")

"""Tests of asc_lib.data.cache: the decode-once, memory-mapped waveform cache."""

import errno
import subprocess
import sys
import textwrap
from pathlib import Path

import os

import numpy as np
import pytest
import soundfile as sf
import torch

from asc_lib.data import cache
from asc_lib.data.cache import AudioFormatError, cache_key, load_wav, waveform_cache
from asc_lib.dsp import Resampler

SR = 44100
ROOT = Path(__file__).resolve().parent.parent


def write_sine(path: Path, freq: float, sr: int = SR, channels: int = 1, seconds: float = 1.0) -> Path:
    t = np.arange(round(sr * seconds)) / sr
    x = 0.5 * np.sin(2 * np.pi * freq * t)
    if channels > 1:
        x = np.stack([x] * channels, axis=1)
    sf.write(path, x, sr, subtype="PCM_24")
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    """12 one-second 44.1 kHz 24-bit mono sines at different frequencies."""
    folder = tmp_path_factory.mktemp("audio")
    return [write_sine(folder / f"clip{i:02d}.wav", 110.0 * (i + 1) + 7.0 * i) for i in range(12)]


class Counter:
    """Stands in for load_wav: counts calls and raises on call number ``fail_at``."""

    def __init__(self, fail_at: int | None = None):
        self.calls, self.fail_at = 0, fail_at

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError(f"simulated failure on call {self.calls}")
        return load_wav(*args, **kwargs)


def cache_files(folder: Path) -> list[str]:
    """The cache's data files (the memo of content hashes, hashes.json, each file's recorded hash,
    wave_*.json, and the build locks, .wave_*.lock, aside)."""
    return sorted(p.name for p in folder.iterdir()
                  if p.name != "hashes.json" and p.suffix not in (".json", ".lock"))


@pytest.mark.parametrize("sr", [16000, 32000])
def test_rows_match_direct_load_and_resample(clips, tmp_path, sr):
    arr = waveform_cache(clips, sr, tmp_path, progress=False)
    assert arr.shape == (12, sr) and arr.dtype == np.float32
    assert not arr.flags.writeable
    for i, f in enumerate(clips):
        x, file_sr = sf.read(f, dtype="float32")
        assert file_sr == SR
        ref = Resampler(SR, sr)(torch.from_numpy(x)).numpy()  # torchaudio's kernel: tests/test_dsp.py
        assert ref.shape == (sr,) and np.array_equal(arr[i], ref)
    # the rows are not all the same clip
    assert np.abs(arr[0] - arr[1]).max() > 0.1


def test_16k_and_32k_get_different_files_and_shapes(clips, tmp_path):
    a16 = waveform_cache(clips, 16000, tmp_path, progress=False)
    a32 = waveform_cache(clips, 32000, tmp_path, progress=False)
    assert a16.shape == (12, 16000) and a32.shape == (12, 32000)
    names = cache_files(tmp_path)
    assert len(names) == 2, names  # no partial file or progress mask left behind
    assert names[0].startswith("wave_16000_") and names[1].startswith("wave_32000_")
    assert all(n.endswith(".npy") and ".partial" not in n and ".done" not in n for n in names)
    assert Path(a16.filename).name != Path(a32.filename).name


def test_second_call_reuses_cache_without_decoding(clips, tmp_path, monkeypatch, capsys):
    first = np.array(waveform_cache(clips, 32000, tmp_path, progress=True))
    assert "12 clips decoded" in capsys.readouterr().err
    path = tmp_path / cache_files(tmp_path)[0]
    mtime = path.stat().st_mtime_ns
    monkeypatch.setattr(cache, "load_wav", Counter(fail_at=1))  # any decode would raise
    second = waveform_cache(clips, 32000, tmp_path, progress=True)
    assert "reusing" in capsys.readouterr().err
    assert np.array_equal(first, second)
    assert path.stat().st_mtime_ns == mtime
    assert cache_files(tmp_path) == [path.name]


def test_interrupted_build_resumes_and_equals_uninterrupted(clips, tmp_path, monkeypatch):
    ref = np.array(waveform_cache(clips, 32000, tmp_path / "ref", progress=False, chunk=4))

    out = tmp_path / "out"
    monkeypatch.setattr(cache, "load_wav", Counter(fail_at=7))
    with pytest.raises(RuntimeError, match="simulated failure"):
        waveform_cache(clips, 32000, out, progress=False, chunk=4)
    names = cache_files(out)
    stem = names[0].split(".")[0]
    assert names == [f"{stem}.done.npy", f"{stem}.partial.npy"]  # no final file
    assert np.load(out / f"{stem}.done.npy").tolist() == [True] * 4 + [False] * 8

    resumed_loader = Counter()
    monkeypatch.setattr(cache, "load_wav", resumed_loader)
    got = waveform_cache(clips, 32000, out, progress=False, chunk=4)
    assert resumed_loader.calls == 8  # only the clips not yet done
    assert np.array_equal(np.asarray(got), ref)
    assert cache_files(out) == [f"{stem}.npy"]


@pytest.mark.slow
def test_killed_build_resumes(clips, tmp_path, monkeypatch):
    """A process killed mid-build (no exception handling, no cleanup) leaves a resumable partial."""
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import os, sys
        from pathlib import Path
        from asc_lib.data import cache
        real, calls = cache.load_wav, [0]
        def dying(*a, **k):
            calls[0] += 1
            if calls[0] == 7:
                os._exit(9)
            return real(*a, **k)
        cache.load_wav = dying
        files = [Path(p) for p in {[str(c) for c in clips]!r}]
        cache.waveform_cache(files, 16000, Path({str(out)!r}), progress=False, chunk=2)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    assert not any(n.endswith(".npy") and n.count(".") == 1 for n in cache_files(out))

    loader = Counter()
    monkeypatch.setattr(cache, "load_wav", loader)
    got = waveform_cache(clips, 16000, out, progress=False, chunk=2)
    assert loader.calls == 6
    ref = waveform_cache(clips, 16000, tmp_path / "ref", progress=False, chunk=2)
    assert np.array_equal(np.asarray(got), np.asarray(ref))


def _corrupt(folder: Path) -> tuple[Path, list[str]]:
    path = folder / "garbage.wav"
    path.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(range(256)) * 4)
    return path, ["unreadable"]


def _wrong_rate(folder: Path) -> tuple[Path, list[str]]:
    return write_sine(folder / "rate48k.wav", 440.0, sr=48000), ["44100", "48000"]


def _stereo(folder: Path) -> tuple[Path, list[str]]:
    return write_sine(folder / "stereo.wav", 440.0, channels=2), ["1 channel", "found 2"]


def _missing(folder: Path) -> tuple[Path, list[str]]:
    return folder / "missing.wav", ["no such file"]


def _half_second(folder: Path) -> tuple[Path, list[str]]:
    return write_sine(folder / "short.wav", 440.0, seconds=0.5), ["1 s", "22050 samples"]


def _three_seconds(folder: Path) -> tuple[Path, list[str]]:
    return write_sine(folder / "long.wav", 440.0, seconds=3.0), ["1 s", "132300 samples"]


def _header_only(folder: Path) -> tuple[Path, list[str]]:
    path = folder / "empty.wav"
    sf.write(path, np.zeros(0), SR, subtype="PCM_24")
    return path, ["found 0 samples"]


def _truncated(folder: Path) -> tuple[Path, list[str]]:
    whole = write_sine(folder / "whole.wav", 440.0).read_bytes()
    path = folder / "truncated.wav"
    path.write_bytes(whole[: len(whole) // 3])  # the header still promises 1 s
    return path, ["expected"]


def _eight_bit(folder: Path) -> tuple[Path, list[str]]:
    path = folder / "8bit.wav"
    sf.write(path, 0.5 * np.sin(np.arange(SR) / 10), SR, subtype="PCM_U8")
    return path, ["16-bit or more", "PCM_U8"]


def _loud_float(folder: Path) -> tuple[Path, list[str]]:
    path = folder / "loud.wav"
    sf.write(path, 1.5 * np.sin(np.arange(SR) / 10).astype(np.float32), SR, subtype="FLOAT")
    return path, ["within [-1, 1]", "1.500"]


def _nan_float(folder: Path) -> tuple[Path, list[str]]:
    path = folder / "nan.wav"
    x = 0.1 * np.ones(SR, dtype=np.float32)
    x[100:103] = np.nan
    sf.write(path, x, SR, subtype="FLOAT")
    return path, ["finite samples", "3 NaN"]


@pytest.mark.parametrize("make", [_corrupt, _wrong_rate, _stereo, _missing, _half_second, _three_seconds,
                                  _header_only, _truncated, _eight_bit, _loud_float, _nan_float])
def test_bad_audio_raises_naming_the_file(clips, tmp_path, make):
    bad, words = make(tmp_path)
    with pytest.raises(AudioFormatError) as err:
        load_wav(bad, seconds=1.0)
    msg = str(err.value)
    assert bad.name in msg and "expected" in msg
    for w in words:
        assert w in msg, msg
    assert isinstance(err.value, ValueError)
    # the cache builder reports the same error (rows before the bad clip are kept for a retry)
    with pytest.raises(AudioFormatError, match=bad.name):
        waveform_cache(clips[:3] + [bad], 16000, tmp_path / "cache", progress=False)
    assert not [n for n in cache_files(tmp_path / "cache") if n.count(".") == 1]


def test_changing_the_file_list_changes_the_key(clips, tmp_path):
    key = cache_key(clips, 32000)
    assert key == cache_key(list(clips), 32000)
    assert key != cache_key(clips[:-1], 32000)
    assert key != cache_key(clips[::-1], 32000)
    assert key != cache_key(clips, 16000)
    assert key != cache_key(clips, 32000, seconds=2.0)
    longer = write_sine(tmp_path / clips[0].name, 440.0, seconds=1.5)  # same name, other size
    assert key != cache_key([longer] + clips[1:], 32000)
    # touched, not changed: the same key (with a memo, the file is read again once: its times changed)
    before = cache_key(clips, 32000, memo=tmp_path / "memo.json")
    stat = os.stat(clips[1])
    os.utime(clips[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert cache_key(clips, 32000, memo=tmp_path / "memo.json") == before
    # rewritten in place with other samples, the same name and size, and its old modification time
    # restored (a twin regenerated with another seed, or a careless copy): a new key
    stat = os.stat(clips[1])
    data, sr = sf.read(clips[1], dtype="float32")
    sf.write(clips[1], -data, sr, subtype="PCM_24")
    os.utime(clips[1], ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (clips[1].stat().st_size, clips[1].stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    assert cache_key(clips, 32000, memo=tmp_path / "memo.json") != before
    a = waveform_cache(clips, 32000, tmp_path / "c", progress=False)
    b = waveform_cache(clips[:-1], 32000, tmp_path / "c", progress=False)
    assert Path(a.filename).name != Path(b.filename).name
    assert b.shape == (11, 32000)
    assert np.array_equal(np.asarray(a[:11]), np.asarray(b))


def test_a_rewritten_clip_is_decoded_again_and_stale_partial_builds_are_removed(tmp_path):
    folder = tmp_path / "audio"
    folder.mkdir()
    files = [write_sine(folder / f"c{i}.wav", 200.0 * (i + 1)) for i in range(3)]
    first = np.asarray(waveform_cache(files, 16000, tmp_path / "cache", progress=False)).copy()
    stat = os.stat(files[0])
    write_sine(files[0], 999.0)  # same name and size, other samples
    os.utime(files[0], ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the old time
    left = [tmp_path / "cache" / f"wave_{sr}_0123456789abcdef.{part}.npy"  # left by killed builds
            for sr in (16000, 32000) for part in ("partial", "done")]
    for f in left:
        f.write_bytes(b"x" * 1000)
    again = np.asarray(waveform_cache(files, 16000, tmp_path / "cache", progress=False))
    assert not np.array_equal(again[0], first[0]) and np.array_equal(again[1:], first[1:])
    assert not any(f.exists() for f in left)


def test_a_finished_cache_is_read_without_its_lock_or_any_write(clips, tmp_path, monkeypatch):
    """A classroom's shared, read-only artifacts folder: even a pure read took the build lock (``OSError:
    Read-only file system: .../.wave_16000_....npy.lock``). A finished, verified cache is read writing nothing."""
    from asc_lib import checkpoints, profiles

    first = np.array(waveform_cache(clips, 16000, tmp_path, progress=False))
    # the small BEATs' checkpoints, as a finished pre-training leaves them (their record written last)
    monkeypatch.setenv("ASC_ARTIFACTS", str(tmp_path / "artifacts"))
    (tmp_path / "twin").mkdir()
    (tmp_path / "twin" / "twin.json").write_text("{}")
    P = profiles.get_profile("ci")

    def pretrain(_profile, _twin, _seed, _device, paths, record):
        record.parent.mkdir(parents=True)
        for path in paths.values():
            path.write_bytes(b"weights")
        checkpoints._write_record(record, {"sl": []}, paths.values())

    monkeypatch.setattr(checkpoints, "_small_beats", pretrain)
    checkpoints.small_beats(P, tmp_path / "twin", seed=0, device="cpu")
    for lock in tmp_path.rglob(".*.lock"):
        lock.unlink()
    files = lambda: {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    before = files()
    monkeypatch.setattr(cache, "load_wav", Counter(fail_at=1))  # any decode would raise
    monkeypatch.setattr(checkpoints, "_small_beats", None)  # any pre-training too
    for folder in [tmp_path, *tmp_path.rglob("*")]:
        if folder.is_dir():
            folder.chmod(0o555)  # read-only for any user but root (what follows holds for root too)
    try:
        got = waveform_cache(clips, 16000, tmp_path, progress=False)
        beats = checkpoints.small_beats(P, tmp_path / "twin", seed=0, device="cpu")
    finally:
        for folder in [tmp_path, *tmp_path.rglob("*")]:
            if folder.is_dir():
                folder.chmod(0o755)
    assert np.array_equal(first, got) and beats["history"] == {"sl": []}
    assert files() == before  # no lock file made, nothing rewritten


def test_a_cache_to_build_in_a_read_only_folder_is_a_clear_error(clips, tmp_path, monkeypatch):
    """A cache that is missing (or unfinished) cannot be built in a read-only folder: the error names the
    cache and the folder and says what to do, instead of ``OSError: Read-only file system: ...lock``."""
    real = os.open

    def read_only(path, flags, *args):
        if flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(OSError, match=f"waveform cache: {tmp_path}/wave_16000_[0-9a-f]+.npy must be built, but this "
                                      f"process cannot write in {tmp_path} \\(Read-only file system\\).*ASC_ARTIFACTS"):
        waveform_cache(clips, 16000, tmp_path, progress=False)

"""What later steps trust of earlier ones: content hashes, one builder at a time, full disks, the runner's
children, out-of-range audio and damaged checkpoints (each case fails on the code before these checks)."""

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest
import soundfile as sf
import torch
from nbformat.v4 import new_code_cell, new_notebook

from asc_lib import book, checkpoints, integrity
from asc_lib.data import cache
from asc_lib.data.cache import waveform_cache
from asc_lib.data.synthetic import TWIN_SIZES, make_synthetic_tau
from asc_lib.data.tau import check_dataset, read_meta
from asc_lib.distill import load_student
from asc_lib.dsp import Resampler
from asc_lib.glue import labelled_audio
from asc_lib.integrity import IntegrityError, build_lock, is_locked
from asc_lib.models.beats import BEATs, BEATsCheckpointError, load_beats_checkpoint, save_beats_checkpoint
from asc_lib.models.tfsepnet import TFSepNet
from asc_lib.pretrain import small_config
from asc_lib.runs import read_manifest, write_manifest
from asc_lib.teachers import load_logits

ROOT = Path(__file__).resolve().parent.parent


def _flip(path: Path, offset: int = -3) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _wait_until(condition, seconds: float = 60, what: str = "condition"):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (dead, not yet reaped) is not running
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# ----------------------------------------------------------------------------- 1: cached results' hashes

@pytest.fixture
def teacher_run(tmp_path):
    folder = tmp_path / "teachers" / "SSL_SL-split100-abc"
    folder.mkdir(parents=True)
    np.save(folder / "train_logits.npy", np.arange(40, dtype=np.float32).reshape(4, 10))
    np.save(folder / "test_logits.npy", np.arange(20, dtype=np.float32).reshape(2, 10))
    torch.save({"state_dict": {}}, folder / "model.pt")
    return write_manifest(folder, {"teacher": "SSL+SL", "train_files": list("abcd"), "test_files": ["x", "y"]},
                          ["model.pt", "train_logits.npy", "test_logits.npy"])


def test_teacher_logits_with_flipped_bytes_are_refused(teacher_run):
    assert load_logits(teacher_run, "test").shape == (2, 10)  # intact: read, and its hash remembered
    path = Path(teacher_run["folder"]) / "test_logits.npy"
    _flip(path)  # the same size, a valid .npy: only the hash tells
    with pytest.raises(IntegrityError) as err:
        load_logits(teacher_run, "test")
    assert str(path) in str(err.value) and f"delete {teacher_run['folder']}" in str(err.value)
    assert load_logits(teacher_run, "train").shape == (4, 10)  # the other file is still good


def test_a_manifest_without_hashes_is_not_trusted(teacher_run):
    folder = Path(teacher_run["folder"])
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["files"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="no content hash recorded"):
        load_logits(read_manifest(folder), "train")


def test_a_damaged_student_model_is_refused(tmp_path):
    folder = tmp_path / "scratch-split5-abc"
    folder.mkdir()
    torch.save({"state_dict": TFSepNet().state_dict()}, folder / "model.pt")
    manifest = write_manifest(folder, {"student": "TF-SepNet"}, ["model.pt"])
    load_student(manifest)
    _flip(folder / "model.pt", offset=len((folder / "model.pt").read_bytes()) // 2)
    with pytest.raises(IntegrityError, match="model.pt: its bytes have changed"):
        load_student(manifest)


def test_a_changed_waveform_cache_is_refused(tmp_path):
    files = []
    for i in range(3):
        files.append(tmp_path / f"c{i}.wav")
        sf.write(files[-1], 0.3 * np.sin(np.arange(44100) * (i + 1) / 50), 44100, subtype="PCM_24")
    out = waveform_cache(files, 16000, tmp_path / "waves", progress=False)
    final = Path(out.filename)
    del out
    _flip(final)
    with pytest.raises(IntegrityError, match=f"{final.name}: its bytes have changed.*delete {final}"):
        waveform_cache(files, 16000, tmp_path / "waves", progress=False)


def test_a_changed_small_beats_checkpoint_is_refused(tmp_path):
    path = save_beats_checkpoint(BEATs(small_config()), tmp_path / "BEATs_small_SSL.pt")
    record = tmp_path / "history.json"
    checkpoints._write_record(record, {"pretrain": [1.0]}, [path])
    assert checkpoints._read_record(record, [path]) == {"pretrain": [1.0]}
    _flip(path, offset=len(path.read_bytes()) // 2)
    with pytest.raises(IntegrityError, match=f"BEATs_small_SSL.pt: its bytes have changed.*delete {tmp_path}"):
        checkpoints._read_record(record, [path])


# ----------------------------------------------------------------------------- 2, 6: one builder at a time

@pytest.mark.slow
def test_a_second_process_waits_naming_the_holder_or_gives_up(tmp_path, capsys):
    target = tmp_path / "thing"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from asc_lib.integrity import build_lock
        with build_lock({str(target)!r}, "test"):
            print("held", flush=True)
            time.sleep(3)
    """)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(TimeoutError, match=f"process {holder.pid} still holds"):
        with build_lock(target, "a test build", timeout=0.3, poll=0.05):
            pass
    with build_lock(target, "a test build", poll=0.05):  # waits for the holder to finish
        assert holder.poll() == 0
    assert f"a test build: process {holder.pid} is building {target}" in capsys.readouterr().err
    assert not is_locked(target)


@pytest.mark.slow
def test_two_processes_building_the_same_twin_give_one_complete_twin(tmp_path, capsys):
    root = tmp_path / "twin"
    stale = tmp_path / ".twin.partial-999999"  # left by a builder that died
    stale.mkdir()
    first = subprocess.Popen([sys.executable, "-c", "from asc_lib.data.synthetic import make_synthetic_tau; "
                              f"make_synthetic_tau({str(root)!r}, size='tiny', progress=False)"], cwd=ROOT)
    _wait_until(lambda: is_locked(root) or first.poll() is not None, what="the first build to start")
    make_synthetic_tau(root, size="tiny", progress=False)  # waits for the first, then reuses its twin
    assert first.wait(timeout=120) == 0
    err = capsys.readouterr().err
    assert f"process {first.pid} is building {root}" in err and "reusing" in err
    meta = read_meta(root)
    tiny = TWIN_SIZES["tiny"]
    assert len(meta) == 10 * tiny.clips_per_recording * (tiny.a_per_scene + 5 * tiny.other_per_scene
                                                         + 9 * tiny.test_per_scene)  # 10 scenes, 9 test devices
    assert all((root / f).is_file() for f in meta.filename)
    assert check_dataset(root) == []
    assert not list(tmp_path.glob(".twin.partial*"))


def test_processes_sharing_a_hash_memo_each_replace_it_whole(tmp_path):
    # each process rewrites its own file before every call, so every call writes the memo: with one shared
    # temporary name, one process's rename took the file from under another's (a CI failure)
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from asc_lib.data.cache import content_hashes
        mine = Path({str(tmp_path)!r}) / f"f{{sys.argv[1]}}"
        for i in range(150):
            mine.write_bytes(str(i).encode())
            assert content_hashes([mine], memo=Path({str(tmp_path / "memo.json")!r})) != ["missing"]
    """)
    workers = [subprocess.Popen([sys.executable, "-c", script, str(k)], cwd=ROOT, stderr=subprocess.PIPE,
                                text=True) for k in range(4)]
    results = [(w.wait(timeout=120), w.stderr.read()) for w in workers]
    assert all(code == 0 for code, _ in results), results
    assert isinstance(json.loads((tmp_path / "memo.json").read_text()), dict)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f0", "f1", "f2", "f3", "memo.json"]


@pytest.mark.slow
def test_concurrent_waveform_cache_builds_both_succeed(tmp_path):
    files = []
    for i in range(48):
        files.append(tmp_path / "audio" / f"c{i:02d}.wav")
        files[-1].parent.mkdir(exist_ok=True)
        sf.write(files[-1], 0.3 * np.sin(np.arange(44100) * (i + 1) / 70), 44100, subtype="PCM_24")
    waves = tmp_path / "waves"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from asc_lib.data import cache
        real = cache.load_wav
        def slow(*a, **k):
            time.sleep(0.05)
            return real(*a, **k)
        cache.load_wav = slow
        files = [Path(p) for p in {[str(f) for f in files]!r}]
        cache.waveform_cache(files, SR, Path({str(waves)!r}), progress=False, chunk=4)
    """)
    builders = [subprocess.Popen([sys.executable, "-c", script.replace("SR", str(sr))], cwd=ROOT,
                                 stderr=subprocess.PIPE, text=True) for sr in (16000, 16000, 32000)]
    results = [(b.wait(timeout=120), b.stderr.read()) for b in builders]
    assert all(code == 0 for code, _ in results), results
    a16 = waveform_cache(files, 16000, waves, progress=False)
    assert np.array_equal(a16[5], Resampler(44100, 16000)(torch.from_numpy(sf.read(files[5], dtype="float32")[0])).numpy())
    assert waveform_cache(files, 32000, waves, progress=False).shape == (48, 32000)
    assert not list(waves.glob("*.partial.npy")) and not list(waves.glob("*.done.npy"))


# ----------------------------------------------------------------------------- 3: audio in range

def test_a_clip_at_full_scale_plays_after_resampling_and_a_bad_one_is_named():
    square = np.sign(np.sin(2 * np.pi * 440 * np.arange(44100) / 44100)).astype(np.float32)  # peaks at 1.0
    wave = Resampler(44100, 16000)(torch.from_numpy(square)).numpy()
    assert np.abs(wave).max() > 1.0  # what the twin's clips at full scale do
    html = labelled_audio(wave, 16000, "bus", clip="audio/bus-x.wav").data
    assert "scaled by 1/" in html and "<audio" in html
    assert "scaled" not in labelled_audio(0.5 * square, 44100, "bus").data  # in range: played as is
    wave[7] = np.nan
    with pytest.raises(ValueError, match="audio/bus-x.wav: expected finite samples, got 1 NaN"):
        labelled_audio(wave, 16000, "bus", clip="audio/bus-x.wav")


# ----------------------------------------------------------------------------- 4: full disk

def test_a_full_disk_is_a_clear_error_before_the_memory_map_is_written(tmp_path, monkeypatch):
    files = [tmp_path / "c.wav"]
    sf.write(files[0], np.zeros(44100), 44100, subtype="PCM_24")
    monkeypatch.setattr(integrity.shutil, "disk_usage", lambda p: type("Usage", (), {"free": 1000}))
    with pytest.raises(OSError, match=r"needs 0\.1 MB free in .*waves, which has 0\.0 MB") as err:
        waveform_cache(files, 32000, tmp_path / "waves", progress=False)
    assert err.value.errno == errno.ENOSPC
    assert not list((tmp_path / "waves").glob("*.npy"))  # nothing half-written


def test_running_out_of_space_while_reserving_is_a_clear_error(tmp_path, monkeypatch):
    files = [tmp_path / "c.wav"]
    sf.write(files[0], np.zeros(44100), 44100, subtype="PCM_24")

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(integrity.os, "posix_fallocate", full)
    with pytest.raises(OSError, match=r"needs 0\.1 MB in .*waves, which ran out of space"):
        waveform_cache(files, 32000, tmp_path / "waves", progress=False)


# ----------------------------------------------------------------------------- 5: the runner's children

def _slow_book(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "chapters").mkdir()
    pids = tmp_path / "pids.json"
    cells = [new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
             new_code_cell("import json, os, time\nimport pandas as pd\nfrom asc_lib import results\n"
                           "results.save(pd.DataFrame({'a': [1]}), 'data')\n"
                           f"open({str(pids)!r}, 'w').write(json.dumps([os.getpid(), os.getppid()]))\n"
                           "time.sleep(120)")]
    nbformat.write(new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "language": "python",
                                                                      "display_name": "Python 3"}}),
                   tmp_path / "chapters" / "01_slow.ipynb")
    return tmp_path, pids


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_a_stopped_runner_takes_papermill_and_the_kernel_with_it(tmp_path, how):
    root, pids = _slow_book(tmp_path)
    running = lambda: {p for p in Path(book.tempfile.gettempdir()).glob(f"{book.TMP_PREFIX}*") if is_locked(p / "run")}
    before = running()  # other runners on this machine
    runner = subprocess.Popen([sys.executable, "-c", "from pathlib import Path; from asc_lib import book; "
                               f"book.exit_on_sigterm(); book.run(Path({str(root)!r}), 'ci', None, {{}})"], cwd=ROOT)
    _wait_until(pids.exists, 120, "the chapter to start")
    time.sleep(0.5)
    kernel, papermill = json.loads(pids.read_text())
    temp = list(running() - before)
    assert len(temp) == 1, temp
    runner.send_signal(how)
    runner.wait(timeout=30)
    _wait_until(lambda: not _alive(papermill) and not _alive(kernel), 15, "papermill and its kernel to stop")
    assert not (root / "book" / "results" / "data.csv").exists()  # no result without its notebook
    assert not (root / "book" / "01_slow.ipynb").exists()
    if how == signal.SIGTERM:  # the runner cleaned up itself
        assert not temp[0].exists()
    else:  # nothing can clean up after SIGKILL: the next run removes the folder
        assert temp[0].exists()
        book.remove_orphans()
        assert not temp[0].exists()


@pytest.mark.slow
def test_results_reach_the_results_folder_with_their_chapter(tmp_path):
    (tmp_path / "chapters").mkdir()
    cells = [new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
             new_code_cell("import pandas as pd\nfrom asc_lib import results\n"
                           "results.save(pd.DataFrame({'a': [x]}), 'data')")]
    nbformat.write(new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "language": "python",
                                                                      "display_name": "Python 3"}}),
                   tmp_path / "chapters" / "01_ok.ipynb")
    assert book.run(tmp_path, "ci", None, {"x": 7}) == 0
    assert (tmp_path / "book" / "results" / "data.csv").read_text().splitlines()[1] == "0,7"


# ----------------------------------------------------------------------------- 7: checkpoints

@pytest.mark.parametrize("damage, message", [
    (lambda sd: sd.update({k: v.to(torch.int64) for k, v in list(sd.items())[:2]}), "not floating point"),
    (lambda sd: next(iter(sd.values())).view(-1).__setitem__(0, float("nan")), "NaN or infinite"),
])
def test_checkpoints_with_integer_or_nan_weights_are_refused(tmp_path, damage, message):
    model = BEATs(small_config())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    damage(state)
    path = tmp_path / "bad.pt"
    torch.save({"cfg": model.cfg.to_dict(), "model": state}, path)
    with pytest.raises(BEATsCheckpointError, match=message) as err:
        load_beats_checkpoint(path)
    assert str(path) in str(err.value) and next(iter(state)) in str(err.value)

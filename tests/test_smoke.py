"""The `full` profile's smoke run: its profile, the TAU22 fixture from official split lines, the cut,
the checks before training (the whole run on the fixtures is `python3 tasks.py smoke`)."""

import csv
import shutil
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from asc_lib import book, checkpoints, preflight, profiles
from asc_lib.data import DEVICES, SCENES, dataset, tau
from asc_lib.data.download import DownloadError
from asc_lib.models.beats import BEATs, BEATsCheckpointError, released_config, save_beats_checkpoint
from asc_lib.smoke import LINES, make_tau22_fixture
from test_teachers import TINY_BEATS

# the settings a smoke run may change: how much, never what (models, inputs, optimisers, schedules, augmentations)
AMOUNTS = {"name", "cut", "splits", "epochs", "steps_per_epoch", "batch_size", "warmup_epochs", "restart_epochs",
           "clips_per_scene", "twin_size",
           "pretrain_epochs", "pretrain_batch_size", "sl_epochs", "probe_steps", "tokenizer_epochs", "calibration_clips"}


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory):
    return make_tau22_fixture(tmp_path_factory.mktemp("fixture") / "tau22")


def test_smoke_profile_cuts_only_amounts():
    full, smoke = profiles.get_profile("full"), profiles.get_profile("full-smoke")
    changed = {name.rsplit(".", 1)[-1] for name, _, _ in profiles.differences(full, smoke)}
    assert changed <= AMOUNTS, changed - AMOUNTS
    assert smoke.student.n_mels == 512 and smoke.teachers.splits == smoke.student.splits == (5, 100)
    for a, b in ((full.teachers.finetune, smoke.teachers.finetune), (full.student.recipe, smoke.student.recipe)):
        assert (a.optimizer, a.lr, a.schedule, a.betas) == (b.optimizer, b.lr, b.schedule, b.betas)
        assert b.epochs == 2 and b.steps_per_epoch == 2
    assert smoke.teachers.dir_p == full.teachers.dir_p > 0 and smoke.student.dir_p == full.student.dir_p > 0


def test_fixture_lines_are_official_split_lines():
    rows = {}
    for name in ("split5", "split10", "split25", "split50", "split100", "test"):
        with open(LINES / f"{name}.csv", newline="") as f:
            body = list(csv.reader(f, delimiter="\t"))
        assert body[0] == ["filename", "scene_label"]
        assert all(tau.NAME.match(r[0]) and r[0].split("/")[1].startswith(r[1] + "-") for r in body[1:])
        rows[name] = {r[0] for r in body[1:]}
    assert "audio/airport-lisbon-1000-40000-0-a.wav" in rows["split5"]  # the first line of the official split5
    assert rows["split5"] < rows["split10"] < rows["split25"] < rows["split50"] <= rows["split100"]
    assert not rows["split100"] & rows["test"] and len(rows["test"]) == 300


def test_fixture_is_a_valid_tau22_folder(fixture_root):
    meta = tau.read_meta(fixture_root)
    assert len(meta) == 800 and tau.check_dataset(fixture_root, meta) == []
    assert tau.check_audio(fixture_root, meta) == []
    info = sf.info(meta.path.iloc[0])
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (44100, 1, 44100, "PCM_24")
    assert set(tau.read_split(fixture_root, "test", meta).device) == set(DEVICES)


def test_cut_keeps_every_scene_and_device_and_a_validation_recording(fixture_root, tmp_path):
    cut = tau.write_cut(fixture_root, tmp_path / "cut", clips_per_recording=2)
    meta = tau.read_meta(cut)
    assert tau.check_dataset(cut, meta) == [] and tau.check_audio(cut, meta) == []
    for split in tau.SPLITS:
        part = tau.read_split(cut, split, meta)
        assert len(part) == 2 * 2 * len(SCENES) and set(part.device) == {"a", "b", "c", "s1", "s2", "s3"}
        assert (part.groupby("scene").recording.nunique() == 2).all()  # one to train on, one to hold out
    assert set(tau.read_split(cut, "test", meta).device) == set(DEVICES)
    assert os.path.samefile(cut / meta.filename.iloc[0], fixture_root / meta.filename.iloc[0])  # hard links


def test_dataset_prepare_cuts_for_a_smoke_profile_only(fixture_root, tmp_path, monkeypatch):
    monkeypatch.setenv("ASC_ARTIFACTS", str(tmp_path))
    assert dataset.prepare(str(fixture_root), profiles.get_profile("full")) == fixture_root
    cut = dataset.prepare(str(fixture_root), profiles.get_profile("full-smoke"))
    assert cut.parent == tmp_path / "full-smoke" and len(tau.read_meta(cut)) == 40


def test_check_audio_names_each_bad_clip(fixture_root, tmp_path):
    cut = tau.write_cut(fixture_root, tmp_path / "cut", clips_per_recording=1)
    meta = tau.read_meta(cut)
    short, slow = cut / meta.filename.iloc[0], cut / meta.filename.iloc[1]
    for path in (short, slow):
        path.unlink()  # a hard link: do not touch the fixture's file
    sf.write(short, np.zeros(22050), 44100, subtype="PCM_24")
    sf.write(slow, np.zeros(22050), 22050, subtype="PCM_16")
    problems = tau.check_audio(cut, meta)
    assert len(problems) == 2
    assert str(short) in problems[0] and "22050 samples" in problems[0]
    assert str(slow) in problems[1] and "22050 Hz" in problems[1]
    assert tau.main([str(cut)]) == 1


def _official_format(folder: Path, **cfg) -> Path:
    """The released pre-trained file's name and format with ``cfg`` changes (small, so that it is quick)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BEATs(replace(released_config(), **cfg))
    return save_beats_checkpoint(model, folder / checkpoints.OFFICIAL["SSL"])


def test_official_checkpoints_are_checked_against_the_released_architecture(tmp_path):
    _official_format(tmp_path, encoder_layers=1)
    with pytest.raises(BEATsCheckpointError, match=r"encoder_layers=1 \(released: 12\)"):
        checkpoints.official(tmp_path, profiles.get_profile("full-smoke"))
    with pytest.raises(DownloadError, match="is not the official BEATs_iter3_plus_AS2M.pt: size"):
        checkpoints.official(tmp_path, profiles.get_profile("full"))  # not smoke: size and SHA-256 too


@pytest.fixture
def small_run(tmp_path, monkeypatch):
    monkeypatch.setenv("ASC_ARTIFACTS", str(tmp_path / "artifacts"))
    ci = profiles.get_profile("ci")
    profile = replace(ci, data=replace(ci.data, twin_size="tiny"), teachers=replace(ci.teachers, splits=(5,)))
    root = dataset.prepare("", profile)
    meta = tau.read_meta(root)
    torch.manual_seed(0)
    ckpts = {k: save_beats_checkpoint(BEATs(TINY_BEATS), tmp_path / f"{k}.pt") for k in ("SSL", "SSL+SL")}
    return profile, root, meta, dataset.waves(meta, 16000, profile), ckpts


def test_preflight_measures_and_estimates(small_run):
    profile, root, meta, w16, ckpts = small_run
    table = preflight.check(profile, root=root, meta=meta, w16=w16, checkpoints=ckpts, device="cpu")
    assert list(table.index) == ["dataset", "checkpoint SSL", "checkpoint SSL+SL", "device", "time: teachers",
                                 "time: students", "disk"]
    assert (table.verdict != "FAIL").all()
    assert f"{len(meta):,} clips" in table.found["dataset"] and "4 runs" in table.found["time: teachers"]
    assert all(v > 0 for v in table.attrs["seconds"].values())


def test_preflight_stops_on_a_broken_checkpoint_and_a_full_disk(small_run, monkeypatch):
    profile, root, meta, w16, ckpts = small_run
    ckpts["SSL+SL"].write_bytes(ckpts["SSL+SL"].read_bytes()[:1000])  # truncated
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda _: type("Usage", (), {"free": 10**6})())
    with pytest.raises(preflight.PreflightError, match="2 check.*checkpoint SSL\\+SL: .*SSL\\+SL.pt.*disk: "):
        preflight.check(profile, root=root, meta=meta, w16=w16, checkpoints=ckpts, device="cpu")


def test_runner_smoke_runs_only_a_profile_with_a_smoke_version_outside_the_checkout(tmp_path, capsys):
    with pytest.raises(SystemExit):
        book.main(["run", "--profile", "ci", "--smoke", "--into", str(tmp_path)])
    assert "profile 'ci' has no smoke version" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        book.main(["run", "--profile", "full", "--smoke", "--into", str(tmp_path)])
    assert "pass -p data_root DIR -p beats_dir DIR" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        book.main(["run", "--profile", "full", "--smoke", "--into", str(Path(book.__file__).parent),
                   "-p", "data_root", "d", "-p", "beats_dir", "b"])
    assert "choose a folder outside the checkout" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a smoke profile by name would write into book/
        book.main(["run", "--profile", "full-smoke"])
    assert "invalid choice: 'full-smoke'" in capsys.readouterr().err


def test_cut_refuses_a_scene_with_one_segment_naming_the_file(fixture_root, tmp_path):
    folder = tmp_path / "one-segment"
    shutil.copytree(fixture_root, folder, ignore=shutil.ignore_patterns("audio"))
    (folder / "audio").symlink_to(fixture_root / "audio")
    lines = (folder / "split5.csv").read_text().splitlines(keepends=True)
    airport = [line for line in lines[1:] if line.split("\t")[1].strip() == "airport"]
    keep = {line.split("-")[3] for line in airport[:1]}  # the segment of the first airport recording
    (folder / "split5.csv").write_text("".join(line for line in lines if not (
        line in airport and line.split("-")[3] not in keep)))
    with pytest.raises(tau.DatasetFormatError, match=r"split5\.csv: scene 'airport' has 1 recording"):
        tau.write_cut(folder, tmp_path / "cut", clips_per_recording=1)


def test_prepare_checks_the_audio_once_before_any_cache(fixture_root, tmp_path, monkeypatch):
    monkeypatch.setenv("ASC_ARTIFACTS", str(tmp_path / "artifacts"))
    cut = tau.write_cut(fixture_root, tmp_path / "cut", clips_per_recording=1)
    bad = cut / tau.read_meta(cut).filename.iloc[0]
    bad.unlink()  # a hard link: the fixture keeps its file
    sf.write(bad, np.zeros(44100), 22050, subtype="PCM_16")
    with pytest.raises(tau.DatasetFormatError, match=r"(?s)1 clip\(s\) with bad audio .*found 22050 Hz"):
        dataset.prepare(str(cut), profiles.get_profile("full"))
    bad.unlink()
    sf.write(bad, np.zeros(44100), 44100, subtype="PCM_24")
    assert dataset.prepare(str(cut), profiles.get_profile("full")) == cut
    assert len(list((tmp_path / "artifacts" / "full").glob("audio-checked-*"))) == 1  # not read again

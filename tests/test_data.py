"""The TAU22 reader and the synthetic twin written in its layout."""

import hashlib
import os
import re
import shutil

import numpy as np
import pytest
import soundfile as sf

from asc_lib.data import DEVICES, SCENES
from asc_lib.data import synthetic
from asc_lib.data.synthetic import TWIN_SIZES, make_sound_pool, make_synthetic_tau
from asc_lib.data.tau import SPLITS, DatasetFormatError, is_tau_folder, read_meta, read_split, split_summary


@pytest.fixture(scope="session")
def twin(tmp_path_factory):
    return make_synthetic_tau(tmp_path_factory.mktemp("data") / "twin", size="tiny", seed=0, progress=False)


def _digest(folder):
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return h.hexdigest()


def test_twin_has_the_tau22_layout_and_formats(twin):
    assert is_tau_folder(twin)
    assert (twin / "meta.csv").read_text().splitlines()[0] == "filename\tscene_label\tidentifier\tsource_label"
    for split in ("split5", "split100", "test"):
        assert (twin / f"{split}.csv").read_text().splitlines()[0] == "filename\tscene_label"
    meta = read_meta(twin)
    info = sf.info(meta.path[0])
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (44100, 1, "PCM_24", 44100)
    assert set(meta.scene) == set(SCENES) and set(meta.device) == set(DEVICES)
    assert len(meta) == len(list((twin / "audio").glob("*.wav")))


def test_twin_splits_are_nested_whole_recordings_and_disjoint_from_test(twin):
    meta = read_meta(twin)
    parts = {s: read_split(twin, s, meta) for s in (*SPLITS, "test")}
    for small, big in zip(SPLITS, SPLITS[1:]):
        assert set(parts[small].filename) <= set(parts[big].filename)
    assert len(parts[5]) < len(parts[100])
    test, train = parts["test"], parts[100]
    assert not set(test.recording) & set(train.recording)
    assert not set(test.identifier) & set(train.identifier)  # test locations are unseen
    kept = TWIN_SIZES["tiny"].clips_per_recording  # of each 10 s recording (10 in TAU22)
    for part in parts.values():  # a recording is all in or all out: its clips, per recording and device
        assert (part.groupby(["recording", "device"]).size() == kept).all()
    assert {"s4", "s5", "s6"} <= set(test.device) and not {"s4", "s5", "s6"} & set(train.device)
    for s in SPLITS:
        assert parts[s].device.value_counts().idxmax() == "a"  # device a dominates every train split
        assert set(parts[s][parts[s].device == "a"].scene) == set(SCENES)
    assert test.groupby("device").size().nunique() == 1  # every device records the same test scenes


def test_same_seed_writes_byte_identical_files(twin, tmp_path, capsys):
    again = make_synthetic_tau(tmp_path / "again", size="tiny", seed=0, progress=False)
    assert _digest(again) == _digest(twin)
    out, err = capsys.readouterr()
    assert out == "" and "540 clips" in err
    other = read_meta(make_synthetic_tau(tmp_path / "other", size="tiny", seed=1, progress=False))
    first = read_meta(twin)
    assert not np.array_equal(sf.read(first.path[0])[0], sf.read(other.path[0])[0])


def test_twin_is_reused_and_never_overwrites_foreign_folders(twin, tmp_path, capsys):
    stamp = (twin / "meta.csv").stat().st_mtime_ns
    assert make_synthetic_tau(twin, size="tiny", seed=0, progress=False) == twin
    assert (twin / "meta.csv").stat().st_mtime_ns == stamp
    out, err = capsys.readouterr()
    assert out == "" and "reusing" in err  # cached or fresh, a chapter's printed results stay the same
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a synthetic twin"):
        make_synthetic_tau(foreign, size="tiny", progress=False)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_pool_has_tagged_general_sounds(twin):
    rows = (twin / "pool" / "tags.csv").read_text().splitlines()
    assert rows[0] == "filename\ttags" and len(rows) - 1 == TWIN_SIZES["tiny"].pool_clips
    name, tags = rows[1].split("\t")
    assert sf.info(twin / "pool" / name).samplerate == 16000 and 1 <= len(tags.split(",")) <= 3


@pytest.mark.slow
def test_pool_mixes_scenes_and_sources_through_devices_of_their_own(tmp_path):
    pool = make_sound_pool(tmp_path / "pool", 40, seed=3)
    rows = [r.split("\t") for r in (pool / "tags.csv").read_text().splitlines()[1:]]
    scene_like = synthetic.pool_scene_like(40, 3)
    assert 10 < scene_like.sum() < 30  # about half are scene-like mixtures
    tags = [set(t.split(",")) for _, t in rows]
    assert all(t <= set(synthetic.POOL_SOURCES) for t in tags)
    # a scene-like clip is tagged by every source it mixes (a scene's recipe has three to five)
    assert min(len(t) for t, s in zip(tags, scene_like) if s) >= 3
    assert max(len(t) for t, s in zip(tags, scene_like) if not s) <= 3
    a, b = (sf.read(pool / rows[i][0])[0] for i in (0, 1))
    again = make_sound_pool(tmp_path / "again", 2, seed=3)
    assert np.array_equal(sf.read(again / rows[0][0])[0], a)  # a pure function of the seed
    gains = [synthetic.random_device(np.random.default_rng(i), 16000, 16000)[0] for i in range(3)]
    assert not np.allclose(gains[0], gains[1]) and not np.allclose(gains[1], gains[2])


def test_a_share_of_locations_sounds_half_like_a_sibling_scene():
    mixes = [synthetic.location_mix("tram", "vienna", loc, 0) for loc in range(400)]
    own = {f for f, _, _ in synthetic.RECIPES["tram"]}
    hybrid = [m for m in mixes if len(m) > len(synthetic.RECIPES["tram"]) + 1]
    assert abs(len(hybrid) / len(mixes) - synthetic.OVERLAP) < 0.07
    siblings = {f for g in synthetic.GROUPS if "tram" in g for s in g if s != "tram"
                for f, _, _ in synthetic.RECIPES[s]}
    for m in hybrid[:20]:
        borrowed = sum(w for f, w, _ in m[len(synthetic.RECIPES["tram"]):] if f in siblings)
        kept = sum(w for f, w, _ in m[:len(synthetic.RECIPES["tram"])] if f in own)
        assert 0.2 < borrowed / (borrowed + kept) < 0.8  # about half the sound is the sibling's


def test_split_summary_counts_from_the_files(twin):
    table = split_summary(twin)
    assert list(table.index) == ["5 %", "10 %", "25 %", "50 %", "100 %", "test"]
    assert table.loc["100 %", "clips"] == len(read_split(twin, 100))
    assert table.loc["test", "n_s4"] > 0 and table.loc["100 %", "n_s4"] == 0


@pytest.fixture
def copy(twin, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(twin, dst, ignore=shutil.ignore_patterns("audio", "pool"))
    (dst / "audio").mkdir()
    return dst


def test_split_with_a_wrong_header_names_the_file(copy):
    (copy / "split5.csv").write_text("file,label\naudio/x.wav,bus\n")
    with pytest.raises(DatasetFormatError, match=r"split5\.csv: expected the tab-separated header filename \| scene_label"):
        read_split(copy, 5)


def test_split_naming_a_clip_not_in_meta(copy):
    with open(copy / "split10.csv", "a") as f:
        f.write("audio/bus-lyon-9-9-0-a.wav\tbus\n")
    with pytest.raises(DatasetFormatError, match=r"split10\.csv, line \d+: audio/bus-lyon-9-9-0-a\.wav is not in .*meta\.csv"):
        read_split(copy, 10)


def test_split_label_disagreeing_with_meta(copy):
    lines = (copy / "test.csv").read_text().splitlines()
    name, scene = lines[1].split("\t")
    lines[1] = f"{name}\t{'park' if scene != 'park' else 'bus'}"
    (copy / "test.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match="test.csv, line 2: .* is labelled"):
        read_split(copy, "test")


def test_meta_problems_name_file_and_line(copy):
    lines = (copy / "meta.csv").read_text().splitlines()
    (copy / "meta.csv").write_text("\n".join(lines[:2] + ["audio/not-a-tau-name.wav\tbus\tlyon-1\ta"]) + "\n")
    with pytest.raises(DatasetFormatError, match=r"meta\.csv, line 3: 'audio/not-a-tau-name\.wav' is not"):
        read_meta(copy)
    name, scene, ident, device = lines[1].split("\t")
    (copy / "meta.csv").write_text("\n".join([lines[0], f"{name}\t{scene}\t{ident}\tb"]) + "\n")
    with pytest.raises(DatasetFormatError, match="disagree with the file name"):
        read_meta(copy)
    latin1 = "\n".join([lines[0], lines[1], lines[2].replace("\ta", "\t\u00e4")]) + "\n"
    (copy / "meta.csv").write_bytes(latin1.encode("latin-1"))  # a byte that is not UTF-8, on line 3
    with pytest.raises(DatasetFormatError, match=r"meta\.csv, line 3: byte 0xe4 is not UTF-8 text"):
        read_meta(copy)
    (copy / "meta.csv").unlink()
    with pytest.raises(DatasetFormatError, match=r"meta\.csv: file not found"):
        read_meta(copy)
    with pytest.raises(ValueError, match="unknown split 7"):
        read_split(copy, 7)


def _copy_lists(twin, dest):
    """The twin's meta.csv and split files (not the audio) in ``dest``, to be damaged by a test."""
    (dest / "audio").mkdir(parents=True)
    for f in twin.glob("*.csv"):
        shutil.copy(f, dest / f.name)
    return dest


def _rows(path):
    return path.read_text().splitlines()


def test_the_twin_passes_the_integrity_check(twin, capsys):
    from asc_lib.data import tau

    assert tau.check_dataset(twin) == []
    assert tau.main([str(twin)]) == 0
    assert "splits nested, disjoint from test, whole recordings" in capsys.readouterr().out


@pytest.mark.parametrize("damage, expected", [
    ("test_clip_in_train", r"split100.csv: 1 recording\(s\) also in test.csv"),
    ("split100_is_test", r"split100.csv: .* also in test.csv"),
    ("not_nested", r"split5.csv: 1 clip\(s\) not in split10.csv, e.g. .*: the splits must be nested"),
    ("duplicate_row", r"split25.csv: 1 clip\(s\) listed twice"),
    ("duplicate_test_row", r"test.csv: 1 clip\(s\) listed twice"),
    ("header_only_test", r"test.csv: no clip of scene\(s\) airport, bus"),
    ("three_scenes", r"split5.csv: no clip of scene\(s\) .*every split needs all 10 scenes"),
    ("meta_three_scenes", r"test.csv: no clip of scene\(s\) .*every split needs all 10 scenes"),
    ("part_of_a_recording", r"split50.csv: 1 recording\(s\) only in part"),
])
def test_damaged_split_files_are_refused_naming_the_file(twin, tmp_path, damage, expected, capsys):
    from asc_lib import profiles
    from asc_lib.data import dataset, tau

    root = _copy_lists(twin, tmp_path / "tau")
    lines = {name: _rows(root / f"{name}.csv") for name in ("split5", "split10", "split25", "split50",
                                                            "split100", "test")}
    write = lambda name, rows: (root / f"{name}.csv").write_text("\n".join(rows) + "\n")
    if damage == "test_clip_in_train":
        write("split100", lines["split100"] + [lines["test"][1]])
    elif damage == "split100_is_test":
        write("split100", lines["test"])
    elif damage == "not_nested":
        extra = next(r for r in lines["split100"][1:] if r not in lines["split10"])
        write("split5", lines["split5"] + [extra])
    elif damage == "duplicate_row":
        write("split25", lines["split25"] + [lines["split25"][1]])
    elif damage == "duplicate_test_row":
        write("test", lines["test"] + [lines["test"][-1]])
    elif damage == "header_only_test":
        write("test", lines["test"][:1])
    elif damage == "three_scenes":
        keep = ("airport", "bus", "metro")
        write("split5", [r for r in lines["split5"] if r == lines["split5"][0] or r.endswith(keep)])
    elif damage == "meta_three_scenes":  # a dataset of 3 scenes: every file consistent, test included
        keep = lambda rows: [r for r in rows if r == rows[0] or r.split("\t")[0].startswith(
            ("audio/airport-", "audio/bus-", "audio/metro-"))]
        write("meta", keep(_rows(root / "meta.csv")))
        for name, rows in lines.items():
            write(name, keep(rows))
    elif damage == "part_of_a_recording":
        write("split50", [r for r in lines["split50"] if r != lines["split50"][1]])
    problems = tau.check_dataset(root)
    assert any(re.search(expected, p) for p in problems), problems
    assert all(str(root) in p for p in problems)  # every problem names its file
    with pytest.raises(DatasetFormatError, match="problem"):
        dataset.prepare(str(root), profiles.get_profile("ci"))
    assert tau.main([str(root)]) == 1 and re.search(expected, capsys.readouterr().out)


def test_a_rewritten_clip_changes_the_data_id_and_a_moved_folder_keeps_it(twin, tmp_path):
    from asc_lib.data import tau

    root = shutil.copytree(twin, tmp_path / "here")
    memo = tmp_path / "hashes.json"
    before = tau.data_id(root, memo)
    moved = shutil.move(root, tmp_path / "there")
    assert tau.data_id(moved, memo) == before  # a move is not a change: the runs on it are reused
    clip = moved / read_meta(moved).filename[0]
    stat, data = os.stat(clip), bytearray(clip.read_bytes())
    data[-1] ^= 1  # one bit of the last sample, same size
    clip.write_bytes(bytes(data))
    os.utime(clip, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the old modification time
    assert tau.data_id(moved, memo) != before


def test_a_finished_twin_is_reused_without_taking_its_lock(twin):
    """A read-only artifacts folder holds a finished twin: reading it must not create the build lock."""
    lock = twin.with_name(f".{twin.name}.lock")
    lock.unlink(missing_ok=True)
    assert make_synthetic_tau(twin, size="tiny", seed=0, progress=False) == twin
    assert not lock.exists()

"""Run bookkeeping (asc_lib.runs): a run's folder and key, its lock and manifest, "completed", the scores;
and the import graph it keeps: teachers and students both stand on it, neither on the other for it."""

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from asc_lib import runs
from asc_lib.data import DEVICES, SCENES
from asc_lib.integrity import is_locked

LIB = Path(__file__).resolve().parent.parent / "asc_lib"


def test_a_run_folder_is_named_by_its_run_and_keyed_by_its_whole_config(monkeypatch, tmp_path):
    monkeypatch.setenv("ASC_ARTIFACTS", str(tmp_path))
    config = {"teacher": "SSL + SSL+SL", "split": 25, "settings": {"lr": 1e-3, "epochs": 6}}
    folder, key = runs.run_folder("students", "SSL + SSL+SL", 25, config, "ci")
    assert folder == tmp_path / "ci" / "students" / f"SSL-SSL_SL-split25-{key}" and len(key) == 12
    reordered = {"settings": {"epochs": 6, "lr": 1e-3}, "split": 25, "teacher": "SSL + SSL+SL"}
    assert runs.run_folder("students", "SSL + SSL+SL", 25, reordered, "ci") == (folder, key)  # order is no part
    other = {**config, "settings": {"lr": 1e-3, "epochs": 7}}
    assert runs.run_folder("students", "SSL + SSL+SL", 25, other, "ci")[1] != key
    assert runs.run_folder("teachers", "SSL*", 5, config, "ci")[0].name == f"SSLstar-split5-{key}"


def test_a_claimed_run_is_locked_then_reused_once_its_manifest_is_written(tmp_path, capsys):
    folder = tmp_path / "students" / "scratch-split100-abc"
    with runs.claim(folder, "students", "scratch", 100) as done:
        assert done is None and folder.is_dir() and is_locked(folder)  # made ready, and ours alone
        (folder / "model.pt").write_bytes(b"weights")
        written = runs.write_manifest(folder, {"student": "TF-SepNet", "folder": "/elsewhere"}, ["model.pt"])
    assert not is_locked(folder)
    assert written["folder"] == str(folder) and set(written["files"]) == {"model.pt"}
    on_disk = json.loads((folder / "manifest.json").read_text())
    assert "folder" not in on_disk and on_disk["student"] == "TF-SepNet"  # no path kept: the folder can move
    capsys.readouterr()
    with runs.claim(folder, "students", "scratch", 100) as again:
        assert again == written == runs.read_manifest(folder)
    assert f"students: scratch on split 100: reusing {folder}" in capsys.readouterr().err


def test_scores_are_macro_class_and_device_accuracy_in_percent():
    y = np.array([0, 0, 1, 1])
    logits = np.eye(len(SCENES))[[0, 1, 1, 1]]  # one miss: a clip of class 0 on device 1
    s = runs.scores(y, logits, np.array([0, 1, 0, 1]))
    assert s["macro"] == 75  # over the classes present: (50 + 100) / 2
    assert s["class"][SCENES[0]] == 50 and s["class"][SCENES[1]] == 100 and list(s["class"]) == list(SCENES)
    assert s["device"] == {DEVICES[0]: 100, DEVICES[1]: 50}  # device 1 holds the miss


def test_no_module_imports_run_bookkeeping_from_the_teachers():
    """The arrow runs one way: teachers and students both import their books from asc_lib.runs."""
    books = set(runs.__all__)
    for path in sorted(LIB.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[-1] == "teachers":
                names = {a.name for a in node.names}
                assert not names & (books | {"_scores"}), f"{path.name} imports {names & books} from teachers"
    from asc_lib import distill, teachers
    assert not any(hasattr(teachers, name) and getattr(teachers, name) is not getattr(runs, name)
                   for name in books)  # no second copy left behind
    assert distill.write_manifest is runs.write_manifest and teachers.write_manifest is runs.write_manifest


def test_a_finished_run_is_read_without_its_lock(tmp_path, monkeypatch):
    """A classroom's read-only cache of finished runs: reading one creates nothing (no lock file)."""
    from asc_lib import integrity

    folder = tmp_path / "teachers" / "SSL-split5-abc"
    folder.mkdir(parents=True)
    runs.write_manifest(folder, {"teacher": "SSL"})
    before = sorted(p.name for p in tmp_path.rglob("*"))

    def no_lock(*args, **kwargs):
        raise AssertionError("a finished run took its build lock")

    monkeypatch.setattr(runs, "build_lock", no_lock)
    monkeypatch.setattr(integrity, "build_lock", no_lock)
    with runs.claim(folder, "teachers", "SSL", 5) as done:
        assert done["teacher"] == "SSL"
    assert sorted(p.name for p in tmp_path.rglob("*")) == before

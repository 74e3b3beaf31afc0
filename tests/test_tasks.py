"""tasks.py's set-up of .venv: a broken one is repaired or explained, never a raw traceback.

Every virtual environment here is made under tmp_path, from a copy of tasks.py or with its ROOT and VENV
pointed there: the checkout's .venv is never touched, and nothing real is installed.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

import tasks

TASKS = Path(tasks.__file__)


def checkout(tmp_path: Path, *, constraints: bool = True) -> Path:
    """A checkout as far as setup() reads it: tasks.py, pyproject.toml and (unless told) constraints.txt."""
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy(TASKS, root / "tasks.py")
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    if constraints:
        (root / "constraints.txt").write_text("x==1\n")
    return root


def run_tasks(root: Path, command: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "tasks.py", command], cwd=root, capture_output=True, text=True, timeout=60)


def said_one_line(done: subprocess.CompletedProcess, *words: str) -> str:
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr, done.stderr
    message = done.stderr.strip()
    assert "\n" not in message and all(w in message for w in words), message
    return message


def test_missing_constraints_is_one_clear_line(tmp_path):
    root = checkout(tmp_path, constraints=False)
    said_one_line(run_tasks(root, "test"), str(root / "constraints.txt"), "missing")
    assert not (root / ".venv").exists()


def test_dangling_python_says_to_delete_venv(tmp_path):
    root = checkout(tmp_path)
    (root / ".venv/bin").mkdir(parents=True)
    (root / ".venv/bin/python").symlink_to(tmp_path / "a-python-since-removed")
    said_one_line(run_tasks(root, "book"), "Delete it", f"rm -rf {root / '.venv'}", "does not start")


def test_venv_without_pip_says_to_delete_it(tmp_path):
    root = checkout(tmp_path)
    venv.create(root / ".venv", with_pip=False)
    said_one_line(run_tasks(root, "test"), "no pip", f"rm -rf {root / '.venv'}")


def test_a_stamp_that_lies_is_installed_again(tmp_path, monkeypatch, capsys):
    """The stamp matches pyproject.toml and constraints.txt, but asc_lib and papermill are not there: install."""
    root = checkout(tmp_path)
    env = root / ".venv"
    venv.create(env, with_pip=False)
    python = env / "bin/python"
    purelib = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    # pip runs there, but nothing is installed; found without `import pip`, which switches off setuptools'
    # distutils shim in this process (torch's compiler imports setuptools later, and that then fails)
    (purelib / "pip").symlink_to(Path(sysconfig.get_paths()["purelib"]) / "pip")
    monkeypatch.setattr(tasks, "ROOT", root)
    monkeypatch.setattr(tasks, "VENV", env)
    stamp = env / ".asc-installed"
    wanted = hashlib.sha256(b"".join((root / name).read_bytes() for name in ("pyproject.toml", "constraints.txt")))
    wanted = wanted.hexdigest()
    stamp.write_text(wanted)
    calls = []

    def install(*cmd, **kwargs):  # what pip would leave: both packages importable
        calls.append(cmd)
        (purelib / "asc_lib").mkdir()
        for name in ("asc_lib/__init__.py", "asc_lib/train.py", "papermill.py"):
            (purelib / name).write_text("")

    monkeypatch.setattr(tasks, "sh", install)
    tasks.setup()
    assert len(calls) == 1 and calls[0][:3] == (python, "-m", "pip") and ".[book,parity]" in calls[0]
    assert "installing again" in capsys.readouterr().out
    assert stamp.read_text() == wanted
    calls.clear()
    tasks.setup()  # now it holds: nothing to do
    assert calls == []


def test_colab_leg_finds_every_chapters_install_cell(tmp_path, monkeypatch):
    """`tasks.py colab` runs each chapter's Colab install cell: all six share one line, from GitHub; a chapter
    without one is named."""
    cells = tasks.install_cells()
    assert len(cells) == 1
    (line, chapters), = cells.items()
    assert line.startswith("%pip install") and "asc-lib @ git+https://" in line and len(chapters) == 6
    (tmp_path / "chapters").mkdir()
    (tmp_path / "chapters/01_x.ipynb").write_text('{"cells": [{"metadata": {"tags": ["nbval-skip"]}, "source": []}]}')
    monkeypatch.setattr(tasks, "ROOT", tmp_path)
    with pytest.raises(SystemExit, match="01_x.ipynb: expected one `%pip install"):
        tasks.install_cells()

"""The chapter runner on small books the tests write: order, parameters, failures, time limits."""

import json
import subprocess
import sys

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from asc_lib import book


def _chapter(path, *sources, params="x = 1"):
    cells = [new_code_cell(params, metadata={"tags": ["parameters"]})] + [new_code_cell(s) for s in sources]
    nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    nbformat.write(nb, path)


@pytest.fixture
def small_book(tmp_path):
    (tmp_path / "chapters").mkdir()
    return tmp_path


def _outputs(path):
    nb = nbformat.read(path, as_version=4)
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def test_runs_in_order_injects_parameters_and_hides_them(small_book, capsys):
    _chapter(small_book / "chapters" / "01_first.ipynb", "print('first', x * 2, profile)", params="x = 1\nprofile = 'ci'")
    _chapter(small_book / "chapters" / "02_second.ipynb", "print('second', x)")
    assert book.run(small_book, "ci", None, {"x": 21}) == 0
    assert "first 42 ci" in _outputs(small_book / "book" / "01_first.ipynb")
    assert "second 21" in _outputs(small_book / "book" / "02_second.ipynb")
    nb = nbformat.read(small_book / "book" / "01_first.ipynb", as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "remove-cell" in injected[0].metadata["tags"]
    assert all("papermill" not in c.metadata for c in nb.cells)
    assert "output_path" not in nb.metadata["papermill"]  # a temporary path: would change every run
    table = capsys.readouterr().out
    assert "01_first" in table and "02_second" in table and "total" in table


def test_failure_names_chapter_and_cell_and_stops(small_book, capsys):
    _chapter(small_book / "chapters" / "01_broken.ipynb", "y = 2", "raise ValueError('bad clip')")
    _chapter(small_book / "chapters" / "02_after.ipynb", "print('never')")
    assert book.run(small_book, "ci", None, {}) == 1
    err = capsys.readouterr().err
    assert "chapter 01_broken failed" in err and "code cell 3 (`raise ValueError('bad clip')`)" in err and "ValueError: bad clip" in err
    assert not (small_book / "book" / "01_broken.ipynb").exists()  # nothing half-executed in book/
    assert not (small_book / "book" / "02_after.ipynb").exists()  # stopped at the first failure
    assert (small_book / "_build" / "failed" / "01_broken.ipynb").exists()


def test_into_a_folder_leaves_the_published_chapters_alone(small_book, tmp_path_factory):
    _chapter(small_book / "chapters" / "01_where.ipynb", "import os; print('cwd', os.getcwd())")
    _chapter(small_book / "chapters" / "02_fails.ipynb", "raise RuntimeError('stop')")
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    assert book.run(small_book, "ci", None, {}, into=elsewhere / "out") == 1
    assert f"cwd {elsewhere / 'out'}" in _outputs(elsewhere / "out" / "01_where.ipynb")  # runs where it writes
    assert (elsewhere / "out" / "_build" / "failed" / "02_fails.ipynb").exists()
    assert not (small_book / "book").exists() and not (small_book / "_build").exists()


def test_failed_rerun_keeps_the_previous_good_chapter(small_book):
    path = small_book / "chapters" / "01_flaky.ipynb"
    _chapter(path, "print('good run')")
    assert book.run(small_book, "ci", None, {}) == 0
    _chapter(path, "raise RuntimeError('now broken')")
    assert book.run(small_book, "ci", None, {}) == 1
    assert "good run" in _outputs(small_book / "book" / "01_flaky.ipynb")


def test_chapter_time_limit(small_book, monkeypatch, capsys):
    monkeypatch.setitem(book.CHAPTER_TIMEOUT_S, "ci", 8)
    _chapter(small_book / "chapters" / "01_slow.ipynb", "import time\ntime.sleep(120)")
    assert book.run(small_book, "ci", None, {}) == 1
    assert "time limit of 8 s" in capsys.readouterr().err
    assert not (small_book / "book" / "01_slow.ipynb").exists()


def test_only_selects_by_name_and_unknown_names_are_refused(small_book):
    for name in ("01_alpha", "02_beta", "03_gamma"):
        _chapter(small_book / "chapters" / f"{name}.ipynb", "pass")
    found = book.chapters(small_book)
    assert [p.stem for p in book.select(found, ["gamma", "01"])] == ["01_alpha", "03_gamma"]
    with pytest.raises(SystemExit, match="no chapter called 'delta'"):
        book.select(found, ["delta"])
    with pytest.raises(SystemExit, match=r"parameter\(s\) \['epochs'\]"):
        book.run(small_book, "ci", ["alpha"], {"epochs": 3})
    with pytest.raises(SystemExit, match="--profile"):
        book.run(small_book, "ci", None, {"profile": "full"})


def test_parameter_values_are_checked_against_the_defaults_before_anything_runs(small_book, monkeypatch):
    _chapter(small_book / "chapters" / "01_alpha.ipynb", "print('ran')",
             params="seed = 0\nlr = 0.5\nname = 'x'\nsplits = None\nfast = False")
    for name, value, expects in (("seed", "abc", "an? int"), ("seed", 1.5, "an? int"), ("lr", "fast", "an? float"),
                                 ("name", 3, "an? str"), ("fast", 1, "an? bool"), ("seed", True, "an? int")):
        with pytest.raises(SystemExit, match=f"-p {name} .*01_alpha.ipynb expects {expects}"):
            book.run(small_book, "ci", None, {name: value})
    assert not (small_book / "book").exists()  # refused before any chapter ran
    assert book.run(small_book, "ci", None, {"seed": 2, "lr": 1, "splits": [5, 100], "name": "y", "fast": True}) == 0
    calls = []
    monkeypatch.setattr(book, "run", lambda root, profile, only, overrides, into: calls.append(only) or 0)
    monkeypatch.chdir(small_book)
    monkeypatch.setattr(book, "repo_root", lambda: small_book)
    assert book.main(["run", "--only", "alpha", "--only", "beta", "gamma"]) == 0
    assert calls == [["alpha", "beta", "gamma"]]  # repeated --only accumulates


def test_no_chapters_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no chapters found"):
        book.chapters(tmp_path)


def test_parse_value():
    assert book.parse_value("3") == 3 and book.parse_value("0.5") == 0.5
    assert book.parse_value("None") is None and book.parse_value("True") is True
    assert book.parse_value("/data/TAU") == "/data/TAU" and book.parse_value("ci") == "ci"


def test_command_line_help_lists_both_commands():
    out = subprocess.run([sys.executable, "-m", "asc_lib.book", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "run" in out.stdout and "build" in out.stdout


def test_progress_bar_redraws_collapse_to_their_last_state():
    outputs = [{"output_type": "stream", "name": "stderr", "text": "\rbar 1/3"},
               {"output_type": "stream", "name": "stderr", "text": "\rbar 2/3\rbar 3/3\n"},
               {"output_type": "stream", "name": "stdout", "text": "done\n"},
               {"output_type": "stream", "name": "stderr", "text": "warning: x\n"}]
    merged = book.collapse_progress(outputs)
    assert [o["text"] for o in merged] == ["bar 3/3\n", "done\n", "warning: x\n"]

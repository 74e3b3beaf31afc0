"""The chapter runner on small books the tests write: order, parameters, failures, time limits."""

import json
import subprocess
import sys
import time
from pathlib import Path

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
    monkeypatch.setitem(book.CHAPTER_TIMEOUT_S, "ci", 4)
    _chapter(small_book / "chapters" / "01_slow.ipynb", "import time\ntime.sleep(120)")
    assert book.run(small_book, "ci", None, {}) == 1
    assert "time limit of 4 s" in capsys.readouterr().err
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


def test_command_line_help_lists_both_commands(capsys):
    with pytest.raises(SystemExit) as stop:
        book.main(["--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0 and "run" in out and "build" in out


def test_progress_bar_redraws_collapse_to_their_last_state():
    outputs = [{"output_type": "stream", "name": "stderr", "text": "\rbar 1/3"},
               {"output_type": "stream", "name": "stderr", "text": "\rbar 2/3\rbar 3/3\n"},
               {"output_type": "stream", "name": "stdout", "text": "done\n"},
               {"output_type": "stream", "name": "stderr", "text": "warning: x\n"}]
    merged = book.collapse_progress(outputs)
    assert [o["text"] for o in merged] == ["bar 3/3\n", "done\n", "warning: x\n"]


ROOT = Path(book.__file__).resolve().parent.parent


def test_into_inside_the_checkout_or_onto_a_file_is_refused(small_book, tmp_path_factory, monkeypatch, capsys):
    """``--into chapters`` replaced a source chapter with its executed copy, and a folder inside the checkout
    sent the run's tables up to book/results; ``--into README.md`` was a FileExistsError traceback."""
    src = small_book / "chapters" / "01_tour.ipynb"
    _chapter(src, "print('ran')")
    source = src.read_bytes()
    for inside in (small_book / "chapters", small_book / "rerun", small_book / "book"):
        with pytest.raises(SystemExit, match=f"--into {inside}: inside the checkout {small_book}; choose a folder "
                                             "outside the checkout"):
            book.run(small_book, "ci", None, {}, into=inside)
    assert src.read_bytes() == source and not (small_book / "rerun").exists() and not (small_book / "book").exists()
    a_file = tmp_path_factory.mktemp("elsewhere") / "README.md"
    a_file.write_text("# not a folder\n")
    with pytest.raises(SystemExit, match=f"--into {a_file}: a file, not a folder"):
        book.run(small_book, "ci", None, {}, into=a_file)
    (small_book / "README.md").write_text("# the checkout's\n")
    monkeypatch.chdir(small_book)
    monkeypatch.setattr(book, "repo_root", lambda: small_book)
    with pytest.raises(SystemExit):  # the command line: one line of error, no traceback
        book.main(["run", "--into", "README.md"])
    assert f"--into {small_book / 'README.md'}: a file, not a folder" in capsys.readouterr().err
    assert (small_book / "README.md").read_text() == "# the checkout's\n"


def test_a_run_into_a_folder_keeps_its_tables_there_even_inside_another_checkout(small_book, tmp_path_factory):
    """results_dir() walked up from the --into folder to a checkout's book/results: the tables go to (and are
    read from) the folder's own results/, and the published run still writes book/results."""
    clone = tmp_path_factory.mktemp("clone")  # another checkout of the book
    (clone / "_toc.yml").write_text("")
    (clone / "asc_lib").mkdir()
    _chapter(small_book / "chapters" / "01_save.ipynb",
             "import pandas as pd\nfrom asc_lib import results\nresults.save(pd.DataFrame({'a': [x]}), 'table')")
    _chapter(small_book / "chapters" / "02_read.ipynb",
             "from asc_lib.paths import results_dir\nprint('reads', results_dir())")
    into = clone / "rerun"
    assert book.run(small_book, "ci", None, {"x": 7}, into=into) == 0
    assert (into / "results" / "table.csv").read_text().splitlines() == [",a", "0,7"]
    assert f"reads {into / 'results'}" in _outputs(into / "02_read.ipynb")
    assert not (clone / "book").exists()
    assert book.run(small_book, "ci", ["save"], {"x": 8}) == 0  # the published run: book/results as before
    assert (small_book / "book" / "results" / "table.csv").read_text().splitlines() == [",a", "0,8"]


def test_a_second_runner_into_the_same_folder_is_refused_while_the_first_runs(small_book, tmp_path_factory):
    into = tmp_path_factory.mktemp("shared") / "out"
    go = into.parent / "go"
    _chapter(small_book / "chapters" / "01_wait.ipynb",
             "import pathlib, time\npathlib.Path('started').touch()\ndeadline = time.time() + 30\n"
             f"while not pathlib.Path({str(go)!r}).exists() and time.time() < deadline:\n    time.sleep(0.05)")
    first = subprocess.Popen([sys.executable, "-c", "import sys; from pathlib import Path; from asc_lib import book; "
                              f"sys.exit(book.run(Path({str(small_book)!r}), 'ci', None, {{}}, "
                              f"into=Path({str(into)!r})))"], stdout=subprocess.DEVNULL)
    try:
        for _ in range(600):
            if (into / "started").exists() or first.poll() is not None:
                break
            time.sleep(0.1)
        assert (into / "started").exists(), "the first runner did not start its chapter"
        with pytest.raises(SystemExit, match=f"another runner \\(process {first.pid}\\) is executing chapters into "
                                             f"{into}"):
            book.run(small_book, "ci", None, {}, into=into)
    finally:
        go.touch()
        assert first.wait(timeout=120) == 0
    with book.one_runner(into, into / "_build" / "runner.lock"):  # the first runner's lock went with it
        pass


def test_a_parameter_whose_default_is_none_is_checked_against_its_declared_type(small_book):
    """``-p epochs abc`` (default None) passed the check and failed in a later cell with a TypeError."""
    _chapter(small_book / "chapters" / "01_tour.ipynb", "print('ran')",
             params="epochs = None\ntemperature = None\nsplits = None")
    for name, value, expects in (("epochs", "abc", "an int or None"), ("epochs", 2.5, "an int or None"),
                                 ("epochs", True, "an int or None"), ("temperature", "hot", "a float or None"),
                                 ("splits", 5, "a list of ints or None"), ("splits", [5, "x"], "a list of ints")):
        with pytest.raises(SystemExit, match=f"-p {name} .*01_tour.ipynb expects {expects} "):
            book.run(small_book, "ci", None, {name: value})
    assert not (small_book / "book").exists()  # refused before any chapter ran


def test_every_chapter_parameter_has_a_type():
    """A parameter whose default is None must have its type declared, or no -p value of it is checked."""
    for path in book.chapters(ROOT):
        for name, info in book.chapter_parameters(path).items():
            assert book.parameter_type(name, info["default"]) is not None, f"{path.name}: {name}"


def test_an_int_for_a_float_parameter_is_injected_as_a_float(small_book):
    """``-p temperature 2`` and the profile's 2.0 were two run keys: the student chapter trained again."""
    from dataclasses import asdict

    from asc_lib import profiles

    _chapter(small_book / "chapters" / "01_tour.ipynb", "print('got', repr(temperature), repr(lr), repr(splits))",
             params="temperature = None\nlr = 0.5\nsplits = None")
    assert book.run(small_book, "ci", None, {"temperature": 2, "lr": 1, "splits": (5, 100)}) == 0
    assert "got 2.0 1.0 [5, 100]" in _outputs(small_book / "book" / "01_tour.ipynb")
    student = ROOT / "chapters" / "05_student.ipynb"
    typed = book.check_types({student: book.chapter_parameters(student)}, {"temperature": 2})[student]
    P = profiles.get_profile("ci")
    assert json.dumps(asdict(profiles.override(P.student, **typed))) == json.dumps(asdict(P.student))

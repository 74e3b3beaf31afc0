"""nbval, as configured for book/: checked cells compare printed results, not progress bars, HTML
players or glued values, and a changed number fails."""

import os
import subprocess
import sys

import nbformat
from nbformat.v4 import new_code_cell, new_notebook, new_output

from conftest import ROOT


def _probe(path, stored_text):
    cells = [
        new_code_cell("import sys\nprint('accuracy 72.5 %')\nprint('progress', file=sys.stderr)"),
        new_code_cell("from IPython.display import HTML, display\ndisplay(HTML('<audio>new</audio>'))\n"
                      "print('done')"),
    ]
    for cell in cells:  # the chapters mark checked cells with this tag (a comment would show in the HTML)
        cell.metadata["tags"] = ["nbval-check-output"]
    cells[0].outputs = [new_output("stream", name="stdout", text=stored_text)]
    cells[1].outputs = [new_output("display_data", data={"text/html": "<audio>old</audio>", "text/plain": "<IPython.core.display.HTML object>"}),
                        new_output("stream", name="stdout", text="done\n")]
    for i, cell in enumerate(cells, 1):
        cell.execution_count = i
    nbformat.write(new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "language": "python",
                                                                      "display_name": "Python 3"}}), path)


def _nbval(path):
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider", "--nbval-lax",
           "--nbval-current-env", "--nbval-sanitize-with", str(ROOT / "tests" / "nbval_sanitize.cfg"), str(path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # so that -p conftest loads the book's conftest.py
    return subprocess.run(cmd, cwd=path.parent, capture_output=True, text=True, env=env)


def test_extra_stderr_and_html_are_not_compared(tmp_path):
    _probe(tmp_path / "ok.ipynb", "accuracy 72.5 %\n")
    result = _nbval(tmp_path / "ok.ipynb")
    assert result.returncode == 0, result.stdout[-2000:]


def test_a_changed_number_fails(tmp_path):
    _probe(tmp_path / "changed.ipynb", "accuracy 73.5 %\n")
    result = _nbval(tmp_path / "changed.ipynb")
    assert result.returncode == 1 and "73.5" in result.stdout

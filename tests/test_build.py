"""The book builds with warnings as errors, with its launch buttons, glued numbers and citations."""

import re

import nbformat
import yaml

from asc_lib import book
from conftest import ROOT


def test_book_builds_without_warnings(tmp_path):
    assert book.build(ROOT, output=tmp_path) == 0
    html = tmp_path / "_build" / "html"
    assert (html / "index.html").exists()
    tour = (html / "book" / "01_quick_tour.html").read_text()
    repo = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"].removeprefix("https://github.com/")
    assert f"colab.research.google.com/github/{repo}/blob/main/book/01_quick_tour.ipynb" in tour
    assert tour.count("<audio") >= 3
    assert "injected-parameters" not in tour and "training:" not in tour  # hidden cell, no progress bars
    # the number glued into the prose is the one the executed chapter printed
    nb = nbformat.read(ROOT / "book" / "01_quick_tour.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    acc = re.search(r"macro accuracy on \d+ test clips: ([\d.]+) %", printed)[1]
    assert re.search(rf'gets <span class="pasted-text">{re.escape(acc)}</span> % macro accuracy', tour)
    intro = (html / "book" / "intro.html").read_text()
    assert "Cai <em>et al.</em>, 2024" in intro
    assert "leveraging self-supervised audio representations" in (html / "book" / "references.html").read_text().lower()

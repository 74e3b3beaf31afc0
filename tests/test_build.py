"""The book builds with warnings as errors, with its launch buttons, glued numbers and citations."""

import re

import nbformat
import pytest
import yaml

from asc_lib import book, profiles
from conftest import ROOT


@pytest.fixture(scope="module")
def html(tmp_path_factory):
    out = tmp_path_factory.mktemp("book")
    assert book.build(ROOT, output=out) == 0, "jupyter-book build -W -n reported warnings or errors"
    return out / "_build" / "html"


@pytest.mark.slow
def test_book_builds_without_warnings(html):
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
    assert re.search(r'>CLS24</a>\]', intro)  # the paper, by its label
    refs = (html / "book" / "references.html").read_text()
    assert "leveraging self-supervised audio representations" in refs.lower()
    labels = re.findall(r'<span class="label"><span class="fn-bracket">\[</span>([^<]*)<', refs)
    assert len(labels) == len(set(labels)) == len(re.findall(r"^@", (ROOT / "book" / "references.bib").read_text(), re.M))
    assert all(re.fullmatch(r"[A-Z][A-Za-z]{0,4}\+?\d\d", label) for label in labels), labels  # short, readable
    assert {"CLS24", "CZL24"} <= set(labels)  # the two Cai et al. 2024 papers tell apart


@pytest.mark.slow
def test_data_chapter_glues_its_check_into_the_prose(html):
    page = (html / "book" / "02_data.html").read_text()
    nb = nbformat.read(ROOT / "book" / "02_data.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    acc100 = re.search(r"100 %: ([\d.]+) % macro accuracy", printed)[1]
    assert f'from scratch reaches <span class="pasted-text">{acc100}</span> % on the 100 % split' in page
    assert page.count("<audio") == 19  # one clip per scene, one recording through nine devices
    met = sum(line.startswith("[ok]") for line in printed.splitlines())
    assert f'<span class="pasted-text">{met} of 4</span> criteria' in page
    csv = (ROOT / "book" / "results" / "data.csv").read_text().splitlines()
    assert csv[0].startswith("split,dataset,clips") and len(csv) == 7


@pytest.mark.slow
def test_beats_chapter_glues_what_it_printed(html):
    page = (html / "book" / "03_beats.html").read_text()
    nb = nbformat.read(ROOT / "book" / "03_beats.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    acc, chance = re.search(r"masked accuracy ([\d.]+) % \(most frequent code: ([\d.]+) %\)", printed).groups()
    gain = re.search(r"random weights by ([+-][\d.]+) points", printed)[1]
    glued = re.findall(r'<span class="pasted-text">([^<]*)</span>', page)
    assert [acc, chance] == glued[:2] and gain in glued[2:]
    assert "90,311,792" in page  # the released architecture's parameter count, computed in the chapter


def _printed(name):
    nb = nbformat.read(ROOT / "book" / f"{name}.ipynb", as_version=4)
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


@pytest.mark.slow
def test_teachers_chapter_glues_what_it_printed_and_writes_its_table(html):
    page = re.sub(r"\s+", " ", (html / "book" / "04_teachers.html").read_text())
    best, mean = re.search(r"best: (.+?), mean ([\d.]+) %", _printed("04_teachers")).groups()
    assert (f'best system is <span class="pasted-text">{best}</span>, with a mean of '
            f'<span class="pasted-text">{mean}</span>') in page
    csv = (ROOT / "book" / "results" / "teachers.csv").read_text().splitlines()
    splits = ",".join(str(s) for s in profiles.get_profile("ci").teachers.splits)
    assert csv[0].startswith(f",{splits},mean") and len(csv) == 1 + 4 + 4  # 4 rows + 4 ensembles


@pytest.mark.slow
def test_student_and_results_chapters_glue_what_they_printed(html):
    page = re.sub(r"\s+", " ", (html / "book" / "05_student.html").read_text())
    name, mean = re.search(r"best distilled student: (.+?), mean ([\d.]+) %", _printed("05_student")).groups()
    assert f'(<span class="pasted-text">{name}</span>) <span class="pasted-text">{mean}</span>' in page
    results = re.sub(r"\s+", " ", (html / "book" / "06_results.html").read_text())
    held, total = re.findall(r'In this run <span class="pasted-text">(\d+)</span> of the <span class="pasted-text">(\d+)</span>',
                             results)[0]
    claims = (ROOT / "book" / "results" / "claims.csv").read_text().splitlines()
    assert 0 <= int(held) <= int(total) == len(claims) - 1 + 3  # the seed study's claims and three fixed ones
    for name in ("student", "student_devices", "teachers_devices", "complexity", "seeds", "miniature", "kd_study"):
        assert (ROOT / "book" / "results" / f"{name}.csv").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("name", [p.stem for p in sorted((ROOT / "book").glob("[0-9]*.ipynb"))])
def test_chapter_pages_show_no_test_apparatus_and_no_nan(html, name):
    page = (html / "book" / f"{name}.html").read_text()
    assert "NBVAL" not in page  # checked cells are marked by a tag, not a comment shown in the code
    assert "google.colab" not in page and "pip install" not in page  # the Colab install cell is not shown
    cells = re.findall(r"<td[^>]*>\s*(?:nan|NaN)\s*</td>", page)
    assert not cells, f"{name}: a table shows NaN"
    # every audio player carries its label in the same output (asc_lib.glue.labelled_audio)
    players = page.count("<audio")
    labelled = re.findall(r'<figure class="asc-audio"><figcaption>[^<]+</figcaption>\s*<audio', page)
    assert len(labelled) == players, f"{name}: {players - len(labelled)} audio player(s) without a label"
    # every figure is a numbered figure with its caption (tests/test_chapters.py checks the notebooks)
    letters = lambda text: re.sub(r"[^a-z]", "", text.lower())  # punctuation aside (smart quotes)
    text = letters(re.sub(r"<[^>]+>", "", page))
    for cell in nbformat.read(ROOT / "book" / f"{name}.ipynb", as_version=4).cells:
        figure = cell.metadata.get("mystnb", {}).get("figure")
        if figure:
            assert f'id="{figure["name"]}"' in page and letters(figure["caption"]) in text, figure["name"]


def test_the_student_chapter_says_of_the_teachers_fit_what_its_table_shows():
    """The sentence under the table of the teachers' accuracy on the clips they teach is computed from that
    table: it says "have fitted" only if every run is at least results.FITTED % accurate there."""
    from asc_lib import results

    nb = nbformat.read(ROOT / "book" / "05_student.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and "accuracy on the clips it teaches" in c.source
                and "fitted" in c.source)
    table = next(o["data"]["text/plain"] for o in cell.outputs if "data" in o and "text/plain" in o["data"])
    first_block = table.split("\n\n")[0]  # pandas wraps a wide frame: the first block has this column first
    assert first_block.lstrip().startswith("accuracy on the clips it teaches"), table
    fit = [float(re.findall(r"\d+\.\d+", line)[0]) for line in first_block.splitlines()
           if len(re.findall(r"\d+\.\d+", line)) >= 2]
    assert len(fit) >= 3, table
    said = "".join(o.get("text", "") for o in cell.outputs)
    fitted = min(fit) >= results.FITTED
    assert (f"they {'have' if fitted else 'have not'} fitted them" in said), (fit, said)
    low, high = map(float, re.search(r"([\d.]+)-([\d.]+) % correct on them", said).groups())
    assert abs(low - min(fit)) < 0.06 and abs(high - max(fit)) < 0.06, (low, high, fit)  # the table: 2 decimals


@pytest.mark.slow
def test_the_best_ensemble_exercise_answers_from_the_teachers_table(html):
    """The exercise "The best ensemble" names the best subset of two or three teachers and says whether it
    beats the best single teacher, as teachers.csv has them (it once answered with a single teacher)."""
    import pandas as pd

    from asc_lib import teachers

    table = pd.read_csv(ROOT / "book" / "results" / "teachers.csv", index_col=0)["mean"]
    ensembles = table[[i for i in table.index if i.startswith("ensemble ")]]
    best_ens, best_one = ensembles.idxmax(), table[list(teachers.TEACHERS)].idxmax()
    verdict = "beats" if ensembles.max() > table[best_one] else "does not beat"
    page = re.sub(r"\s+", " ", (html / "book" / "04_teachers.html").read_text())
    span = '<span class="pasted-text">{}</span>'.format
    assert (f"the best ensemble is {span(best_ens.removeprefix('ensemble '))}, with a mean of "
            f"{span(f'{ensembles.max():.1f}')}") in page
    assert f"it {span(verdict)} the best single teacher, {span(best_one)} ({span(f'{table[best_one]:.1f}')} %)" in page


@pytest.mark.slow
def test_pages_load_no_script_from_another_host_and_mathjax_from_the_build(html):
    """Equations loaded MathJax from a CDN: offline they showed raw TeX. book/_ext/mathjax_local.py serves
    it from the build (the sphinx-mathjax-offline package's files)."""
    for page in html.rglob("*.html"):
        assert not re.search(r'<script[^>]*src="(https?:)?//', page.read_text()), page
    assert 'src="../_static/mathjax/tex-chtml.js"' in (html / "book" / "05_student.html").read_text()
    assert (html / "_static" / "mathjax" / "tex-chtml.js").is_file()
    assert list((html / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))

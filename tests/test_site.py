"""The published site: the HTML book checked in headless Chromium (asc_lib.sitecheck), and the workflow that
publishes it to GitHub Pages with the README's build command."""

import re
import shutil

import pytest
import yaml

from asc_lib import book, sitecheck
from conftest import ROOT


@pytest.fixture(scope="module")
def html(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    assert book.build(ROOT, output=out) == 0
    return out / "_build" / "html"


@pytest.mark.slow
def test_every_page_passes_the_site_check(html):
    pages = sitecheck.check(html)
    names = {p.name for p in pages}
    assert {f"book/{n}.html" for n in ("intro", "01_quick_tour", "02_data", "03_beats", "04_teachers",
                                       "05_student", "06_results", "references", "appendix_reproducibility")} <= names
    assert sum(p.blocks for p in pages) > 100  # the checks measured the chapters' blocks, not empty pages
    problems = [f"{p.name}: {problem}" for p in pages for problem in p.problems()]
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_the_site_check_finds_what_it_looks_for(tmp_path):
    """A page with each defect: a broken link and anchor, a file path as alt text, a line wider than the
    column, a page wider than a phone, and an image without alt text (axe: critical)."""
    (tmp_path / "book").mkdir()
    wide = "x" * 400
    (tmp_path / "book" / "bad.html").write_text(
        '<!DOCTYPE html><html><head><title>t</title></head><body><main><article class="bd-article">'
        '<a href="missing.html">a</a> <a href="#nowhere">b</a>'
        '<img src="../_images/abc.png" alt="../_images/abc.png"> <img src="../_images/abc.png">'
        f'<div class="highlight"><pre style="overflow-x:auto">{wide}</pre></div>'
        f'<p style="white-space:nowrap">{wide}</p></article></main></body></html>')
    (tmp_path / "_images").mkdir()
    shutil.copy(ROOT / "book" / "images" / "pipeline.svg", tmp_path / "_images" / "abc.png")
    (page,) = sitecheck.check(tmp_path, ["book/bad.html"])
    text = "\n".join(page.problems())
    assert "missing.html does not resolve" in text and "#nowhere does not resolve" in text
    assert "'../_images/abc.png' is not a description" in text and "'' is not a description" in text
    assert "at 390 px the page is" in text and "code block is" in text
    assert "axe critical: image-alt" in text
    assert "no lang attribute" in text


@pytest.mark.slow
def test_the_site_check_finds_a_table_wider_than_the_column(tmp_path):
    """At 1280 px a table wider than the column is a defect whether it runs past the column or hides its last
    columns in a box that scrolls (many systems draw that box's scroll bar only while it scrolls); a table
    that fits its scrolling box is not."""
    (tmp_path / "book").mkdir()
    row = "<tr>" + "<td>column</td>" * 100 + "</tr>"
    (tmp_path / "book" / "tables.html").write_text(
        '<!DOCTYPE html><html lang="en"><head><title>t</title></head><body><main><article class="bd-article">'
        f'<table><caption>runs past</caption>{row}</table>'
        f'<div style="overflow-x:auto"><table><caption>hidden in its box</caption>{row}</table></div>'
        '<div style="overflow-x:auto"><table><caption>fits</caption><tr><td>1</td></tr></table></div>'
        '</article></main></body></html>')
    (page,) = sitecheck.check(tmp_path, ["book/tables.html"])
    wide = [w["text"] for w in page.wide_1280 if w["kind"] == "table"]
    assert [text.split("column")[0] for text in wide] == ["runs past", "hidden in its box"]
    assert page.blocks == 3


@pytest.mark.parametrize("folder", ["missing", "empty"])
def test_the_site_check_refuses_a_folder_without_pages_before_starting_chromium(tmp_path, monkeypatch, folder):
    (tmp_path / "empty").mkdir()
    monkeypatch.setattr(sitecheck, "chromium", lambda: pytest.fail("Chromium started on a folder without pages"))
    expected = "is not a folder" if folder == "missing" else "no HTML page in"
    with pytest.raises(SystemExit, match=rf"sitecheck: .*{folder}.*(build the book|python -m asc_lib.book build)") as err:
        sitecheck.main([str(tmp_path / folder)])
    assert expected in str(err.value)


def _readme_build_command() -> str:
    readme = (ROOT / "README.md").read_text()
    return re.search(r"^\S*python -m asc_lib\.book build\b.*$", readme, re.M)[0]


def test_the_pages_workflow_publishes_the_readme_build(html):
    flow = yaml.safe_load((ROOT / ".github" / "workflows" / "pages.yml").read_text())
    assert flow["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    assert flow["concurrency"]["group"] == "pages"
    on = flow[True] if True in flow else flow["on"]  # YAML 1.1 reads the key `on` as True
    assert on["push"]["branches"] == ["main"]
    steps = flow["jobs"]["build"]["steps"]
    runs = [s.get("run", "") for s in steps]
    readme = _readme_build_command().split("python ", 1)[1]  # the README runs it with .venv's python
    assert any(f"python {readme}" == r.strip() for r in runs), (readme, runs)
    assert not any("asc_lib.book run" in r or "papermill" in r for r in runs)  # no re-execution
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"] == "_build/html" and (html / "index.html").exists()
    deploy = flow["jobs"]["deploy"]
    assert deploy["needs"] == "build" and deploy["steps"][-1]["uses"].startswith("actions/deploy-pages")
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    url = config["html"]["baseurl"]
    owner, name = config["repository"]["url"].removeprefix("https://github.com/").split("/")
    assert url == f"https://{owner}.github.io/{name}/" and url in (ROOT / "README.md").read_text()


def test_a_figures_smallest_text_is_measured_where_the_page_shows_it(tmp_path):
    """Each PNG a figure is saved to records its smallest text (asc_lib.plots); the site check scales it by
    the width the page shows the image at: a 6.4-inch figure with 9-point labels, shrunk into a phone's
    358 px column, shows them at about 8 px: below MIN_TEXT_PX. The same figure at 3.6 inches passes."""
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    from asc_lib import plots  # noqa: F401  (its import makes every saved PNG record its smallest text)

    (tmp_path / "book").mkdir()
    (tmp_path / "_images").mkdir()
    for name, width in (("wide", 6.4), ("narrow", 3.6)):
        fig, ax = plt.subplots(figsize=(width, 3), dpi=100)
        ax.plot([0, 1], [0, 1])
        ax.tick_params(labelsize=9)
        ax.set_title("a title", fontsize=14)
        fig.savefig(tmp_path / "_images" / f"{name}.png", bbox_inches="tight")
        plt.close(fig)
    images = [{"src": "../_images/wide.png", "box": 358}, {"src": "../_images/narrow.png", "box": 358},
              {"src": "../_images/missing.png", "box": 358}]
    got = dict(sitecheck.figure_text_px(tmp_path, tmp_path / "book" / "p.html", images))
    assert set(got) == {"wide.png", "narrow.png"}
    assert got["wide.png"] < sitecheck.MIN_TEXT_PX <= got["narrow.png"]
    assert got["narrow.png"] == pytest.approx(9 * 100 / 72, rel=0.01)  # shown at its own width
    page = sitecheck.Page("book/p.html", lang="en", title="t", figure_text_390=list(got.items()))
    assert [p for p in page.problems() if "smallest text" in p] == [
        f"at 390 px figure wide.png's smallest text is {got['wide.png']:.1f} px (at least 9 px)"]

"""Check the built HTML book as its readers see it, in headless Chromium (Debian's ``chromium``).

    python -m asc_lib.sitecheck [_build/html]     # a table per page; exit 1 if anything fails

Per page:

- every local link and ``#anchor`` resolves (the file exists, and the anchor is an ``id`` in it);
- no image's alt text is empty or a file path (``_images/...png``): it is the figure's caption;
- at 390 px, the page is no wider than the viewport (nothing scrolls it sideways);
- at 1280 px, no code or output block is wider than the text column (its text fits without a scroll bar),
  and no table is wider than the column: neither reaching past it nor hiding columns in a box that
  scrolls (a scroll bar that the system draws only while scrolling does not tell the reader there are
  more); on a phone a wide table scrolls in its own box;
- axe-core (bundled by the ``axe-playwright-python`` package) finds no serious or critical violation;
- at 390 px, no figure's text is smaller than :data:`MIN_TEXT_PX`: a figure's PNG records its smallest
  text in pixels of the PNG (``asc_lib.plots`` writes it, ``asc-min-font-px``), scaled here by the width the
  page shows the image at over the PNG's own width.

Chromium is driven by Playwright (``playwright`` on PyPI) with ``executable_path`` set to the system's
Chromium: browsers that download themselves cannot be fetched on the book's machines.
"""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import sys
import threading
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
FILE_PATH = re.compile(r"(^|/)[\w.-]+\.(png|jpe?g|svg|gif|webp)$", re.IGNORECASE)

# the content column of sphinx-book-theme and the blocks that must fit in it
MEASURE = """() => {
  const column = document.querySelector('article.bd-article') || document.querySelector('main');
  const right = column.getBoundingClientRect().right;
  const out = [];
  for (const el of column.querySelectorAll('div.highlight pre, div.cell_output pre, div.output pre')) {
    const over = Math.max(el.scrollWidth - el.clientWidth, el.getBoundingClientRect().right - right);
    if (over > 1) out.push({kind: el.closest('.cell_output, .output') ? 'output' : 'code', over: Math.round(over),
                            text: el.textContent.trim().slice(0, 60)});
  }
  for (const el of column.querySelectorAll('table')) {
    let box = el;  // the nearest box that scrolls sideways (the table's own, or one around it) hides its overflow
    while (box !== column && !['auto', 'scroll'].includes(getComputedStyle(box).overflowX)) box = box.parentElement;
    const hidden = box === column ? 0 : box.scrollWidth - box.clientWidth;
    const over = Math.max(el.getBoundingClientRect().right - right, hidden);
    if (over > 1) out.push({kind: 'table', over: Math.round(over), text: el.textContent.trim().slice(0, 60)});
  }
  const blocks = column.querySelectorAll('div.highlight pre, div.cell_output pre, div.output pre, table').length;
  return {column: Math.round(column.clientWidth), blocks, wide: out};
}"""


MIN_TEXT_PX = 9  # the smallest figure text a phone reader is asked to read (at 390 px)
IMAGES = """() => [...document.querySelectorAll('article img')].map(
  i => ({src: i.getAttribute('src'), box: i.parentElement.clientWidth}))"""


def figure_text_px(html: Path, page: Path, images: list[dict]) -> list[tuple[str, float]]:
    """``(image, px)`` for each image of ``page`` whose PNG records its smallest text: that text's size
    where the page shows the image (``box``: the width of the image's container; an image is shown at
    its own width, or shrunk to the container's)."""
    from PIL import Image

    from .plots import MIN_FONT_KEY

    out = []
    for img in images:
        path = (page.parent / unquote(urlsplit(img["src"] or "").path)).resolve()
        if path.suffix.lower() != ".png" or not path.is_file() or html.resolve() not in path.parents:
            continue
        with open(path, "rb") as f:
            if f.read(8) != b"\x89PNG\r\n\x1a\n":  # named .png but another format: it records nothing
                continue
        with Image.open(path) as im:
            px, width = im.info.get(MIN_FONT_KEY), im.size[0]
        if px is not None and img["box"] > 0:
            out.append((path.name, float(px) * min(width, img["box"]) / width))
    return out


@dataclass
class Page:
    name: str
    broken_links: list = field(default_factory=list)
    bad_alt: list = field(default_factory=list)
    width_390: int = 0
    wide_1280: list = field(default_factory=list)
    blocks: int = 0
    column: int = 0
    axe: list = field(default_factory=list)
    lang: str = ""
    title: str = ""
    figure_text_390: list = field(default_factory=list)  # (image, smallest text in px at 390 px)

    def problems(self) -> list[str]:
        out = [f"link {link} does not resolve" for link in self.broken_links]
        out += [f"image alt text {alt!r} is not a description" for alt in self.bad_alt]
        if self.width_390 > 390:
            out.append(f"at 390 px the page is {self.width_390} px wide (scrolls sideways)")
        out += [f"at 1280 px a {w['kind']} block is {w['over']} px wider than the {self.column} px column: "
                f"{w['text']!r}" for w in self.wide_1280]
        out += [f"axe {v['impact']}: {v['id']} ({v['nodes']} element(s)): {v['help']}" for v in self.axe]
        out += [f"at 390 px figure {name}'s smallest text is {px:.1f} px (at least {MIN_TEXT_PX} px)"
                for name, px in self.figure_text_390 if px < MIN_TEXT_PX]
        if not self.lang:
            out.append("no lang attribute on <html>")
        if not self.title:
            out.append("no <title>")
        return out


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.hrefs, self.alts, self.lang, self.title, self._in_title = set(), [], [], "", "", False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"])
        if tag == "img":
            self.alts.append(a.get("alt") or "")
        if tag == "html":
            self.lang = a.get("lang", "")
        self._in_title = tag == "title"

    def handle_data(self, data):
        if self._in_title:
            self.title += data.strip()

    def handle_endtag(self, tag):
        self._in_title = False


def _parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def static_checks(html: Path, page: Path, parsed: dict) -> Page:
    """Links, anchors, alt texts, lang and title of one page (no browser needed)."""
    p = parsed[page]
    result = Page(str(page.relative_to(html)), lang=p.lang, title=p.title)
    for href in p.hrefs:
        url = urlsplit(href)
        if url.scheme or url.netloc or href.startswith(("mailto:", "javascript:")):
            continue
        target = (page.parent / unquote(url.path)).resolve() if url.path else page
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            result.broken_links.append(href)
            continue
        if url.fragment and target.suffix == ".html":
            if target not in parsed:
                parsed[target] = _parse(target)
            if url.fragment not in parsed[target].ids:
                result.broken_links.append(href)
    result.bad_alt = [alt for alt in p.alts if not alt.strip() or FILE_PATH.search(alt.strip())]
    return result


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise FileNotFoundError("the site check needs Debian's Chromium: apt-get install chromium")
    return found


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _serve(html: Path):
    handler = functools.partial(_Quiet, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def check(html: Path, pages: list[str] | None = None) -> list[Page]:
    """Every check above on every page of the built book at ``html`` (or on ``pages``, relative paths)."""
    from axe_playwright_python.sync_playwright import Axe
    from playwright.sync_api import sync_playwright

    html = Path(html).resolve()
    if not html.is_dir():
        raise SystemExit(f"sitecheck: {html} is not a folder: build the book (python -m asc_lib.book build) "
                         "and pass its _build/html")
    files = [html / p for p in pages] if pages else sorted(
        p for p in html.rglob("*.html") if not p.name.startswith(("genindex", "search")) and "_static" not in p.parts
        and 'http-equiv="refresh"' not in p.read_text(encoding="utf-8").lower())  # the root index: a redirect
    if not files:
        raise SystemExit(f"sitecheck: no HTML page in {html}: expected a built book (python -m asc_lib.book build "
                         "writes _build/html)")
    parsed = {f: _parse(f) for f in files}
    results = [static_checks(html, f, parsed) for f in files]
    server = _serve(html)
    axe = Axe()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
            for width in (390, 1280):
                page = browser.new_page(viewport={"width": width, "height": 900})
                for f, result in zip(files, results):
                    page.goto(f"http://127.0.0.1:{server.server_port}/{f.relative_to(html).as_posix()}",
                              wait_until="load")
                    if width == 390:
                        result.width_390 = page.evaluate("document.documentElement.scrollWidth")
                        result.figure_text_390 = figure_text_px(html, f, page.evaluate(IMAGES))
                        continue
                    got = page.evaluate(MEASURE)
                    result.wide_1280, result.blocks, result.column = got["wide"], got["blocks"], got["column"]
                    found = axe.run(page).response["violations"]
                    result.axe = [{"id": v["id"], "impact": v["impact"], "help": v["help"], "nodes": len(v["nodes"])}
                                  for v in found if v["impact"] in ("serious", "critical")]
                page.close()
            browser.close()
    finally:
        server.shutdown()
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    html = Path(argv[0] if argv else "_build/html")
    results = check(html)
    width = max(len(r.name) for r in results)
    print(f"{'page':<{width}}  links  alt  390px  wide@1280/blocks  axe  smallest figure text@390")
    for r in results:
        small = min((px for _, px in r.figure_text_390), default=None)
        print(f"{r.name:<{width}}  {len(r.broken_links):>5}  {len(r.bad_alt):>3}  {r.width_390:>5}  "
              f"{len(r.wide_1280):>9}/{r.blocks:<6}  {sum(v['nodes'] for v in r.axe):>3}  "
              + ("-" if small is None else f"{small:.1f} px"))
    problems = [(r.name, p) for r in results for p in r.problems()]
    for name, p in problems:
        print(f"{name}: {p}")
    print(f"\n{len(problems)} problem(s) on {len(results)} page(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

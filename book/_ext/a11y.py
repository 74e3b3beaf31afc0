"""A Sphinx extension of the book, for readers who use a screen reader (asc_lib.sitecheck checks both).

- MyST-NB writes a notebook figure's image with its file path as alt text (``_images/<hash>.png``), which
  a screen reader reads out as such. Before the HTML is written, an image inside a figure whose alt text is
  missing or is its own path takes the figure's caption instead.
- docutils marks the reference list ``role="list"`` but puts anchors among its entries, which that role
  forbids (axe-core: aria-required-children, critical); the role is dropped, the entries keep theirs.
"""

from pathlib import Path

from docutils import nodes


def _caption_alt(app, doctree, docname):
    for figure in doctree.findall(nodes.figure):
        caption = next(iter(figure.findall(nodes.caption)), None)
        if caption is None:
            continue
        text = " ".join(caption.astext().split())
        for image in figure.findall(nodes.image):
            alt = image.get("alt", "")
            if not alt or alt == image.get("uri") or alt.endswith(image.get("uri", "").rsplit("/", 1)[-1]):
                image["alt"] = text


def _citation_lists(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    for page in Path(app.outdir).rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        fixed = text.replace('<div role="list" class="citation-list">', '<div class="citation-list">')
        if fixed != text:
            page.write_text(fixed, encoding="utf-8")


def setup(app):
    app.connect("doctree-resolved", _caption_alt)
    app.connect("build-finished", _citation_lists)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

"""A Sphinx extension of the book: MathJax 3 from the build instead of a CDN, so that equations render
offline (a reader of a downloaded copy, a classroom without internet) as they do online.

The files come from the ``sphinx-mathjax-offline`` package (PyPI, pinned in ``constraints.txt``); only the
two things the book loads are copied into ``_static/mathjax``: ``tex-chtml.js`` (TeX input, HTML output)
and the web fonts it asks for (``output/chtml/fonts/woff-v2``), about 1.4 MB of the package's 24 MB.
"""

from importlib.util import find_spec
from pathlib import Path

from sphinx.util.fileutil import copy_asset

NEEDED = ("tex-chtml.js", "output/chtml/fonts/woff-v2")


def _source() -> Path:
    spec = find_spec("sphinx-mathjax-offline")  # the package's folder has dashes in its name
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the book serves MathJax itself: pip install sphinx-mathjax-offline "
                           "(python3 tasks.py test or book installs it)")
    return Path(list(spec.submodule_search_locations)[0]) / "static" / "mathjax"


def _copy(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    source, target = _source(), Path(app.outdir) / "_static" / "mathjax"
    for part in NEEDED:
        if (source / part).is_dir():
            copy_asset(str(source / part), str(target / part))
        else:
            target.mkdir(parents=True, exist_ok=True)
            copy_asset(str(source / part), str(target / Path(part).parent))


def setup(app):
    _source()  # fail at the start of a build, not at its end
    app.config.mathjax_path = "mathjax/tex-chtml.js"
    app.connect("build-finished", _copy)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

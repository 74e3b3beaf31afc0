"""Where things live: the repository (when run from a checkout) or the working folder (Colab)."""

from __future__ import annotations

import os
from pathlib import Path


def repo_root(start: Path | None = None) -> Path | None:
    """The checkout holding ``_toc.yml`` and ``asc_lib/``, searching upwards from ``start`` (cwd)."""
    start = Path(start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "_toc.yml").is_file() and (folder / "asc_lib").is_dir():
            return folder
    return None


def artifacts_dir(profile: str) -> Path:
    """Per-profile folder for caches, checkpoints and logs (ignored by git).

    ``ASC_ARTIFACTS`` overrides it; otherwise ``<repo>/artifacts/<profile>`` in a checkout and
    ``./artifacts/<profile>`` elsewhere (Colab).
    """
    base = os.environ.get("ASC_ARTIFACTS")
    if base:
        root = Path(base)
    else:
        repo = repo_root()
        root = (repo or Path.cwd()) / "artifacts"
    path = root / profile
    path.mkdir(parents=True, exist_ok=True)
    return path


def results_dir(start: Path | None = None) -> Path:
    """Where chapters write their result tables: ``<repo>/book/results`` or ``./results`` (from ``start``,
    default the working folder). ``ASC_RESULTS`` overrides it: the chapter runner sets it to its output
    folder's ``results/``, so a chapter run into a folder never reads or writes a checkout's tables."""
    if os.environ.get("ASC_RESULTS"):
        path = Path(os.environ["ASC_RESULTS"])
    else:
        repo = repo_root(start)
        path = repo / "book" / "results" if repo else Path(start or Path.cwd()) / "results"
    path.mkdir(parents=True, exist_ok=True)
    return path

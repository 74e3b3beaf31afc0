"""Result tables the chapters write to ``book/results/<name>.csv`` (the Results chapter reads them)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from .paths import results_dir


def save(table: pd.DataFrame, name: str) -> Path:
    """Write ``table`` (index included) atomically; returns the path."""
    path = results_dir() / f"{name}.csv"
    tmp = path.with_suffix(".csv.tmp")
    table.to_csv(tmp, float_format="%.2f")
    os.replace(tmp, path)
    return path

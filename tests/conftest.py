"""pytest set-up shared by the tests; nbval compares only what is stable from run to run."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pytest_collectstart(collector):
    # nbval (--nbval-lax) compares the outputs of cells marked NBVAL_CHECK_OUTPUT. Leave out what is
    # not a printed result: audio players and other HTML, glued values, progress bars on stderr.
    if str(getattr(collector, "path", "")).endswith(".ipynb"):
        collector.skip_compare += ("text/html", "image/svg+xml", "application/javascript", "stderr",
                                   "application/papermill.record/text/plain",
                                   "application/papermill.record/text/html")


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture
def python() -> str:
    return sys.executable

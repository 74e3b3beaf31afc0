"""pytest set-up for tests/ and for nbval over book/ (a conftest here, at the root, applies to both);
nbval compares only what is stable from run to run."""

from pathlib import Path

import asc_lib  # noqa: F401  (first: pins the CPU kernels before anything imports torch; kernels inherit it)

ROOT = Path(__file__).resolve().parent


def pytest_collectstart(collector):
    # nbval (--nbval-lax) compares the outputs of cells tagged nbval-check-output. Leave out what is
    # not a printed result: audio players and other HTML, glued values, progress bars on stderr.
    if str(getattr(collector, "path", "")).endswith(".ipynb"):
        collector.skip_compare += ("text/html", "image/svg+xml", "application/javascript", "stderr",
                                   "application/papermill.record/text/plain",
                                   "application/papermill.record/text/html")


def pytest_collection_modifyitems(config, items):
    # The Colab install cell is tagged nbval-skip: it is not a test, so deselect it rather than
    # report a skipped test.
    colab_only = [i for i in items if "nbval-skip" in getattr(getattr(i, "cell", None), "metadata", {}).get("tags", [])]
    if colab_only:
        items[:] = [i for i in items if i not in colab_only]
        config.hook.pytest_deselected(items=colab_only)


def pytest_collection_finish(session):
    # Importing pip switches off setuptools' distutils shim for the whole process (pip asks for the
    # standard library's distutils); torch's compiler imports setuptools later and then fails its check
    # (CI, stop 42: test_quantize's compiled INT8 test). A test that needs pip runs it in a subprocess.
    import sys

    if "pip" in sys.modules:
        raise RuntimeError("a test module imported pip at collection: run pip in a subprocess instead "
                           "(importing it breaks `import setuptools`, which torch.compile needs, in this process)")

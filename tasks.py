#!/usr/bin/env python3
"""The book's commands, for a fresh machine with only Python (3.10+) and pip.

    python3 tasks.py book     # set up .venv, execute every chapter (profile ci), build the HTML
    python3 tasks.py test     # set up .venv, run the tests (unit, nbval, book build)
    python3 tasks.py newest   # in .venv-newest, the newest torch on the index: unit tests + Quick tour
    python3 tasks.py smoke    # the full profile's smoke run on test-made TAU22 and BEATs fixtures

``book`` and ``test`` create ``.venv`` when it is missing and install the pinned dependencies and
``asc_lib`` into it; they reinstall only when ``pyproject.toml`` or ``constraints.txt`` changed, so a
second call reuses it. Extra arguments go to the runner (``book``) or to pytest (``test``, ``newest``).

``newest`` is what a Colab user meets next: it installs the newest torch release (no torchaudio; every
other package at its pin) into its own ``.venv-newest``, ignoring any pip configuration that caps
torch (``PIP_CONFIG_FILE`` is set to the null device for that install only), then runs the unit tests
of torch's direct users (``NEWEST_TESTS``, but those marked ``slow``, which train for long and run
in ``test``; not the data, cache, runner and book checks, nor the comparison with the published chapters,
whose numbers belong to the pinned torch) and executes the Quick tour into a temporary folder. ``.venv``
is not touched.

``smoke`` writes the fixtures of ``python -m asc_lib.smoke`` (a TAU22-format folder from official split
lines with generated audio, and official-format BEATs checkpoints with random weights) into a temporary
folder and runs every chapter there with ``--profile full --smoke``: the paper's code path with the
amounts cut. Extra arguments go to the runner.
"""

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
STAMP = VENV / ".asc-installed"


NEWEST = ROOT / ".venv-newest"
NEWEST_PYTHON = NEWEST / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
UNPINNED = re.compile(r"(torch|torchaudio|triton|nvidia-[\w.-]+|cuda-[\w.-]+)==", re.IGNORECASE)  # the torch stack


def sh(*cmd, env=None) -> None:
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run(list(map(str, cmd)), cwd=ROOT, check=True, env=env)


def setup() -> None:
    if sys.version_info < (3, 10):
        sys.exit(f"Python 3.10 or newer is needed, this is {sys.version.split()[0]}")
    if not PYTHON.exists():
        print(f"creating the virtual environment {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + (ROOT / "constraints.txt").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    sh(PYTHON, "-m", "pip", "install", "--disable-pip-version-check", "-q",
       "-c", "constraints.txt", "-e", ".[book,parity]")
    STAMP.write_text(wanted)


# the unit tests of torch's direct users: features, models, the training loop, pre-training, distillation and
# INT8 (118 tests, 150 s on 2 cores on the newest torch). The teachers', students', data, cache, runner and book tests run in
# ``test`` only: CI's time limit (the newest leg took about 15 min with every test not marked slow)
NEWEST_TESTS = ("augment", "beats", "dsp", "pretrain", "quantize", "train", "units", "distill")


def newest(extra: list[str]) -> None:
    """The unit tests and the Quick tour on the newest torch, in ``.venv-newest`` (see the module docstring)."""
    if not NEWEST_PYTHON.exists():
        print(f"creating the virtual environment {NEWEST}", flush=True)
        venv.create(NEWEST, with_pip=True)
    pins = NEWEST / "constraints-without-torch.txt"
    pins.write_text("".join(line for line in (ROOT / "constraints.txt").read_text().splitlines(keepends=True)
                            if not UNPINNED.match(line)))
    uncapped = {**os.environ, "PIP_CONFIG_FILE": os.devnull}
    # no cache: it would hold a second copy of the ~3 GB of wheels a new torch release brings
    pip = (NEWEST_PYTHON, "-m", "pip", "install", "--disable-pip-version-check", "--no-cache-dir", "-q")
    sh(*pip, "--upgrade", "-c", pins, "torch", ".[book]", env=uncapped)
    sh(*pip, "--no-deps", "--force-reinstall", ".", env=uncapped)  # a plain install, of this checkout's code
    sh(NEWEST_PYTHON, "-c", "import importlib.util, torch, torchao; "
       "print('torch', torch.__version__, '| torchao', torchao.__version__, '| torchaudio:', "
       "'installed' if importlib.util.find_spec('torchaudio') else 'absent')")
    sh(NEWEST_PYTHON, "-m", "pytest", *(f"tests/test_{t}.py" for t in NEWEST_TESTS), "-p", "no:cacheprovider",
       "-m", "not slow", *extra)
    with tempfile.TemporaryDirectory() as tmp:  # run there, the chapter imports the installed asc_lib
        sh(NEWEST_PYTHON, "-m", "asc_lib.book", "run", "--only", "quick_tour", "--into", tmp)


def smoke(extra: list[str]) -> None:
    """The ``full`` profile's smoke run on fresh fixtures, in a temporary folder (see the module docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        sh(PYTHON, "-m", "asc_lib.smoke", "fixtures", tmp)
        sh(PYTHON, "-m", "asc_lib.book", "run", "--profile", "full", "--smoke", "-p", "data_root", f"{tmp}/tau22",
           "-p", "beats_dir", f"{tmp}/beats", "--into", f"{tmp}/run", *extra)


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("book", "test", "newest", "smoke"):
        print(__doc__)
        return 2
    command, extra = sys.argv[1], sys.argv[2:]
    if command != "newest":
        setup()
    sys.path.insert(0, str(ROOT))
    from asc_lib.kernels import pin_kernels  # stdlib only: no torch here

    pin_kernels()  # every process started below (runner, papermill, pytest, their kernels) inherits it
    try:
        if command == "book":
            sh(PYTHON, "-m", "asc_lib.book", "run", *extra)
            sh(PYTHON, "-m", "asc_lib.book", "build")
        elif command == "newest":
            newest(extra)
        elif command == "smoke":
            smoke(extra)
        else:
            sh(PYTHON, "-m", "pytest", *extra)
    except subprocess.CalledProcessError as err:
        return err.returncode or 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The book's two commands, for a fresh machine with only Python (3.10+) and pip.

    python3 tasks.py book   # set up .venv, execute every chapter (profile ci), build the HTML
    python3 tasks.py test   # set up .venv, run the tests (unit, nbval, book build)

Both create ``.venv`` when it is missing and install the pinned dependencies and ``asc_lib`` into it;
they reinstall only when ``pyproject.toml`` or ``constraints.txt`` changed, so a second call reuses it.
Extra arguments go to the runner (``book``) or to pytest (``test``).
"""

import hashlib
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
STAMP = VENV / ".asc-installed"


def sh(*cmd) -> None:
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run(list(map(str, cmd)), cwd=ROOT, check=True)


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


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("book", "test"):
        print(__doc__)
        return 2
    command, extra = sys.argv[1], sys.argv[2:]
    setup()
    sys.path.insert(0, str(ROOT))
    from asc_lib.kernels import pin_kernels  # stdlib only: no torch here

    pin_kernels()  # every process started below (runner, papermill, pytest, their kernels) inherits it
    try:
        if command == "book":
            sh(PYTHON, "-m", "asc_lib.book", "run", *extra)
            sh(PYTHON, "-m", "asc_lib.book", "build")
        else:
            sh(PYTHON, "-m", "pytest", *extra)
    except subprocess.CalledProcessError as err:
        return err.returncode or 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

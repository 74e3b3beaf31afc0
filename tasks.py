#!/usr/bin/env python3
"""The book's commands, for a fresh machine with only Python (3.10+) and pip.

    python3 tasks.py book     # set up .venv, execute every chapter (profile ci), build the HTML
    python3 tasks.py test     # set up .venv, run the tests (unit, nbval, book build)
    python3 tasks.py newest   # in .venv-newest, the newest torch on the index: unit tests + Quick tour
    python3 tasks.py smoke    # the full profile's smoke run on test-made TAU22 and BEATs fixtures
    python3 tasks.py colab    # in .venv-colab, Colab's versions: the chapters' install cell + Quick tour

``book`` and ``test`` create ``.venv`` when it is missing and install the pinned dependencies and
``asc_lib`` into it; they reinstall only when ``pyproject.toml`` or ``constraints.txt`` changed, so a
second call reuses it. Extra arguments go to the runner (``book``, ``colab``) or to pytest (``test``,
``newest``). A ``.venv`` whose stamp says installed but in which ``import asc_lib, papermill`` fails is
installed again; one that cannot be repaired (no pip, its ``python`` gone) is named, with the advice to
delete it, and so is a missing ``pyproject.toml`` or ``constraints.txt``.

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

``colab`` tries what a reader who opens a chapter in Colab meets. It builds ``.venv-colab`` from
``tests/colab/requirements.txt`` (Colab's runtime: which versions, from where and of when, is in its
header) on Colab's Python, 3.13, where this machine has one (``python3.13`` on the PATH, or pyenv's),
else on this Python, and says so. Then it runs each chapter's install cell (tagged ``nbval-skip``) as
Colab does: its ``%pip install`` line, with this checkout in place of the GitHub address and without
this machine's pip configuration (Colab has none, so no cap on torch). Last, it imports the installed
``asc_lib`` and executes the Quick tour into a temporary folder, with papermill added for the runner.
Each run first undoes the last run's install cell (removes what it added, puts back what it changed):
every Colab session starts from Colab's image. The first run downloads about 3 GB (PyPI's torch 2.11.0
is a CUDA build; .venv-colab takes 5 GB) and took 15 min on 2 busy cores, a later one 5 min; ``.venv``
is not touched.
"""

import glob
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
NEWEST = ROOT / ".venv-newest"
COLAB = ROOT / ".venv-colab"
COLAB_REQUIREMENTS = "tests/colab/requirements.txt"
UNPINNED = re.compile(r"(torch|torchaudio|triton|nvidia-[\w.-]+|cuda-[\w.-]+)==", re.IGNORECASE)  # the torch stack


def python_in(venv_dir: Path) -> Path:
    return venv_dir / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def sh(*cmd, env=None, cwd=None) -> None:
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run(list(map(str, cmd)), cwd=cwd or ROOT, check=True, env=env)


def works(*cmd) -> bool:
    """Whether a command starts and succeeds (its output hidden): the checks of a virtual environment. It runs
    outside the checkout, so that ``import asc_lib`` finds the installed package, not the folder."""
    try:
        return subprocess.run(list(map(str, cmd)), cwd=tempfile.gettempdir(), capture_output=True).returncode == 0
    except OSError:  # a python that is not there or cannot be executed
        return False


def read(name: str) -> bytes:
    try:
        return (ROOT / name).read_bytes()
    except FileNotFoundError:
        sys.exit(f"{ROOT / name} is missing: it comes with the checkout (git checkout -- {name} restores it)")


IMPORTS = "import asc_lib.train, papermill"  # the library with its dependencies (torch, numpy), and the runner's


def setup() -> None:
    """Make ``.venv`` ready: create it, install when the stamp is stale or lies, or say why it cannot be."""
    if sys.version_info < (3, 10):
        sys.exit(f"Python 3.10 or newer is needed, this is {sys.version.split()[0]}")
    python, stamp = python_in(VENV), VENV / ".asc-installed"
    wanted = hashlib.sha256(read("pyproject.toml") + read("constraints.txt")).hexdigest()

    def broken(why: str):
        sys.exit(f"{VENV} is broken: {why}. Delete it (rm -rf {VENV}) and run this command again to make it anew.")

    if not VENV.exists():
        print(f"creating the virtual environment {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    elif not works(python, "-c", ""):  # a dangling link: the Python it was made with is gone
        broken(f"its Python, {python}, is missing or does not start")
    if stamp.exists() and stamp.read_text() == wanted:
        if works(python, "-c", IMPORTS):
            return
        print(f"{VENV} is marked installed, but `{IMPORTS}` fails in it: installing again", flush=True)
    if not works(python, "-m", "pip", "--version"):
        broken(f"it has no pip ({python} -m pip fails)")
    sh(python, "-m", "pip", "install", "--disable-pip-version-check", "-q",
       "-c", "constraints.txt", "-e", ".[book,parity]")
    if not works(python, "-c", IMPORTS):
        broken(f"`{IMPORTS}` fails in it after installing")
    stamp.write_text(wanted)


# the unit tests of torch's direct users: features, models, the training loop, pre-training, distillation and
# INT8 (118 tests, 150 s on 2 cores on the newest torch). The teachers', students', data, cache, runner and book tests run in
# ``test`` only: CI's time limit (the newest leg took about 15 min with every test not marked slow)
NEWEST_TESTS = ("augment", "beats", "dsp", "pretrain", "quantize", "train", "units", "distill")


def newest(extra: list[str]) -> None:
    """The unit tests and the Quick tour on the newest torch, in ``.venv-newest`` (see the module docstring)."""
    python = python_in(NEWEST)
    if not python.exists():
        print(f"creating the virtual environment {NEWEST}", flush=True)
        venv.create(NEWEST, with_pip=True)
    pins = NEWEST / "constraints-without-torch.txt"
    pins.write_text("".join(line for line in read("constraints.txt").decode().splitlines(keepends=True)
                            if not UNPINNED.match(line)))
    uncapped = {**os.environ, "PIP_CONFIG_FILE": os.devnull}
    # no cache: it would hold a second copy of the ~3 GB of wheels a new torch release brings
    pip = (python, "-m", "pip", "install", "--disable-pip-version-check", "--no-cache-dir", "-q")
    sh(*pip, "--upgrade", "-c", pins, "torch", ".[book]", env=uncapped)
    sh(*pip, "--no-deps", "--force-reinstall", ".", env=uncapped)  # a plain install, of this checkout's code
    sh(python, "-c", "import importlib.util, torch, torchao; "
       "print('torch', torch.__version__, '| torchao', torchao.__version__, '| torchaudio:', "
       "'installed' if importlib.util.find_spec('torchaudio') else 'absent')")
    sh(python, "-m", "pytest", *(f"tests/test_{t}.py" for t in NEWEST_TESTS), "-p", "no:cacheprovider",
       "-m", "not slow", *extra)
    with tempfile.TemporaryDirectory() as tmp:  # run there, the chapter imports the installed asc_lib
        sh(python, "-m", "asc_lib.book", "run", "--only", "quick_tour", "--into", tmp)


def smoke(extra: list[str]) -> None:
    """The ``full`` profile's smoke run on fresh fixtures, in a temporary folder (see the module docstring)."""
    python = python_in(VENV)
    with tempfile.TemporaryDirectory() as tmp:
        sh(python, "-m", "asc_lib.smoke", "fixtures", tmp)
        sh(python, "-m", "asc_lib.book", "run", "--profile", "full", "--smoke", "-p", "data_root", f"{tmp}/tau22",
           "-p", "beats_dir", f"{tmp}/beats", "--into", f"{tmp}/run", *extra)


def colab_interpreter() -> str:
    """Colab's Python, 3.13, where this machine has one (on the PATH, or pyenv's), else this one."""
    pyenv = sorted(glob.glob(str(Path.home() / ".pyenv/versions/3.13*/bin/python3.13")), reverse=True)
    for python in (shutil.which("python3.13"), *pyenv):  # pyenv's shim on the PATH fails unless 3.13 is chosen
        if python and works(python, "-c", "import venv"):
            return python
    print(f"no Python 3.13 (Colab's) here: using this one, {sys.version.split()[0]}", flush=True)
    return sys.executable


def install_cells() -> dict[str, list[str]]:
    """Each distinct ``%pip install`` line of the chapters' Colab install cells, with the chapters that hold it."""
    found = {}
    for chapter in sorted((ROOT / "chapters").glob("[0-9]*.ipynb")):
        cells = [cell for cell in json.loads(chapter.read_text())["cells"]
                 if "nbval-skip" in cell["metadata"].get("tags", [])]
        pips = [line.strip() for cell in cells for line in "".join(cell["source"]).splitlines()
                if re.match(r"\s*[%!]pip install ", line)]
        if len(pips) != 1 or "git+https://" not in pips[0]:
            sys.exit(f"{chapter}: expected one `%pip install ... git+https://...` line in its install cell "
                     f"(tagged nbval-skip), found {pips}")
        found.setdefault(pips[0], []).append(chapter.stem)
    return found


def installed(python: Path) -> str:
    return subprocess.run([python, "-m", "pip", "freeze", "--all"], check=True, capture_output=True, text=True).stdout


def names(freeze: str) -> set[str]:
    return {re.split(r"[=@ ]", line)[0] for line in freeze.splitlines() if line}


def colab(extra: list[str]) -> None:
    """The chapters' install cell and the Quick tour on Colab's versions (see the module docstring)."""
    python, stamp, image = python_in(COLAB), COLAB / ".asc-colab", COLAB / "colab-image.txt"
    interpreter = colab_interpreter()
    wanted = hashlib.sha256(read(COLAB_REQUIREMENTS) + interpreter.encode()).hexdigest()
    no_config = {**os.environ, "PIP_CONFIG_FILE": os.devnull}  # as in Colab: no pip configuration, no cap on torch
    # no cache: it would hold a second copy of the ~3 GB of wheels torch brings
    pip = (python, "-m", "pip", "--disable-pip-version-check", "--no-cache-dir")
    if stamp.exists() and stamp.read_text() == wanted:  # back to Colab's image: undo the last run's install cell
        added = names(installed(python)) - names(image.read_text())
        if added:
            sh(*pip, "uninstall", "-q", "-y", *sorted(added))
        sh(*pip, "install", "-q", "-r", image, env=no_config)
    else:
        shutil.rmtree(COLAB, ignore_errors=True)
        sh(interpreter, "-m", "venv", COLAB)
        sh(*pip, "install", "-q", "-r", COLAB_REQUIREMENTS, env=no_config)
        image.write_text(installed(python))
        stamp.write_text(wanted)
    for line, chapters in install_cells().items():
        print(f"the install cell of {', '.join(chapters)}, with this checkout for GitHub:", flush=True)
        args = [re.sub(r"git\+https://\S+", ROOT.as_uri(), arg) for arg in shlex.split(line)[1:]]
        sh(*pip, *args, env=no_config)
    sh(*pip, "install", "-q", "papermill", env=no_config)  # the runner's: Colab runs a chapter in its own kernel
    with tempfile.TemporaryDirectory() as tmp:  # the import from outside the checkout: the installed asc_lib
        sh(python, "-c", "import sys, asc_lib, numpy, pandas, torch, torchao; print('Python', sys.version.split()[0], "
           "'| torch', torch.__version__, '| torchao', torchao.__version__, '| numpy', numpy.__version__, "
           "'| pandas', pandas.__version__, '| asc_lib from', asc_lib.__file__)", cwd=tmp)
        sh(python, "-m", "asc_lib.book", "run", "--only", "quick_tour", "--into", tmp, *extra)


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("book", "test", "newest", "smoke", "colab"):
        print(__doc__)
        return 2
    command, extra = sys.argv[1], sys.argv[2:]
    try:
        if command not in ("newest", "colab"):
            setup()
        sys.path.insert(0, str(ROOT))
        from asc_lib.kernels import pin_kernels  # stdlib only: no torch here

        pin_kernels()  # every process started below (runner, papermill, pytest, their kernels) inherits it
        if command == "book":
            sh(python_in(VENV), "-m", "asc_lib.book", "run", *extra)
            sh(python_in(VENV), "-m", "asc_lib.book", "build")
        elif command == "newest":
            newest(extra)
        elif command == "smoke":
            smoke(extra)
        elif command == "colab":
            colab(extra)
        else:
            sh(python_in(VENV), "-m", "pytest", "-m", "not newest_leg", *extra)  # see pyproject's markers
    except subprocess.CalledProcessError as err:
        return err.returncode or 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

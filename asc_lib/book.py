"""Execute the chapters with papermill into ``book/`` and build the HTML with Jupyter Book.

    python -m asc_lib.book run [--profile ci|full] [--only CHAPTER ...] [-p NAME VALUE ...]
    python -m asc_lib.book run --profile full --smoke -p data_root DIR -p beats_dir DIR [--into DIR]
    python -m asc_lib.book build

``run`` executes ``chapters/*.ipynb`` in order, each in its own papermill process with a time limit,
writes the executed notebook to ``book/`` only when every cell succeeded (so a failed run never leaves
a half-executed chapter there), stops on the first failure naming the chapter and the cell, and ends
with a table of wall times. ``--into DIR`` executes them into a folder outside the checkout instead,
their tables into ``DIR/results``; one runner at a time executes into a folder. ``--smoke`` runs a
profile's smoke version (``full-smoke``: the same code path with the amounts cut, see
:func:`asc_lib.profiles.smoke`) into a folder of its own, never ``book/``, and ends by printing what was cut.
"""

from __future__ import annotations

import argparse
import ast
import fcntl
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import types
import typing
from contextlib import contextmanager
from pathlib import Path

import nbformat
import pandas as pd
import papermill

from .integrity import build_lock, is_locked
from .paths import repo_root
from .profiles import PROFILES, differences

SMOKE_INTO = Path(tempfile.gettempdir()) / "asc-lib-smoke"  # outside any checkout: results and artifacts too
CHAPTER_TIMEOUT_S = {"ci": 3000, "full": 24 * 3600, "full-smoke": 900}  # per chapter, wall clock
CELL_TIMEOUT_S = {"ci": 2400, "full": 24 * 3600, "full-smoke": 900}


def chapters(root: Path) -> list[Path]:
    """Source chapters in book order (their file names start with a number)."""
    found = sorted((root / "chapters").glob("[0-9]*.ipynb"))
    if not found:
        raise FileNotFoundError(f"no chapters found: expected {root / 'chapters'}/NN_name.ipynb")
    return found


def select(found: list[Path], only: list[str] | None) -> list[Path]:
    """Chapters named by ``only`` (file stem, with or without its number prefix)."""
    if not only:
        return found
    picked = []
    for name in only:
        match = [p for p in found if name in (p.stem, p.stem.split("_", 1)[-1], p.stem.split("_", 1)[0])]
        if not match:
            raise SystemExit(f"no chapter called {name!r}; chapters are: {', '.join(p.stem for p in found)}")
        picked += [p for p in match if p not in picked]
    return [p for p in found if p in picked]


def parse_value(text: str):
    """A ``-p`` value: a Python literal when it reads as one (3, 0.5, True, None, 'x'), else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def chapter_parameters(path: Path) -> dict:
    """The names (and defaults) in a chapter's ``parameters`` cell."""
    return papermill.inspect_notebook(str(path))


def failing_cell(executed: Path) -> str:
    """Describe the first cell with an error, numbered as in the source chapter (code cells from 1)."""
    if not executed.exists():
        return "no cell ran (the kernel did not start?)"
    nb = nbformat.read(executed, as_version=4)
    added = {"injected-parameters", "papermill-error-cell-tag"}  # cells papermill put in
    code = [c for c in nb.cells if c.cell_type == "code" and not added & set(c.metadata.get("tags", []))]
    for number, cell in enumerate(code, 1):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                first = next((line for line in cell.source.splitlines() if line.strip()), "")
                return f"code cell {number} (`{first[:70]}`): {out.get('ename')}: {out.get('evalue')}"
    return "no cell has an error recorded (time limit or kernel death)"


def collapse_progress(outputs: list) -> list:
    """Merge consecutive stderr outputs and keep each line's last state (``\\r`` redraws of tqdm)."""
    merged = []
    for out in outputs:
        if out.get("output_type") == "stream" and out.get("name") == "stderr" and merged \
                and merged[-1].get("output_type") == "stream" and merged[-1].get("name") == "stderr":
            merged[-1]["text"] += out["text"]
        else:
            merged.append(out)
    for out in merged:
        if out.get("output_type") == "stream" and out.get("name") == "stderr":
            out["text"] = "\n".join(line.rstrip("\r").split("\r")[-1] for line in out["text"].split("\n"))
    return merged


def finish(executed: Path, target: Path) -> None:
    """Hide papermill's injected cell, drop per-run metadata and progress-bar redraws (so a re-run
    changes only what really changed), and move the notebook atomically into ``book/``."""
    nb = nbformat.read(executed, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags:
            cell.id = "injected-parameters"
            if "remove-cell" not in tags:
                cell.metadata["tags"] = tags + ["remove-cell"]
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = collapse_progress(cell.outputs)
    for key in ("start_time", "end_time", "duration", "exception", "output_path"):  # output_path: a temp file
        nb.metadata.get("papermill", {}).pop(key, None)
    tmp = target.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, target)


STAGING = "ASC_RESULTS_STAGING"  # where results.save writes while a chapter runs under the runner
RESULTS = "ASC_RESULTS"  # the results folder of the run (see asc_lib.paths.results_dir), set by the runner
TMP_PREFIX = "asc-chapter-"


def _die_with_parent(parent: int) -> None:
    """In the papermill child, before it starts: be killed when the runner dies, even by SIGKILL (Linux;
    the kernel papermill starts exits when papermill does: ipykernel polls its parent)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the runner's own clean-up (an exception, SIGINT, SIGTERM) still applies
    if os.getppid() != parent:  # the runner died before the line above ran
        os._exit(1)


def remove_orphans() -> None:
    """Delete the temporary folders of chapter runs whose runner was killed (no process holds their lock)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{TMP_PREFIX}*"):
        if folder.is_dir() and not is_locked(folder / "run"):
            shutil.rmtree(folder, ignore_errors=True)


def run_chapter(src: Path, target: Path, params: dict, profile: str, build: Path) -> tuple[bool, str]:
    """Execute one chapter with papermill in its own process group; ``(ok, message)``. A failed chapter's
    partial notebook is kept in ``build/_build/failed``.

    The chapter's result tables are staged in the run's temporary folder and moved into the results folder
    beside the notebook (``book/results``, or ``results/`` in an ``--into`` folder: the chapter's
    :func:`asc_lib.paths.results_dir` too) with the notebook, only if every cell succeeded. If the runner
    stops (an exception, Ctrl-C, SIGTERM), papermill and its kernel are killed and the temporary folder
    removed; if it is killed (SIGKILL), they die with it and the next run removes the folder."""
    remove_orphans()
    with tempfile.TemporaryDirectory(prefix=TMP_PREFIX) as tmp, build_lock(Path(tmp) / "run", "chapter run"):
        out = Path(tmp) / src.name
        pfile = Path(tmp) / "params.json"
        pfile.write_text(json.dumps(params))
        staged = Path(tmp) / "results"
        staged.mkdir()
        cmd = [sys.executable, "-m", "papermill", str(src), str(out), "-f", str(pfile),
               "--cwd", str(target.parent), "--kernel", "python3", "--progress-bar",
               "--execution-timeout", str(CELL_TIMEOUT_S[profile])]
        parent = os.getpid()
        results = target.parent / "results"
        proc = subprocess.Popen(cmd, start_new_session=True,
                                env={**os.environ, STAGING: str(staged), RESULTS: str(results)},
                                preexec_fn=lambda: _die_with_parent(parent))
        try:
            code = proc.wait(timeout=CHAPTER_TIMEOUT_S[profile])
        except subprocess.TimeoutExpired:
            return False, f"time limit of {CHAPTER_TIMEOUT_S[profile]} s reached; {failing_cell(out)}"
        finally:
            if proc.poll() is None:  # time limit, Ctrl-C, SIGTERM: papermill and its kernel stop here
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if code != 0:
            kept = build / "_build" / "failed" / src.name
            if out.exists():
                kept.parent.mkdir(parents=True, exist_ok=True)
                os.replace(out, kept)
            return False, f"{failing_cell(kept if kept.exists() else out)} (partial notebook: {kept})"
        results.mkdir(exist_ok=True)
        for table in sorted(staged.iterdir()):
            shutil.copyfile(table, results / f".{table.name}.tmp")
            os.replace(results / f".{table.name}.tmp", results / table.name)
        finish(out, target)
        return True, "ok"


# The type of each chapter parameter whose default, None ("the profile's value"), does not show it
PARAMETER_TYPES = {"clips_per_scene": int | None, "epochs": int | None, "pretrain_epochs": int | None,
                   "iterations": int | None, "splits": list[int] | None, "temperature": float | None}


def parameter_type(name: str, default: str):
    """What a ``-p`` value of ``name`` must be: the type of its ``default`` (the text in the parameters cell)
    or, for a default of None, what :data:`PARAMETER_TYPES` declares; None when neither says."""
    try:
        value = ast.literal_eval(default)
    except (ValueError, SyntaxError):
        return None  # not a literal: nothing to check against
    return PARAMETER_TYPES.get(name) if value is None else type(value)


def convert(value, kind):
    """``value`` as a ``kind`` (``int``, ``float | None``, ``list[int]`` ...), or a ``TypeError``. An int for a
    float becomes a float and a tuple for a list a list, so that ``-p temperature 2`` and the profile's 2.0
    inject one value: one run key, not a second training."""
    if isinstance(kind, types.UnionType):
        for option in typing.get_args(kind):
            try:
                return convert(value, option)
            except TypeError:
                pass
        raise TypeError(value)
    origin, args = typing.get_origin(kind) or kind, typing.get_args(kind)
    if isinstance(value, bool) != (origin is bool):  # True is an int to Python, not to a chapter
        raise TypeError(value)
    if origin is float and isinstance(value, int):
        value = float(value)
    if origin is list and isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, origin):
        raise TypeError(value)
    return [convert(v, args[0]) for v in value] if args else value


def _a(kind) -> str:
    """``kind`` in words: "an int", "a list of ints or None"."""
    if isinstance(kind, types.UnionType):
        return " or ".join(map(_a, typing.get_args(kind)))
    if kind is type(None):
        return "None"
    origin, args = typing.get_origin(kind) or kind, typing.get_args(kind)
    name = origin.__name__ + (f" of {args[0].__name__}s" if args else "")
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def check_types(declared: dict, overrides: dict) -> dict:
    """Each chapter's ``-p`` values, ``{path: {name: value}}``, as its parameters cell types them
    (:func:`parameter_type`, :func:`convert`); a value that does not fit stops the run before anything runs,
    naming the chapter and what it expects."""
    typed = {}
    for path, params in declared.items():
        typed[path] = {}
        for name, value in overrides.items():
            if name not in params:
                continue
            kind = parameter_type(name, params[name]["default"])
            try:
                typed[path][name] = value if kind is None else convert(value, kind)
            except TypeError:
                raise SystemExit(f"-p {name} {value!r}: {path.name} expects {_a(kind)} (its default is "
                                 f"{params[name]['default']}), got {_a(type(value))}") from None
    return typed


def into_problem(root: Path, into: Path) -> str | None:
    """Why chapters cannot be executed into ``into``, or None. A folder inside the checkout is refused:
    ``--into chapters`` would replace the source chapters, and the run's tables would land in
    ``book/results``; so is a file."""
    into = into.resolve()
    if into.exists() and not into.is_dir():
        return f"--into {into}: a file, not a folder; choose a folder (it is made if missing)"
    if into.is_relative_to(root.resolve()):
        return (f"--into {into}: inside the checkout {root}; choose a folder outside the checkout, or leave "
                "--into out to execute into book/")
    return None


@contextmanager
def one_runner(target: Path, lock: Path):
    """Hold ``lock`` (an ``fcntl.flock``) while chapters execute into ``target``: a second runner into the
    same folder stops with an error naming the first, instead of racing it for the same files. The lock
    dies with its process, so the file a killed runner leaves blocks nobody."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise SystemExit(f"another runner (process {holder}) is executing chapters into {target} (lock "
                             f"{lock}): wait for it to finish, or run into another folder (--into)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def run(root: Path, profile: str, only: list[str] | None, overrides: dict, into: Path | None = None) -> int:
    """Execute the selected chapters into ``book/`` (or ``into``: a folder outside the checkout runs them as
    Colab does, with results and artifacts in that folder, and leaves the published chapters alone), one
    runner at a time per folder."""
    if "profile" in overrides:
        raise SystemExit("set the profile with --profile, not -p profile")
    todo = select(chapters(root), only)
    declared = {p: chapter_parameters(p) for p in todo}
    unknown = set(overrides) - {name for d in declared.values() for name in d}
    if unknown:
        raise SystemExit(f"no selected chapter has parameter(s) {sorted(unknown)}")
    typed = check_types(declared, overrides)
    if into is not None and (problem := into_problem(root, into)):
        raise SystemExit(problem)
    target = (into or root / "book").resolve()
    target.mkdir(parents=True, exist_ok=True)
    build = target if into else root  # its _build/: the runner's lock, a failed chapter's partial notebook
    rows, status = [], 0
    with one_runner(target, build / "_build" / "runner.lock"):
        if PROFILES[profile].cut is not None:  # a smoke run trains everything again, whatever ran before
            shutil.rmtree(target / "artifacts" / profile, ignore_errors=True)
        for i, src in enumerate(todo, 1):
            params = {k: v for k, v in {"profile": profile, **typed[src]}.items() if k in declared[src]}
            print(f"[{i}/{len(todo)}] {src.stem}  profile={profile}  {params}", flush=True)
            start = time.perf_counter()
            ok, message = run_chapter(src, target / src.name, params, profile, build)
            seconds = time.perf_counter() - start
            rows.append((src.stem, "ok" if ok else "FAILED", seconds))
            if not ok:
                print(f"\nchapter {src.stem} failed: {message}", file=sys.stderr)
                status = 1
                break
    width = max(len(r[0]) for r in rows)
    print(f"\n{'chapter':<{width}}  status  wall time")
    for name, state, seconds in rows:
        print(f"{name:<{width}}  {state:<6}  {seconds:7.1f} s")
    print(f"{'total':<{width}}          {sum(r[2] for r in rows):7.1f} s")
    if PROFILES[profile].cut is not None:
        base = profile.removesuffix("-smoke")
        print(f"\n{profile}: the code path of {base} with these amounts cut ({base} -> {profile}):")
        for name, was, now in differences(PROFILES[base], PROFILES[profile]):
            if name != "name":
                print(f"  {name}: {was} -> {now}")
        print(f"executed chapters, results and artifacts: {target}")
    return status


def build(root: Path, output: Path | None = None) -> int:
    """``jupyter-book build`` with warnings as errors into ``output/_build`` (default: the checkout).

    Prints where ``index.html`` is and returns the exit code.
    """
    output = output or root
    cmd = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(root), "--builder", "html",
           "--path-output", str(output), "-W", "-n", "--keep-going"]
    code = subprocess.call(cmd)
    index = output / "_build" / "html" / "index.html"
    if code == 0 and index.exists():
        print(f"\nThe book is at {index}")
    return code


def _published_table(root: Path, published: str, name: str) -> pd.DataFrame:
    """``name`` (e.g. ``teachers.csv``) from the folder ``published`` or from ``book/results`` at the git
    revision ``published``."""
    if Path(published).is_dir():
        return pd.read_csv(Path(published) / name, index_col=0)
    got = subprocess.run(["git", "show", f"{published}:book/results/{name}"], cwd=root, capture_output=True,
                         text=True)
    if got.returncode != 0:
        raise SystemExit(f"compare: cannot read book/results/{name} at git revision {published!r} "
                         f"({got.stderr.strip()}); pass --published FOLDER")
    return pd.read_csv(io.StringIO(got.stdout), index_col=0)


def compare(root: Path, published: str) -> int:
    """Print which numbers of ``book/results`` moved from the published ones beyond the seed study's
    spread, and which claims changed verdict; 1 if any did (see :func:`asc_lib.results.compare`)."""
    from . import results

    folder = root / "book" / "results"
    tables = {src: results.systems(*(load("teachers.csv"), load("student.csv")))
              for src, load in (("published", lambda n: _published_table(root, published, n)),
                                ("new", lambda n: pd.read_csv(folder / n, index_col=0)))}
    numbers, claims = results.compare(tables["published"], tables["new"], results.read_seeds(folder / "seeds.csv"))
    pd.set_option("display.width", 200)
    print(numbers.round(2).to_string())
    print(claims.round(2).to_string())
    moved, changed = int(numbers.moved.sum()), int(claims["verdict changed"].sum())
    print(f"\n{moved} of {len(numbers)} numbers moved beyond 3 seed standard deviations (at least 0.5 points); "
          f"{changed} of {len(claims)} claims changed verdict")
    return 1 if moved or changed else 0


def exit_on_sigterm() -> None:
    """SIGTERM stops the runner as Ctrl-C does: papermill and its kernel are killed, temp folders removed."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asc_lib.book", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="execute the chapters into book/")
    p_run.add_argument("--profile", choices=sorted(p for p in PROFILES if PROFILES[p].cut is None), default="ci")
    p_run.add_argument("--only", nargs="+", action="extend", metavar="CHAPTER",
                       help="chapter names (e.g. quick_tour); repeatable")
    p_run.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                       help="set a chapter parameter (repeatable)")
    p_run.add_argument("--into", type=Path, metavar="DIR",
                       help="write the executed chapters here instead of book/ (outside the checkout: "
                            "results and artifacts go there too)")
    p_run.add_argument("--smoke", action="store_true",
                       help="the profile's smoke run: its code path with the amounts cut, into --into "
                            f"(default {SMOKE_INTO}; never book/)")
    sub.add_parser("build", help="build the HTML book from book/ (warnings are errors)")
    p_cmp = sub.add_parser("compare", help="compare book/results (after a run) with the published tables")
    p_cmp.add_argument("--published", default="HEAD", metavar="GIT_REF_OR_FOLDER",
                       help="a folder with the published teachers.csv and student.csv, or a git revision "
                            "whose book/results holds them (default: HEAD)")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    root = repo_root()
    if root is None:
        parser.error("run this from the book's checkout (a folder with _toc.yml and asc_lib/)")
    if args.command == "run":
        if args.into is not None and (problem := into_problem(root, args.into)):
            parser.error(problem)
        profile, into = args.profile, args.into
        if args.smoke:
            profile, into = f"{profile}-smoke", (into or SMOKE_INTO).resolve()
            if profile not in PROFILES:
                parser.error(f"--smoke: profile {args.profile!r} has no smoke version (full has)")
            given = {k for k, _ in args.p}
            if not {"data_root", "beats_dir"} <= given:
                parser.error("--smoke proves the full path on a TAU22 folder and the official BEATs checkpoints: pass "
                             "-p data_root DIR -p beats_dir DIR (test-made ones: python -m asc_lib.smoke fixtures "
                             "DIR, or python3 tasks.py smoke)")
            os.environ["ASC_ARTIFACTS"] = str(into / "artifacts")  # its own, emptied by run()
        return run(root, profile, args.only, {k: parse_value(v) for k, v in args.p}, into)
    if args.command == "compare":
        return compare(root, args.published)
    return build(root)


if __name__ == "__main__":
    sys.exit(main())

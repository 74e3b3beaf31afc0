"""What a later step trusts of an earlier one: content hashes checked on read, one builder at a time,
and free disk checked before a large file is written.

- :func:`file_hash` / :func:`verify`: a cached artifact (teacher logits, model weights, waveform caches,
  BEATs checkpoints) carries the hash of its bytes in the manifest written with it; a reader checks it
  before using the file (once per process per file: a second read of an unchanged file costs one
  ``stat``). A mismatch is an :class:`IntegrityError` naming the file and the way out.
- :func:`build_lock`: an exclusive ``fcntl.flock`` on ``.<name>.lock`` beside the artifact, held for the
  whole build. A second process waits, saying which process holds it; the lock dies with its process,
  so a killed builder never blocks the next one. A finished artifact (renamed into place whole, or marked
  finished by a file written last) is read without it, so a read-only folder of finished caches can be
  read; building in one is a clear error.
- :func:`check_free` / :func:`reserve`: the bytes a memory-mapped build will write are checked, then
  reserved (``posix_fallocate``), before the first row is written: a full disk is then a clear error,
  not a ``SIGBUS`` from a page of the map that the file system cannot back.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path


class IntegrityError(RuntimeError):
    """A cached file whose bytes are not those recorded when it was written."""


class NotWritableError(PermissionError):
    """An artifact to build in a folder this process cannot write (say a class's shared, read-only cache)."""


def file_hash(path) -> str:
    """BLAKE2b (128 bits) of the file's bytes, read in 16 MB blocks."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            h.update(block)
    return h.hexdigest()


_verified: dict[str, tuple] = {}  # path -> (stat signature, hash): files this process has checked


def _signature(path: Path) -> tuple:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def verify(path, expected: str | None, way_out: str) -> Path:
    """``path`` if its bytes hash to ``expected``; else an :class:`IntegrityError` naming it and ``way_out``
    (e.g. "delete FOLDER to train this run again"). ``expected`` None: the manifest predates hashes."""
    path = Path(path)
    if expected is None:
        raise IntegrityError(f"{path}: no content hash recorded for it (written by an older asc_lib); {way_out}")
    try:
        sig = _signature(path)
    except FileNotFoundError:
        raise IntegrityError(f"{path}: missing, though its manifest lists it; {way_out}") from None
    if _verified.get(str(path)) == (sig, expected):
        return path
    got = file_hash(path)
    if got != expected:
        raise IntegrityError(f"{path}: its bytes have changed since it was written (content hash {got}, "
                             f"recorded {expected}): the file is damaged or was edited; {way_out}")
    _verified[str(path)] = (sig, expected)
    return path


def hashes(folder: Path, names) -> dict:
    """``{name: file_hash(folder / name)}``, for a manifest."""
    return {name: file_hash(Path(folder) / name) for name in names}


def lock_path(target: Path) -> Path:
    target = Path(target)
    return target.with_name(f".{target.name}.lock")


@contextmanager
def build_lock(target, what: str, timeout: float | None = None, poll: float = 0.5):
    """Hold the build lock of ``target`` (a file or folder, which need not exist) while the block runs.

    If another process holds it, say so on stderr (naming its PID and ``what``) and wait for it; with
    ``timeout`` (seconds), give up after that long with a ``TimeoutError`` naming the holder. In a folder this
    process cannot write, a :class:`NotWritableError`: the caller is to build ``target`` there (a reader of a
    finished artifact takes no lock)."""
    lock = lock_path(target)
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        if err.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        raise NotWritableError(f"{what}: {target} must be built, but this process cannot write in {lock.parent} "
                               f"({err.strerror}): a finished one is read from a read-only folder, this one is "
                               "missing or unfinished; make the folder writable, or set ASC_ARTIFACTS to a "
                               "writable folder") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            print(f"{what}: process {holder} is building {target} (lock {lock}); waiting for it to finish",
                  file=sys.stderr, flush=True)
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if deadline is not None and time.monotonic() > deadline:
                        raise TimeoutError(f"{what}: process {holder} still holds {lock} after {timeout:g} s; "
                                           f"wait for it, or stop it (kill {holder})") from None
                    time.sleep(poll)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def is_locked(target) -> bool:
    """Whether some process holds the build lock of ``target`` now."""
    lock = lock_path(target)
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def partial_of(target) -> Path:
    """A temporary name beside ``target`` for this process's build of it (``.<name>.partial-<pid>``)."""
    target = Path(target)
    return target.with_name(f".{target.name}.partial-{os.getpid()}")


def remove_partials(target) -> None:
    """Delete every leftover ``.partial-*`` build of ``target``: call it holding the lock (no one else is
    building it, so they belong to builders that died)."""
    target = Path(target)
    for old in target.parent.glob(f".{target.name}.partial*"):
        shutil.rmtree(old) if old.is_dir() else old.unlink()


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def check_free(folder, needed: int, what: str) -> None:
    """An ``OSError`` (ENOSPC) naming ``what``, the bytes needed and ``folder`` if less is free there."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise OSError(errno.ENOSPC, f"{what} needs {_mb(needed)} free in {folder}, which has {_mb(free)}: free "
                      "some space there, or set ASC_ARTIFACTS to a folder on a larger disk")


def reserve(path, what: str) -> None:
    """Allocate the whole of ``path`` (a sparse file a memory map will fill) on disk now, so that a full
    disk is this clear error rather than a bus error at the first page it cannot back."""
    path = Path(path)
    size = path.stat().st_size
    check_free(path.parent, size - path.stat().st_blocks * 512, what)
    with open(path, "r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, size)
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
            raise OSError(errno.ENOSPC, f"{what} needs {_mb(size)} in {path.parent}, which ran out of space "
                          "while reserving it: free some space there, or set ASC_ARTIFACTS to a folder on "
                          "a larger disk") from err

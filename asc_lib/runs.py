"""A run's bookkeeping, shared by the teachers and the students: its folder and key, its lock, its manifest,
"completed", and the scores it publishes.

A run (a teacher or a student on one split) lives in its own folder, ``artifacts/<profile>/<kind>/<name>-
split<N>-<key>``, where ``key`` hashes everything that makes the run (:func:`run_folder`). One process trains
a run at a time (:func:`claim`); a second waits for it, then reuses the run. ``manifest.json``, written last
and atomically (:func:`write_manifest`), marks the run complete and records the content hash of each file it
publishes, which readers check (:func:`asc_lib.integrity.verify`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from .data import DEVICES, SCENES
from .data.cache import content_hashes
from .integrity import build_lock, hashes
from .metrics import class_accuracy, group_accuracy, macro_accuracy
from .paths import artifacts_dir

__all__ = ["checkpoint_ids", "run_folder", "claim", "completed", "read_manifest", "write_manifest", "scores"]


def checkpoint_ids(checkpoints: dict, profile: str) -> dict:
    """``{key: (file name, hash of its bytes)}``: other weights under the same name and size make another
    run. The hashes are remembered per (size, times, inode) in ``artifacts/<profile>/checkpoint_hashes.json``."""
    paths = [Path(v) for v in checkpoints.values()]
    digests = content_hashes(paths, memo=artifacts_dir(profile) / "checkpoint_hashes.json")
    return {k: (p.name, h) for k, p, h in zip(checkpoints, paths, digests)}


def run_folder(kind: str, name: str, split: int, config: dict, profile: str) -> tuple[Path, str]:
    """The cache folder of one run, ``artifacts/<profile>/<kind>/<name>-split<N>-<key>`` with ``key`` a
    hash of ``config`` (everything that makes the run): ``(folder, key)``."""
    key = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]
    slug = name.replace("*", "star").replace(" + ", "-").replace("+", "_").replace(" ", "-")
    return artifacts_dir(profile) / kind / f"{slug}-split{split}-{key}", key


@contextmanager
def claim(folder: Path, kind: str, name: str, split: int):
    """Hold the run's :func:`~asc_lib.integrity.build_lock` while the block runs (one process trains a run;
    a second waits for it) and give the run's manifest when it is complete, else None (see :func:`completed`).
    ``kind``: ``"teachers"`` or ``"students"``. A complete run (its manifest is written last) is read without
    the lock, so a read-only cache of finished runs can be read."""
    if (folder / "manifest.json").is_file():
        yield completed(folder, kind, name, split)
        return
    with build_lock(folder, f"{kind}: {name} on split {split}"):
        yield completed(folder, kind, name, split)


def completed(folder: Path, kind: str, name: str, split: int) -> dict | None:
    """The manifest of the run in ``folder`` when it is complete, else None (the folder made ready for
    training). Call it holding the run's lock (:func:`claim` does)."""
    if (folder / "manifest.json").is_file():
        print(f"{kind}: {name} on split {split}: reusing {folder}", file=sys.stderr)
        return read_manifest(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return None


def read_manifest(folder: Path) -> dict:
    """``folder/manifest.json`` with ``"folder"``: where it was found (the file holds no path, so an
    artifacts folder can move). A damaged one is an error naming it and the way out."""
    path = folder / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, OSError) as err:  # written atomically: damaged after the run, not by it
        raise RuntimeError(f"{path}: cannot read this run's manifest ({type(err).__name__}: {err}); "
                           f"delete {folder} to train this run again") from err
    return {**manifest, "folder": str(folder)}


def write_manifest(folder: Path, manifest: dict, files=()) -> dict:
    """Write ``folder/manifest.json`` atomically, last: it marks the run complete, and records the content
    hash of each of ``files`` (names in ``folder``), which readers check. Returns it as read back."""
    path = folder / "manifest.json"
    tmp = path.with_suffix(".tmp")
    manifest = {**{k: v for k, v in manifest.items() if k != "folder"}, "files": hashes(folder, files)}
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, path)
    return read_manifest(folder)


def scores(y, logits, devices) -> dict:
    """What a run publishes of its test logits (N, classes) against the labels ``y`` (N,): macro accuracy,
    and accuracy per class and per device (``devices``: each clip's device id), all in %."""
    pred = logits.argmax(1)
    return {"macro": 100 * macro_accuracy(y, pred, len(SCENES)),
            "class": dict(zip(SCENES, (100 * class_accuracy(y, pred, len(SCENES))).tolist())),
            "device": {DEVICES[d]: 100 * a for d, a in group_accuracy(y, pred, devices, len(SCENES)).items()}}

"""What the ``full`` profile's smoke run needs when the real data and checkpoints are not at hand.

    python -m asc_lib.smoke fixtures DIR     # DIR/tau22 (TAU22 layout) and DIR/beats (official format)
    python -m asc_lib.book run --profile full --smoke -p data_root DIR/tau22 -p beats_dir DIR/beats

- :func:`make_tau22_fixture`: a folder in the exact TAU22 development layout whose split files are lines
  of the official ones (``tests/data/tau22`` of the book's checkout: real file names and labels; an
  installed package without the checkout has no fixture lines) and whose audio is generated
  (44.1 kHz, 24-bit, mono, 1 s; the synthetic twin's scenes and devices).
- :func:`make_official_checkpoints`: ``BEATs_iter3_plus_AS2M.pt`` and ``..._finetuned_on_AS2M_cpt2.pt`` in
  the official format: the released 12-layer cfg, random weights, ``{'cfg', 'model'}``, and for the
  fine-tuned file the 527-class predictor and a ``label_dict``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
from pathlib import Path

import soundfile as sf
import torch

from .checkpoints import OFFICIAL
from .integrity import build_lock, partial_of, remove_partials
from .data.synthetic import scene_clip
from .data.tau import META_HEADER, NAME, read_tsv_rows, write_tsv
from .models.beats import BEATs, released_config

LINES = Path(__file__).resolve().parent.parent / "tests" / "data" / "tau22"
SPLIT_FILES = ("split5.csv", "split10.csv", "split25.csv", "split50.csv", "split100.csv", "test.csv")


def make_tau22_fixture(dest: Path, lines: Path = LINES) -> Path:
    """A TAU22-format folder at ``dest`` from the split files in ``lines`` (copied as they are), with
    ``meta.csv`` (every clip they list, its identifier and device read from its name) and one generated
    WAV per clip, each drawn from a seed made of its name. Written atomically, by one process at a time;
    an existing one is reused."""
    dest = Path(dest)
    with build_lock(dest, "TAU22 fixture"):
        if (dest / "meta.csv").is_file():
            return dest
        remove_partials(dest)
        return _write_tau22_fixture(dest, lines)


def _write_tau22_fixture(dest: Path, lines: Path) -> Path:
    names = {}
    for name in SPLIT_FILES:
        names.update((row[0], row[1]) for row in read_tsv_rows(Path(lines) / name)[1:])
    tmp = partial_of(dest)
    (tmp / "audio").mkdir(parents=True)
    meta = []
    for filename, scene in sorted(names.items()):
        m = NAME.match(filename)
        if m is None:
            raise ValueError(f"{lines}: {filename!r} is not a TAU22 clip name")
        seed = int.from_bytes(hashlib.sha256(filename.encode()).digest()[:4], "little")
        sf.write(tmp / filename, scene_clip(scene, m["device"], seed, sr=44100), 44100, subtype="PCM_24")
        meta.append((filename, scene, f"{m['city']}-{m['location']}", m["device"]))
    write_tsv(tmp / "meta.csv", META_HEADER, meta)
    for name in SPLIT_FILES:
        shutil.copyfile(Path(lines) / name, tmp / name)
    os.replace(tmp, dest)
    return dest


def make_official_checkpoints(dest: Path, seed: int = 0) -> dict:
    """Both official BEATs files in ``dest`` (see the module docstring), random weights drawn from ``seed``;
    ``{"SSL": path, "SSL+SL": path}``. Existing files are kept."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = {}
    for key, name in OFFICIAL.items():
        path = out[key] = dest / name
        with build_lock(path, "BEATs fixture"):
            if not path.is_file():
                _write_checkpoint(path, key == "SSL+SL", seed)
    return out


def _write_checkpoint(path: Path, finetuned: bool, seed: int) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BEATs(released_config(finetuned))
    ckpt = {"cfg": model.cfg.to_dict(), "model": model.state_dict()}
    if finetuned:  # index -> an AudioSet-style label id, as in the released file (not the real ids)
        ckpt["label_dict"] = {i: f"/m/fixture{i:03d}" for i in range(model.cfg.predictor_class)}
    tmp = partial_of(path)
    torch.save(ckpt, tmp)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asc_lib.smoke", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fixtures", help="write DIR/tau22 and DIR/beats")
    p.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    data = make_tau22_fixture(args.dir / "tau22")
    beats = make_official_checkpoints(args.dir / "beats")
    print(f"TAU22-format folder: {data}\nofficial-format BEATs checkpoints: {beats['SSL'].parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Read a folder in the TAU Urban Acoustic Scenes 2022 Mobile (development) layout.

    <root>/audio/<scene>-<city>-<location>-<segment>-<subsegment>-<device>.wav
    <root>/meta.csv       tab-separated: filename  scene_label  identifier  source_label
    <root>/split5.csv ... split100.csv, test.csv   tab-separated: filename  scene_label

The real dataset and the synthetic twin share this layout, so this one reader serves both.
Every problem names the file, the line and what was expected.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import soundfile as sf

from ..integrity import build_lock, partial_of, remove_partials
from . import DEVICES, SCENES

SPLITS = (5, 10, 25, 50, 100)
META_HEADER = ["filename", "scene_label", "identifier", "source_label"]
SPLIT_HEADER = ["filename", "scene_label"]
NAME = re.compile(r"^audio/(?P<scene>[a-z_]+)-(?P<city>[a-z]+)-(?P<location>\d+)-(?P<segment>\d+)"
                  r"-(?P<subsegment>\d+)-(?P<device>[a-z0-9]+)\.wav$")


class DatasetFormatError(ValueError):
    """A file of the dataset is not in the TAU22 format."""


def read_tsv_rows(path: Path) -> list[list[str]]:
    """The rows of the tab-separated UTF-8 file ``path``; a byte that is not UTF-8 is an error naming the
    file and the line."""
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise DatasetFormatError(f"{path}, line {line}: byte {raw[err.start]:#04x} "
                                 "is not UTF-8 text (expected a tab-separated UTF-8 file)") from None
    return list(csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), delimiter="\t"))  # an Excel BOM


def _read_tsv(path: Path, header: list[str]) -> list[list[str]]:
    if not path.is_file():
        raise DatasetFormatError(f"{path}: file not found (expected a tab-separated file with header "
                                 f"{' '.join(header)})")
    rows = read_tsv_rows(path)
    if not rows or rows[0] != header:
        found = " | ".join(rows[0]) if rows else "an empty file"
        raise DatasetFormatError(f"{path}: expected the tab-separated header {' | '.join(header)}, found {found}")
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DatasetFormatError(f"{path}, line {line}: expected {len(header)} tab-separated fields, found {len(row)}")
    return rows[1:]


def read_meta(root: Path) -> pd.DataFrame:
    """``meta.csv`` as a table, one row per clip, with the fields its file name encodes.

    Columns: filename, scene, city, location, identifier, recording (the 10 s segment the clip was cut
    from: scene-city-location-segment), subsegment, device, path.
    """
    root = Path(root)
    path = root / "meta.csv"
    records = []
    for line, (filename, scene, identifier, device) in enumerate(_read_tsv(path, META_HEADER), start=2):
        m = NAME.match(filename)
        if not m:
            raise DatasetFormatError(f"{path}, line {line}: {filename!r} is not "
                                     "audio/<scene>-<city>-<location>-<segment>-<subsegment>-<device>.wav")
        if (m["scene"], f"{m['city']}-{m['location']}", m["device"]) != (scene, identifier, device):
            raise DatasetFormatError(f"{path}, line {line}: the columns ({scene}, {identifier}, {device}) "
                                     f"disagree with the file name {filename}")
        if scene not in SCENES or device not in DEVICES:
            raise DatasetFormatError(f"{path}, line {line}: unknown scene {scene!r} or device {device!r}")
        records.append({
            "filename": filename, "scene": scene, "city": m["city"], "location": int(m["location"]),
            "identifier": identifier, "recording": f"{scene}-{identifier}-{m['segment']}",
            "subsegment": int(m["subsegment"]), "device": device, "path": str(root / filename),
        })
    meta = pd.DataFrame.from_records(records)
    if meta.empty:
        raise DatasetFormatError(f"{path}: no clips listed")
    if meta.filename.duplicated().any():
        raise DatasetFormatError(f"{path}: {meta.filename[meta.filename.duplicated()].iloc[0]} is listed twice")
    return meta


def read_split(root: Path, split: int | str, meta: pd.DataFrame | None = None) -> pd.DataFrame:
    """The rows of ``meta`` in ``split`` (5, 10, 25, 50, 100 or "test"), in the split file's order."""
    root = Path(root)
    if split not in (*SPLITS, "test"):
        raise ValueError(f"unknown split {split!r}: expected one of {SPLITS} or 'test'")
    meta = read_meta(root) if meta is None else meta
    path = root / (f"split{split}.csv" if split != "test" else "test.csv")
    rows = _read_tsv(path, SPLIT_HEADER)
    index = pd.Series(range(len(meta)), index=meta.filename)
    for line, (filename, scene) in enumerate(rows, start=2):
        if filename not in index:
            raise DatasetFormatError(f"{path}, line {line}: {filename} is not in {root / 'meta.csv'}")
        if meta.scene.iat[index[filename]] != scene:
            raise DatasetFormatError(f"{path}, line {line}: {filename} is labelled {scene!r} here but "
                                     f"{meta.scene.iat[index[filename]]!r} in meta.csv")
    return meta.iloc[index[[r[0] for r in rows]].to_numpy()].reset_index(drop=True)


def check_dataset(root: Path, meta: pd.DataFrame | None = None) -> list[str]:
    """Every problem of the split files of the TAU22 folder ``root`` (empty: none), each naming its file:
    a split or test file that cannot be read, lists a clip twice or misses a scene; splits that are not
    nested (5 in 10 in 25 in 50 in 100) or share recordings with the test split; a recording (its 1 s
    clips by one device) that a split takes only in part."""
    root = Path(root)
    meta = read_meta(root) if meta is None else meta
    problems, parts = [], {}
    for split in (*SPLITS, "test"):
        path = root / (f"split{split}.csv" if split != "test" else "test.csv")
        try:
            part = read_split(root, split, meta)
        except DatasetFormatError as err:
            problems.append(str(err))
            continue
        twice = part.filename[part.filename.duplicated()]
        if len(twice):
            problems.append(f"{path}: {len(twice)} clip(s) listed twice, e.g. {twice.iloc[0]}")
        if set(SCENES) - set(part.scene):
            problems.append(f"{path}: no clip of scene(s) {', '.join(sorted(set(SCENES) - set(part.scene)))}; "
                            f"every split needs all {len(SCENES)} scenes")
        parts[split] = (path, part)
    clips = meta.groupby(["recording", "device"]).filename.agg(set)  # every clip of each recording
    for split, (path, part) in parts.items():
        taken = part.groupby(["recording", "device"]).filename.agg(set)
        cut = [k for k, names in taken.items() if names != clips[k]]
        if cut:
            problems.append(f"{path}: {len(cut)} recording(s) only in part, e.g. {cut[0][0]} (device {cut[0][1]}): "
                            "a split takes whole 10 s recordings")
        if split != "test" and "test" in parts:
            shared = set(part.recording) & set(parts["test"][1].recording)
            if shared:
                problems.append(f"{path}: {len(shared)} recording(s) also in test.csv, e.g. {min(shared)}")
    for small, large in zip(SPLITS, SPLITS[1:]):
        if small in parts and large in parts:
            extra = set(parts[small][1].filename) - set(parts[large][1].filename)
            if extra:
                problems.append(f"{parts[small][0]}: {len(extra)} clip(s) not in split{large}.csv, e.g. "
                                f"{min(extra)}: the splits must be nested")
    return problems


def data_id(root: Path, memo: Path | None = None) -> str:
    """A fingerprint of the TAU22 folder ``root``: its meta.csv, its split files and the bytes of every clip
    meta.csv lists, so that a rewritten clip makes every run on it another run. Each clip is hashed once
    and remembered in ``memo`` (see :func:`asc_lib.data.cache.content_hashes`); moving the folder keeps it."""
    from .cache import content_hashes  # torch is imported there: not needed to read a folder

    h = hashlib.sha256()
    for name in ("meta.csv", "test.csv", *(f"split{s}.csv" for s in SPLITS)):
        h.update((Path(root) / name).read_bytes())
    names = read_meta(root).filename.tolist()
    for name, digest in zip(names, content_hashes([Path(root) / n for n in names], memo)):
        h.update(f"{name}\t{digest}\n".encode())
    return h.hexdigest()[:16]


def write_cut(root: Path, dest: Path, clips_per_recording: int) -> Path:
    """A smaller TAU22 folder at ``dest`` cut from the one at ``root``. Per scene it keeps two recordings
    (a 10 s segment by one device) of split5.csv, one by device a and one by another training device, and
    gives them to every split (the splits are nested, so each holds split5's); and two of test.csv, one by
    device a and one by another device. The other devices rotate over the scenes, so every device occurs
    (where the folder has it), and of each recording the first ``clips_per_recording`` 1 s clips are kept.
    ``meta.csv`` lists only the kept clips, so the cut is a valid TAU22 folder of whole recordings, with a
    validation recording per scene to hold out. The audio files are hard-linked (copied across file
    systems). Written atomically, by one process at a time; an existing ``dest`` is reused."""
    root, dest = Path(root), Path(dest)
    if not (dest / "meta.csv").is_file():  # a finished cut (renamed into place whole) is read without the lock
        with build_lock(dest, "TAU22 cut"):
            if not (dest / "meta.csv").is_file():
                remove_partials(dest)
                return _write_cut(root, dest, clips_per_recording)
    return dest


def _write_cut(root: Path, dest: Path, clips_per_recording: int) -> Path:
    meta = read_meta(root)

    def pick(part: pd.DataFrame, others: tuple[str, ...], path: Path) -> set:
        """Per scene a device-a recording and one of another segment, by ``others`` (rotating) if it can."""
        kept = set()
        for s, scene in enumerate(SCENES):
            recs = list(dict.fromkeys(zip(part.recording[part.scene == scene], part.device[part.scene == scene])))
            first = ([r for r in recs if r[1] == "a"] or recs)[:1]
            rest = [r for r in recs if r[0] not in {f[0] for f in first}]  # another 10 s segment
            second = [r for r in rest if r[1] == others[s % len(others)]] or [r for r in rest if r[1] != "a"] or rest
            if not second:
                raise DatasetFormatError(f"{path}: scene {scene!r} has {len(recs)} recording(s) of one segment; the "
                                         "smoke cut needs two segments per scene (one is held out for validation)")
            kept.update(first + second[:1])
        return kept

    train = pick(read_split(root, 5, meta), DEVICES[1:6], root / "split5.csv")
    clips = {}
    for split in (*SPLITS, "test"):
        part = read_split(root, split, meta)
        chosen = pick(part, DEVICES[1:], root / "test.csv") if split == "test" else train
        part = part[[r in chosen for r in zip(part.recording, part.device)]]
        clips[split] = part.sort_values("subsegment", kind="stable").groupby(["recording", "device"]).head(
            clips_per_recording).sort_index()
    tmp = partial_of(dest)
    (tmp / "audio").mkdir(parents=True)
    every = pd.concat(clips.values()).drop_duplicates("filename").sort_values("filename")
    for filename in every.filename:
        try:
            os.link(root / filename, tmp / filename)
        except OSError:
            shutil.copy2(root / filename, tmp / filename)
    write_tsv(tmp / "meta.csv", META_HEADER, zip(every.filename, every.scene, every.identifier, every.device))
    for split, part in clips.items():
        write_tsv(tmp / (f"split{split}.csv" if split != "test" else "test.csv"), SPLIT_HEADER,
                  zip(part.filename, part.scene))
    os.replace(tmp, dest)
    return dest


def write_tsv(path: Path, header: list[str], rows) -> None:
    """A tab-separated file with ``header`` and ``rows``, as the dataset's files are."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def check_audio(root: Path, meta: pd.DataFrame | None = None, sr: int = 44100) -> list[str]:
    """Every clip of ``meta.csv`` whose file is missing or whose header is not what TAU22 promises (``sr``
    Hz, mono, 1 s within 1 %, PCM of 16 bits or more or float), each naming the file: a check of the headers only, fast
    enough for the 230,350 real clips (the samples are checked when the waveform cache reads them)."""
    meta = read_meta(root) if meta is None else meta
    problems = []
    for path in meta.path:
        if not Path(path).is_file():
            problems.append(f"{path}: no such file (listed in {Path(root) / 'meta.csv'})")
            continue
        try:
            info = sf.info(path)
        except (sf.SoundFileError, RuntimeError, OSError) as err:
            problems.append(f"{path}: not a readable audio file ({err})")
            continue
        found = []
        if info.samplerate != sr:
            found.append(f"{info.samplerate} Hz")
        if info.channels != 1:
            found.append(f"{info.channels} channels")
        if abs(info.frames - sr) > 0.01 * sr:
            found.append(f"{info.frames} samples")
        if info.subtype not in ("PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"):
            found.append(info.subtype)
        if found:
            problems.append(f"{path}: expected {sr} Hz, mono, 1 s ({sr} samples within 1 %), PCM of 16 bits or more "
                            f"or float; found {', '.join(found)}")
    return problems


def is_tau_folder(root: Path) -> bool:
    """Whether ``root`` looks like a TAU22 folder (meta.csv, audio/, the split files)."""
    root = Path(root)
    return (root / "meta.csv").is_file() and (root / "audio").is_dir() and \
        all((root / f"split{s}.csv").is_file() for s in SPLITS) and (root / "test.csv").is_file()


def split_summary(root: Path, meta: pd.DataFrame | None = None) -> pd.DataFrame:
    """Clips, recordings, device shares and scene balance of every split, computed from the files."""
    meta = read_meta(root) if meta is None else meta
    rows = []
    for split in (*SPLITS, "test"):
        part = read_split(root, split, meta)
        counts = part.scene.value_counts()
        row = {"split": f"{split} %" if split != "test" else "test", "clips": len(part),
               "recordings": part.recording.nunique(), "locations": part.identifier.nunique(),
               "device a (%)": round(100 * (part.device == "a").mean(), 1),
               "scene min/max": f"{counts.min()}/{counts.max()}"}
        row.update({f"n_{d}": int((part.device == d).sum()) for d in DEVICES})
        rows.append(row)
    return pd.DataFrame(rows).set_index("split")


def main(argv: list[str] | None = None) -> int:
    """``python -m asc_lib.data.tau ROOT``: check a TAU22-format folder (its split files and every clip's
    audio header); print its splits or every problem."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m asc_lib.data.tau", description=main.__doc__)
    parser.add_argument("root", type=Path)
    root = parser.parse_args(argv).root
    try:
        meta = read_meta(root)
        problems = check_dataset(root, meta) + check_audio(root, meta)
    except DatasetFormatError as err:
        problems = [str(err)]
    if problems:
        print(f"{root}: {len(problems)} problem(s)\n" + "\n".join(f"- {p}" for p in problems))
        return 1
    print(split_summary(root, meta).to_string())
    print(f"{root}: {len(meta):,} clips, splits nested, disjoint from test, whole recordings, every scene present, "
          "every clip 44.1 kHz mono 1 s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

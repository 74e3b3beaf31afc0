"""Fetch the real data: resumable, verified downloads and safe unpacking.

* :func:`download` fetches one URL into ``dest``. It writes ``dest.part`` first, resumes it with an HTTP
  ``Range`` request after an interruption, checks the size and checksums, and only then renames the part
  to ``dest`` (atomically): a file at ``dest`` has always been verified.
* :func:`unpack` extracts a zip or tar archive through a temporary folder and writes a marker file last,
  so an interrupted unpack is redone and a finished one is skipped.
* :func:`zenodo_files`, :func:`fetch_tau22`, :func:`fetch_files` and :func:`fetch_micirp` get the TAU
  Urban Acoustic Scenes 2022 Mobile development set, the DCASE2024 split files and microphone impulse
  responses.

Every failure is a :class:`DownloadError` that names the file or URL and what was expected.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import tarfile
import tempfile
import time
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from urllib.error import HTTPError, URLError
from urllib.parse import quote
from urllib.request import Request, urlopen

from tqdm import tqdm

USER_AGENT = "asc_lib-downloader/0.1 (+https://github.com; replication book, Python urllib)"
CHUNK = 1 << 20  # bytes read per step
RETRY_WAIT_S = 2.0  # first pause before a retry; doubles each time (tests set it to 0)

# TAU Urban Acoustic Scenes 2022 Mobile, development set (Zenodo record 6337421): 21 audio zips
# TAU-urban-acoustic-scenes-2022-mobile-development.audio.{1..21}.zip plus .meta.zip and .doc.zip,
# which unpack into the folder TAU22_FOLDER (audio/*.wav, meta.csv).
TAU22_RECORD = 6337421
TAU22_FOLDER = "TAU-urban-acoustic-scenes-2022-mobile-development"
ZENODO_API = "https://zenodo.org/api/records/"

# DCASE2024 Task 1 development-train splits and the development-test split, published as release assets
# of the official baseline (github.com/CPJKU/dcase2024_task1_baseline, release "files"). No checksums are
# published: they are checked against the Content-Length the server sends.
SPLITS_URL = "https://github.com/CPJKU/dcase2024_task1_baseline/releases/download/files/"
SPLIT_FILES = ("split5.csv", "split10.csv", "split25.csv", "split50.csv", "split100.csv", "test.csv")

# Microphone impulse responses for device impulse response (DIR) augmentation. They come from MicIRP
# (http://micirp.blogspot.com/, Stewart Tavener / Xaudia.com, Creative Commons). The paper's own code
# (github.com/yqcai888/easy_dcase_task1, README) asks for them to be downloaded by hand from that blog
# into a folder of 67 wav files; the blog has no single archive to download. CPJKU redistribute a copy
# of these IRs, the one used by DIR augmentation (Morocutti et al., EUSIPCO 2023), in the folder
# datasets/dirs of github.com/fschmid56/cpjku_dcase23 (branch main); MICIRP_FILES lists the 59 wav
# files that folder holds. A folder of IR wav files gathered by hand from the blog works just as well.
MICIRP_URL = "https://raw.githubusercontent.com/fschmid56/cpjku_dcase23/main/datasets/dirs/"
MICIRP_PAGE = "http://micirp.blogspot.com/"
MICIRP_FILES = tuple(f"{name}.wav" for name in (
    "Altec_639", "Altec_670A", "Altec_670B", "American_R331", "Amperite_RA", "B&O_BM2", "B&O_BM6",
    "BBCmarconi_B", "Beomic_1000", "Beyer_M260", "Beyer_M360", "Coles_4038", "EMI_ribbon", "EV_RE20_Flat",
    "EV_RE20_HPF", "FilmIndustries_M8", "GEC_2373", "GEC_bigdynamic", "Grampian_GR2", "IR_AKGD12",
    "IR_AKG_FaultyD12", "IR_Astatic77", "IR_BeyerM500Stock", "IR_FosterDynamicDF1", "IR_GaumontKalee",
    "IR_Lomo52A5M", "IR_Meazzi", "IR_MelodiumRM6", "IR_OktavaMD57", "IR_OktavaMK18Silver",
    "IR_OktavaMK18_Overload", "IR_OktavaML16", "IR_RCAKU3a", "IR_ResloCR600", "IR_ResloDynamic",
    "IR_ResloURA", "IR_STC4033_Cardioid", "IR_STC4033_Pressure", "IR_STC4033_Ribbon", "IR_STC4035",
    "IR_Shure510C", "Melodium_42B_1", "Melodium_Model12", "RCA_44BX_1", "RCA_44BX_2", "RCA_74B",
    "RCA_77DX_1", "RCA_77DX_2", "RCA_KU3a_1", "RCA_varacoustic_fig8", "Reslo_RV", "Reslo_VMC2",
    "Shure315_HPF", "Shure315_flat", "Telefunken_M201", "Toshiba_BK5", "Toshiba_TypeG",
    "Toshiba_TypeK_HPF", "Toshiba_TypeK_flat"))


class DownloadError(RuntimeError):
    """A download, a check or an unpack failed; the message says which file and what was expected."""


class _Retry(Exception):
    """One attempt ended early (dropped connection, short body, server error): try again.

    ``total`` is the full size the server announced, where it did.
    """

    def __init__(self, message: str, total: int | None = None):
        super().__init__(message)
        self.total = total


# --------------------------------------------------------------------------------------- download


def _manual_hint(url: str, dest: Path, manual: str | None) -> str:
    return (f"Get the file by hand: open {manual or url} in a browser, download {dest.name} and save it as "
            f"{dest.resolve()} ; then run this again (a file already there is checked and kept).")


def _open(url: str, dest: Path, headers: dict[str, str], timeout: float, manual: str | None):
    """``urlopen`` with our User-Agent; a dead URL becomes a DownloadError with manual instructions."""
    request = Request(url, headers={"User-Agent": USER_AGENT, **headers})
    try:
        return urlopen(request, timeout=timeout)
    except HTTPError as e:
        if e.code in (404, 410):
            raise DownloadError(f"{url} answered HTTP {e.code} ({e.reason}): the file is gone or has moved. "
                                + _manual_hint(url, dest, manual)) from None
        if e.code == 416:
            raise  # the caller handles "range not satisfiable"
        if e.code == 429 or e.code >= 500:
            raise _Retry(f"HTTP {e.code} ({e.reason})") from None
        raise DownloadError(f"{url} answered HTTP {e.code} ({e.reason}) for {dest.name}. "
                            + _manual_hint(url, dest, manual)) from None
    except URLError as e:
        if isinstance(e.reason, (ConnectionRefusedError, socket.gaierror)):
            raise DownloadError(f"cannot reach {url} ({e.reason}). Check the network connection; if the "
                                "site is down or has moved: " + _manual_hint(url, dest, manual)) from None
        raise _Retry(f"cannot connect: {e.reason}") from None
    except (OSError, http.client.HTTPException) as e:
        raise _Retry(f"cannot connect: {e!r}") from None


def _total_from_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``(first byte, total size)`` from ``bytes a-b/total`` or ``bytes */total`` (None where absent)."""
    m = re.match(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", value or "")
    if not m:
        return None, None
    first = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(2)) if m.group(2) != "*" else None
    return first, total


def _attempt(url: str, part: Path, dest: Path, timeout: float, progress: bool,
             manual: str | None) -> int | None:
    """Fetch (the rest of) ``url`` into ``part``; returns the full size the server announced, or None.

    Raises ``_Retry`` when the transfer ended before the announced length.
    """
    have = part.stat().st_size if part.exists() else 0
    tag = _validator_file(part)  # the ETag (or Last-Modified) of the file the part is a prefix of
    headers = {"Range": f"bytes={have}-"} if have else {}
    if have and tag.is_file():  # If-Range: if the file changed on the server, it sends all of the new one
        headers["If-Range"] = tag.read_text()
    try:
        response = _open(url, dest, headers, timeout, manual)
    except HTTPError as e:  # 416: nothing left to send; the part may already be complete
        _, total = _total_from_content_range(e.headers.get("Content-Range"))
        e.close()
        if total is not None and total != have:
            part.unlink()
            raise _Retry(f"{part.name} has {have} bytes but the file has {total}; starting again") from None
        return total if total is not None else have
    with response:
        length = response.headers.get("Content-Length")
        length = int(length) if length is not None else None
        validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
        if response.status == 206:
            first, total = _total_from_content_range(response.headers.get("Content-Range"))
            if first != have:
                part.unlink()
                raise _Retry(f"asked for bytes {have}- but the server sent bytes from {first}; starting again")
            if tag.is_file() and validator and validator != tag.read_text():
                part.unlink()  # a server that ignored If-Range: the rest is of another file
                raise _Retry(f"{url} changed on the server since {part.name} was started; starting again")
            start, mode = have, "ab"
        else:  # 200: the server ignored the Range header, or the file changed: start from zero
            start, mode, total = 0, "wb", length
        try:
            tag.unlink(missing_ok=True)
            if validator:
                tag.write_text(validator)
        except OSError as e:
            raise _write_error(tag, e) from None
        if total is None and length is not None:
            total = start + length
        bar = tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=dest.name, disable=not progress)
        try:
            with bar, open(part, mode) as f:
                while True:
                    try:
                        chunk = response.read(CHUNK)
                    except (OSError, http.client.HTTPException) as e:
                        raise _Retry(f"connection dropped: {e!r}", total) from None
                    if not chunk:
                        break
                    f.write(chunk)
                    bar.update(len(chunk))
        except OSError as e:  # writing, not reading (a dropped connection is a _Retry)
            raise _write_error(part, e) from None
    got = part.stat().st_size
    if length is not None and got < start + length:
        raise _Retry(f"connection closed after {got} of {start + length} bytes", total)
    return total


def _validator_file(part: Path) -> Path:
    return part.with_name(part.name + ".etag")


def _write_error(path: Path, err: OSError) -> DownloadError:
    why = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
           errno.EACCES: "the folder is not writable", errno.EPERM: "the folder is not writable",
           errno.EROFS: "the file system is read-only"}.get(err.errno, err.strerror or str(err))
    return DownloadError(f"cannot write {path}: {why}. Free space or choose a writable folder, then run this "
                         "again: what was downloaded so far is kept and resumed.")


def _digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def _problem(path: Path, size: int | None, md5: str | None, sha256: str | None) -> str | None:
    """What is wrong with ``path`` (wrong size or checksum), or None when it verifies."""
    actual = path.stat().st_size
    if size is not None and actual != size:
        return f"size {actual} bytes, expected {size} bytes"
    for algorithm, expected in (("md5", md5), ("sha256", sha256)):
        if expected:
            value = _digest(path, algorithm)
            if value.lower() != expected.lower():
                return f"{algorithm} {value}, expected {expected.lower()}"
    return None


def download(url: str, dest: Path, *, size: int | None = None, md5: str | None = None,
             sha256: str | None = None, retries: int = 3, progress: bool = True, timeout: float = 60,
             manual: str | None = None) -> Path:
    """Download ``url`` to ``dest`` and verify it; returns ``dest``.

    A ``dest`` that already verifies (``size``, ``md5``, ``sha256`` where given) is kept as is. Otherwise
    the bytes go to ``dest.part``, which a later call resumes (HTTP ``Range``) after an interruption; a
    dropped connection is resumed up to ``retries`` times. Once complete, the part is checked against
    ``size`` (or the size the server announced) and the checksums; a wrong file is deleted, a verified one
    is renamed to ``dest``. ``manual`` is the page where a person can get the file by hand (named in the
    error when the URL is dead); by default the URL itself.
    """
    dest = Path(dest)
    if dest.is_file() and _problem(dest, size, md5, sha256) is None:
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _write_error(dest.parent, e) from None
    part = dest.with_name(dest.name + ".part")
    if part.exists() and size is not None and part.stat().st_size > size:
        part.unlink()  # longer than the file can be: not a prefix of it
    total = size
    attempt = 0
    while not (part.exists() and size is not None and part.stat().st_size == size):
        try:
            announced = _attempt(url, part, dest, timeout, progress, manual)
            total = size if size is not None else announced
            break
        except _Retry as e:
            total = size if size is not None else (e.total if e.total is not None else total)
            attempt += 1
            if attempt > retries:
                got = part.stat().st_size if part.exists() else 0
                expected = f"{total} bytes" if total is not None else "the full file"
                if got == 0:
                    raise DownloadError(f"could not download {dest.name} from {url}: {attempt} attempts failed "
                                        f"(last problem: {e}). Run this again later.") from None
                raise DownloadError(
                    f"{dest.name} is truncated: expected {expected}, got {got} bytes after {attempt} attempts "
                    f"from {url} (last problem: {e}). Run this again to resume from {part}.") from None
            time.sleep(RETRY_WAIT_S * 2 ** (attempt - 1))
    if total is None and not (md5 or sha256):
        part.unlink()
        _validator_file(part).unlink(missing_ok=True)
        raise DownloadError(f"{url} sent {dest.name} without announcing its size, and no size or checksum was "
                            "given: a truncated file could not be told from a complete one, so it was not kept. "
                            "Pass size=, md5= or sha256=.")
    problem = _problem(part, total, md5, sha256)
    _validator_file(part).unlink(missing_ok=True)
    if problem:
        part.unlink()
        raise DownloadError(f"{dest.name} downloaded from {url} does not verify: {problem}. The download was "
                            "deleted; run this again to fetch it anew, or check the expected values.")
    os.replace(part, dest)
    return dest


# ----------------------------------------------------------------------------------------- unpack


def _unsafe(name: str) -> bool:
    """Whether an archive member name is absolute or climbs out of the target folder."""
    name = name.replace("\\", "/")
    return name.startswith("/") or re.match(r"^[A-Za-z]:", name) is not None or ".." in PurePosixPath(name).parts


def _extract_zip(archive: Path, tmp: Path) -> None:
    with zipfile.ZipFile(archive) as z:
        for name in z.namelist():
            if _unsafe(name):
                raise DownloadError(f"{archive}: refusing member {name!r} (absolute path or '..'): it would be "
                                    "written outside the target folder")
        z.extractall(tmp)


def _extract_tar(archive: Path, tmp: Path) -> None:
    with tarfile.open(archive) as t:
        members = t.getmembers()
        for m in members:
            if _unsafe(m.name) or ((m.issym() or m.islnk()) and _unsafe(m.linkname)):
                raise DownloadError(f"{archive}: refusing member {m.name!r} (absolute path or '..'): it would be "
                                    "written outside the target folder")
            if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
                raise DownloadError(f"{archive}: refusing member {m.name!r}: not a file, folder or link")
        if hasattr(tarfile, "data_filter"):
            t.extractall(tmp, members=members, filter="data")
        else:  # Python without extraction filters: the checks above are the guard
            t.extractall(tmp, members=members)


def _is_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _clashes(src: Path, dst: Path) -> list[Path]:
    """Entries of ``dst`` that ``src`` would replace by another kind (a file by a folder or the reverse)."""
    out = []
    for entry in src.iterdir():
        target = dst / entry.name
        if _is_dir(entry) and _is_dir(target):
            out += _clashes(entry, target)
        elif (target.exists() or target.is_symlink()) and _is_dir(entry) != _is_dir(target):
            out.append(target)
    return out


def _merge(src: Path, dst: Path) -> None:
    """Move the entries of ``src`` into ``dst``, merging folders that already exist (files replace files;
    :func:`_clashes` has made sure nothing replaces a folder)."""
    for entry in src.iterdir():
        target = dst / entry.name
        if _is_dir(entry) and _is_dir(target):
            _merge(entry, target)
        else:
            os.replace(entry, target)


def unpack(archive: Path, into: Path) -> Path:
    """Extract a zip or tar(.gz/.bz2/.xz) ``archive`` into ``into``; returns ``into``.

    Extraction goes to a temporary folder inside ``into`` whose entries are then moved into place, and the
    marker ``into/.unpacked-<archive name>`` is written last: with the marker the call does nothing, without
    it the archive is extracted again. Members with absolute paths or ``..`` are refused.
    """
    archive, into = Path(archive), Path(into)
    marker = into / f".unpacked-{archive.name}"
    if marker.is_file():
        return into
    if not archive.is_file():
        raise DownloadError(f"{archive}: archive not found (expected a zip or tar file)")
    into.mkdir(parents=True, exist_ok=True)
    name = archive.name.lower()
    if name.endswith(".zip"):
        extract = _extract_zip
    elif name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        extract = _extract_tar
    elif zipfile.is_zipfile(archive):
        extract = _extract_zip
    else:
        extract = _extract_tar
    tmp = Path(tempfile.mkdtemp(prefix=f".unpacking-{archive.name}-", dir=into))
    try:
        try:
            extract(archive, tmp)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, gzip.BadGzipFile, EOFError,
                zlib.error, NotImplementedError) as e:
            raise DownloadError(f"{archive}: corrupt or unreadable archive ({e}); expected a valid "
                                "zip or tar file. Delete it and download it again.") from None
        clashes = _clashes(tmp, into)
        if clashes:
            kind = "folder" if _is_dir(clashes[0]) else "file"
            raise DownloadError(f"{archive}: would replace the {kind} {clashes[0]} (made by an earlier archive) by "
                                f"a {'file' if kind == 'folder' else 'folder'} of the same name; nothing was "
                                "changed. Unpack it into another folder.")
        _merge(tmp, into)
        marker.write_text(f"{archive.name} unpacked completely\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return into


# ------------------------------------------------------------------------------- datasets: Zenodo


def zenodo_files(record: int, api: str = ZENODO_API, *, timeout: float = 60) -> list[dict]:
    """The files of a Zenodo record: dicts with ``name``, ``url``, ``size`` and ``md5`` (None if absent).

    Reads ``<api><record>`` (the record's JSON); ``api`` is a parameter so tests can serve a fake one.
    """
    url = api.rstrip("/") + f"/{record}"
    page = f"https://zenodo.org/records/{record}"
    dest = Path(f"zenodo-record-{record}.json")
    try:
        with _open(url, dest, {"Accept": "application/json"}, timeout, page) as response:
            data = json.load(response)
    except _Retry as e:
        raise DownloadError(f"cannot read the Zenodo record {record} from {url} ({e}); try again later, or "
                            f"download its files by hand from {page}") from None
    except (ValueError, OSError, http.client.HTTPException) as e:
        raise DownloadError(f"cannot read the Zenodo record {record} from {url}: expected JSON with a "
                            f"'files' list ({e!r})") from None
    entries = data.get("files") if isinstance(data, dict) else None
    if isinstance(entries, dict):  # some API versions nest them: {"entries": {...}}
        entries = list(entries.get("entries", {}).values())
    if not isinstance(entries, list) or not entries:
        raise DownloadError(f"{url}: expected a Zenodo record JSON with a non-empty 'files' list")
    files = []
    for entry in entries:
        try:
            name = entry.get("key") or entry["filename"]
            link = entry["links"].get("self") or entry["links"]["content"]
        except (KeyError, AttributeError, TypeError):
            raise DownloadError(f"{url}: a 'files' entry lacks 'key' or 'links.self': {entry!r}") from None
        algorithm, _, value = str(entry.get("checksum", "")).partition(":")
        size = entry.get("size", entry.get("filesize"))
        files.append({"name": name, "url": link, "size": int(size) if size is not None else None,
                      "md5": value if algorithm == "md5" and value else None})
    return files


def fetch_files(base_url: str, names: list[str], dest: Path, **kw) -> list[Path]:
    """Download ``base_url + name`` to ``dest/name`` for every name (``kw`` goes to :func:`download`).

    Names are URL-quoted (``B&O_BM2.wav`` works). Without checksums each file is checked against the
    length the server announces.
    """
    dest = Path(dest)
    base = base_url if base_url.endswith("/") else base_url + "/"
    return [download(base + quote(name), dest / name, **kw) for name in names]


def fetch_tau22(root: Path, *, api: str = ZENODO_API, splits_url: str = SPLITS_URL,
                include: list[str] | None = None, progress: bool = True, keep_archives: bool = True) -> Path:
    """Download, verify and unpack TAU Urban Acoustic Scenes 2022 Mobile (development) under ``root``.

    Archives of Zenodo record :data:`TAU22_RECORD` (only those whose name contains a string of
    ``include``, when given) go to ``root/_downloads`` and are checked against the record's md5 and size;
    they unpack into ``root/TAU-urban-acoustic-scenes-2022-mobile-development`` (``audio/``, ``meta.csv``),
    where the DCASE2024 split files are saved as well. Returns that folder. Rerunning is cheap: an archive
    already unpacked (marker file) is not fetched or hashed again; an interrupted download resumes.
    ``keep_archives=False`` deletes each archive once unpacked (the full set is about 23 GB twice over).
    """
    root = Path(root)
    downloads = root / "_downloads"
    page = f"https://zenodo.org/records/{TAU22_RECORD}"
    files = zenodo_files(TAU22_RECORD, api)
    if include is not None:
        files = [f for f in files if any(s in f["name"] for s in include)]
        if not files:
            raise DownloadError(f"no file of Zenodo record {TAU22_RECORD} matches include={include!r}")
    for f in files:
        if (root / f".unpacked-{f['name']}").is_file():
            continue
        archive = download(f["url"], downloads / f["name"], size=f["size"], md5=f["md5"], progress=progress,
                           manual=page)
        unpack(archive, root)
        if not keep_archives:
            archive.unlink()
    dataset = root / TAU22_FOLDER
    if include is None and not ((dataset / "meta.csv").is_file() and (dataset / "audio").is_dir()):
        raise DownloadError(f"{dataset}: expected meta.csv and audio/ after unpacking the archives of {page}; "
                            f"found {sorted(p.name for p in dataset.iterdir()) if dataset.is_dir() else 'no folder'}")
    splits = fetch_files(splits_url, list(SPLIT_FILES), dataset, progress=progress,
                         manual="https://github.com/CPJKU/dcase2024_task1_baseline/releases/tag/files")
    gigabytes = sum(f["size"] or 0 for f in files) / 1e9
    print(f"TAU22: {len(files)} archives ({gigabytes:.2f} GB) verified and unpacked, {len(splits)} split files; "
          f"dataset in {dataset}")
    return dataset


def fetch_micirp(dest: Path, *, base_url: str = MICIRP_URL, names: tuple[str, ...] = MICIRP_FILES,
                 **kw) -> list[Path]:
    """Download the microphone impulse responses (see :data:`MICIRP_URL`) into ``dest``.

    Any folder of impulse-response wav files can be used instead, e.g. files saved by hand from
    :data:`MICIRP_PAGE`.
    """
    kw.setdefault("manual", MICIRP_PAGE)
    return fetch_files(base_url, list(names), dest, **kw)


# ------------------------------------------------------------------------------- BEATs checkpoints

# The official BEATs checkpoints (microsoft/unilm, beats/README.md): their hosting has moved several
# times (an Azure blob with expiring tokens, then OneDrive), so no address is built in. A file already in
# the folder is checked and used; otherwise pass the link the README gives today.
BEATS_README = "https://github.com/microsoft/unilm/tree/master/beats"
BEATS_CHECKPOINTS = {
    "BEATs_iter3_plus_AS2M.pt": {"size": 361_499_833, "sha256": None},
    "BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt": {
        "size": 363_145_291, "sha256": "e5815275a04b6885e7b8af63d120b29bffae2cd2225cf4915e1ec6d819d3022c"},
}


def fetch_beats_checkpoint(name: str, folder: Path, url: str | None = None, **kw) -> Path:
    """The official checkpoint ``name`` in ``folder``: checked (size, SHA-256 where known) when it is
    there, else downloaded from ``url`` (resumable). Without a ``url`` and without the file, the error
    says where to get it by hand and where to put it."""
    if name not in BEATS_CHECKPOINTS:
        raise ValueError(f"unknown BEATs checkpoint {name!r}: expected one of {sorted(BEATS_CHECKPOINTS)}")
    dest, facts = Path(folder) / name, BEATS_CHECKPOINTS[name]
    if url is None:
        if not dest.is_file():
            raise DownloadError(f"{dest} not found. Download {name} by hand from the links in {BEATS_README} "
                                f"and save it as {dest.resolve()}, or pass url=<the current link>.")
        problem = _problem(dest, facts["size"], None, facts["sha256"])
        if problem:
            raise DownloadError(f"{dest} is not the official {name}: {problem}. Delete it and download it again.")
        return dest
    return download(url, dest, size=facts["size"], sha256=facts["sha256"], manual=BEATS_README, **kw)

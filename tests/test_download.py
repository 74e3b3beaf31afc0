"""asc_lib.data.download against a local HTTP server: resume, verification, unpacking, fake Zenodo."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from asc_lib.data import download as dl

TAU = dl.TAU22_FOLDER


class FakeServer:
    """What the handler serves and how it misbehaves; ``requests`` records (path, headers) of each GET."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.ignore_range = False
        self.cut_first: dict[str, int] = {}  # path -> bytes sent before cutting the first request
        self.cut_always: dict[str, int] = {}  # path -> bytes sent before cutting every request
        self.gone: set[str] = set()  # paths answered with 404
        self.no_length: set[str] = set()  # paths sent without Content-Length (the end is the connection's)
        self.etags: dict[str, str] = {}  # path -> ETag (If-Range honoured)
        self.after_first: dict[str, tuple[bytes, str]] = {}  # path -> (data, ETag) served from request 2 on
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.url = ""
        self._lock = threading.Lock()

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]


def _handler(state: FakeServer):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep the test output quiet
            pass

        def do_GET(self):
            path = unquote(urlsplit(self.path).path)
            with state._lock:
                first = path not in state.paths()
                state.requests.append((path, dict(self.headers)))
            if path in state.gone or path not in state.files:
                self.send_error(404, "Not Found")
                return
            if not first and path in state.after_first:  # the file changed on the server
                state.files[path], state.etags[path] = state.after_first.pop(path)
            data = state.files[path]
            start, status = 0, 200
            header = self.headers.get("Range")
            if_range = self.headers.get("If-Range")
            if if_range is not None and if_range != state.etags.get(path):
                header = None  # RFC 9110: a changed representation is sent whole
            if header and not state.ignore_range:
                start = int(header.removeprefix("bytes=").split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
            body = data[start:]
            self.send_response(status)
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            if path in state.etags:
                self.send_header("ETag", state.etags[path])
            if path in state.no_length:
                self.close_connection = True
            else:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            cut = state.cut_always.get(path, state.cut_first.get(path) if first else None)
            if cut is not None:
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture()
def server(monkeypatch):
    monkeypatch.setattr(dl, "RETRY_WAIT_S", 0.0)
    state = FakeServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state
    httpd.shutdown()
    httpd.server_close()


DATA = bytes(range(256)) * 400  # 102,400 bytes
MD5 = hashlib.md5(DATA).hexdigest()
SHA256 = hashlib.sha256(DATA).hexdigest()


def _get(server: FakeServer, tmp_path: Path, **kw) -> Path:
    server.files["/data.bin"] = DATA
    kw.setdefault("progress", False)
    kw.setdefault("timeout", 5)
    return dl.download(server.url + "/data.bin", tmp_path / "data.bin", **kw)


def _part(path: Path) -> Path:
    return path.with_name(path.name + ".part")


# ----------------------------------------------------------------------------------------- download


def test_plain_download_with_checksums_and_user_agent(server, tmp_path):
    out = _get(server, tmp_path, size=len(DATA), md5=MD5, sha256=SHA256, progress=True)
    assert out == tmp_path / "data.bin" and out.read_bytes() == DATA
    assert not _part(out).exists()
    (path, headers), = server.requests
    assert headers["User-Agent"].startswith("asc_lib") and "Range" not in headers


def test_resume_after_interruption(server, tmp_path):
    server.cut_first["/data.bin"] = 30_000
    out = _get(server, tmp_path, md5=MD5)
    assert out.read_bytes() == DATA
    assert len(server.requests) == 2
    assert server.requests[1][1]["Range"] == "bytes=30000-"
    assert not _part(out).exists()


def test_resume_a_part_left_by_an_earlier_run(server, tmp_path):
    _part(tmp_path / "data.bin").write_bytes(DATA[:5000])
    out = _get(server, tmp_path, size=len(DATA), md5=MD5)
    assert out.read_bytes() == DATA
    assert [h.get("Range") for _, h in server.requests] == ["bytes=5000-"]


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.ignore_range = True
    _part(tmp_path / "data.bin").write_bytes(b"x" * 5000)  # a wrong prefix: must not survive
    out = _get(server, tmp_path, md5=MD5)
    assert out.read_bytes() == DATA
    assert server.requests[0][1]["Range"] == "bytes=5000-"


def test_complete_part_is_verified_without_a_request_or_after_416(server, tmp_path):
    _part(tmp_path / "data.bin").write_bytes(DATA)
    assert _get(server, tmp_path, size=len(DATA), md5=MD5).read_bytes() == DATA
    assert server.requests == []
    (tmp_path / "data.bin").unlink()
    _part(tmp_path / "data.bin").write_bytes(DATA)
    assert _get(server, tmp_path, md5=MD5).read_bytes() == DATA  # size unknown: the server answers 416
    assert [h.get("Range") for _, h in server.requests] == [f"bytes={len(DATA)}-"]


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    wrong = "0" * 32
    with pytest.raises(dl.DownloadError) as e:
        _get(server, tmp_path, md5=wrong)
    message = str(e.value)
    assert "data.bin" in message and wrong in message and MD5 in message
    assert not (tmp_path / "data.bin").exists() and not _part(tmp_path / "data.bin").exists()


def test_size_mismatch_names_both_sizes(server, tmp_path):
    with pytest.raises(dl.DownloadError, match=r"data\.bin.*size 102400 bytes, expected 102401"):
        _get(server, tmp_path, size=len(DATA) + 1)
    assert not (tmp_path / "data.bin").exists() and not _part(tmp_path / "data.bin").exists()


def test_truncated_every_time(server, tmp_path):
    server.cut_always["/data.bin"] = 1000
    with pytest.raises(dl.DownloadError) as e:
        _get(server, tmp_path, retries=2)
    message = str(e.value)
    assert "truncated" in message and "expected 102400 bytes" in message and "got 3000" in message
    assert "resume" in message
    assert len(server.requests) == 3
    assert not (tmp_path / "data.bin").exists()
    assert _part(tmp_path / "data.bin").stat().st_size == 3000  # kept for the next run to resume


def test_existing_verified_file_is_not_downloaded_again(server, tmp_path):
    (tmp_path / "data.bin").write_bytes(DATA)
    assert _get(server, tmp_path, size=len(DATA), md5=MD5).read_bytes() == DATA
    assert server.requests == []


def test_existing_wrong_file_is_replaced(server, tmp_path):
    (tmp_path / "data.bin").write_bytes(b"stale")
    assert _get(server, tmp_path, md5=MD5).read_bytes() == DATA
    assert len(server.requests) == 1


def test_dead_url_says_how_to_get_the_file_by_hand(server, tmp_path):
    dest = tmp_path / "sub" / "split5.csv"
    with pytest.raises(dl.DownloadError) as e:
        dl.download(server.url + "/missing/split5.csv", dest, progress=False, timeout=5,
                    manual="https://example.org/page")
    message = str(e.value)
    assert "404" in message and "by hand" in message and "https://example.org/page" in message
    assert str(dest.resolve()) in message
    assert not dest.exists()


def test_connection_refused_says_how_to_get_the_file_by_hand(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(dl.DownloadError, match="by hand"):
        dl.download(f"http://127.0.0.1:{port}/x.zip", tmp_path / "x.zip", progress=False, timeout=5)


def test_a_file_of_unannounced_size_is_kept_only_when_it_can_be_verified(server, tmp_path):
    server.no_length.add("/data.bin")
    server.cut_first["/data.bin"] = 30_000  # looks like a normal end: nothing says it is short
    with pytest.raises(dl.DownloadError, match="without announcing its size.*Pass size=, md5= or sha256="):
        _get(server, tmp_path)
    assert not (tmp_path / "data.bin").exists() and not _part(tmp_path / "data.bin").exists()
    out = _get(server, tmp_path, md5=MD5)  # with a checksum: the complete file verifies
    assert out.read_bytes() == DATA


def test_a_file_that_changed_on_the_server_is_not_spliced(server, tmp_path):
    new = bytes(reversed(DATA))
    server.etags["/data.bin"] = '"v1"'
    server.after_first["/data.bin"] = (new, '"v2"')
    server.cut_first["/data.bin"] = 40_000
    out = _get(server, tmp_path, size=len(DATA))
    assert out.read_bytes() == new  # all of the new file, not 40,000 old bytes and the new rest
    (_, retry), = [r for r in server.requests[1:]]
    assert retry["If-Range"] == '"v1"' and retry["Range"] == "bytes=40000-"
    assert not (tmp_path / "data.bin.part.etag").exists()


@pytest.mark.parametrize("code, says", [(28, "the disk is full"), (13, "the folder is not writable")])
def test_a_write_error_is_named_as_such_and_the_bytes_are_kept(server, tmp_path, monkeypatch, code, says):
    real_open = open

    class Full:
        def __init__(self, f):
            self.f, self.n = f, 0

        def write(self, b):
            self.n += len(b)
            if self.n > 50_000:
                raise OSError(code, os.strerror(code))
            return self.f.write(b)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def fake_open(path, mode="r", *a, **kw):
        f = real_open(path, mode, *a, **kw)
        return Full(f) if str(path).endswith(".part") and "b" in mode and ("w" in mode or "a" in mode) else f

    monkeypatch.setattr(dl, "open", fake_open, raising=False)
    with pytest.raises(dl.DownloadError, match=f"cannot write .*data.bin.part: {says}.*run this again"):
        _get(server, tmp_path, size=len(DATA))
    assert len(server.requests) == 1  # not retried as if the connection had dropped
    assert _part(tmp_path / "data.bin").exists()  # what was written is kept, to resume
    monkeypatch.undo()
    monkeypatch.setattr(dl, "RETRY_WAIT_S", 0.0)
    assert _get(server, tmp_path, size=len(DATA)).read_bytes() == DATA


def test_a_target_folder_that_cannot_be_made_is_named(server, tmp_path, monkeypatch):
    def refuse(self, *a, **kw):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(dl.DownloadError, match=f"cannot write {tmp_path / 'ro'}: the folder is not writable"):
        dl.download(server.url + "/data.bin", tmp_path / "ro" / "data.bin", progress=False)


# ------------------------------------------------------------------------------------------- unpack


def test_unpack_never_replaces_a_folder_by_a_file(tmp_path):
    first, second = tmp_path / "one.zip", tmp_path / "two.zip"
    first.write_bytes(_zip({"audio/a.wav": b"clip"}))
    second.write_bytes(_zip({"audio": b"a file named like the folder", "other.txt": b"x"}))
    into = tmp_path / "out"
    dl.unpack(first, into)
    with pytest.raises(dl.DownloadError, match=r"two.zip: would replace the folder .*audio .*nothing was changed"):
        dl.unpack(second, into)
    assert (into / "audio" / "a.wav").read_bytes() == b"clip" and (into / ".unpacked-one.zip").is_file()
    assert not (into / "other.txt").exists() and not (into / ".unpacked-two.zip").exists()
    assert sorted(p.name for p in into.iterdir()) == [".unpacked-one.zip", "audio"]  # no temp folder left


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buffer.getvalue()


def _targz(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as t:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_unpack_is_complete_and_idempotent(tmp_path, kind):
    entries = {"top/a.txt": b"alpha", "top/sub/b.txt": b"beta"}
    archive = tmp_path / f"pack.{kind}"
    archive.write_bytes(_zip(entries) if kind == "zip" else _targz(entries))
    into = tmp_path / "out"
    (into / "top").mkdir(parents=True)
    (into / "top" / "old.txt").write_text("kept")  # an earlier archive's file: merged, not replaced
    assert dl.unpack(archive, into) == into
    assert (into / "top" / "a.txt").read_bytes() == b"alpha"
    assert (into / "top" / "sub" / "b.txt").read_bytes() == b"beta"
    assert (into / "top" / "old.txt").read_text() == "kept"
    assert (into / f".unpacked-pack.{kind}").is_file()
    assert sorted(p.name for p in into.iterdir()) == [f".unpacked-pack.{kind}", "top"]  # no temp folder
    (into / "top" / "a.txt").write_bytes(b"changed")
    dl.unpack(archive, into)
    assert (into / "top" / "a.txt").read_bytes() == b"changed"  # second call extracted nothing


@pytest.mark.parametrize("kind, member", [("zip", "../evil.txt"), ("zip", "/abs/evil.txt"),
                                          ("zip", "top/../../evil.txt"), ("tar.gz", "../evil.txt")])
def test_unpack_refuses_path_traversal(tmp_path, kind, member):
    entries = {"ok.txt": b"fine", member: b"evil"}
    archive = tmp_path / f"bad.{kind}"
    archive.write_bytes(_zip(entries) if kind == "zip" else _targz(entries))
    into = tmp_path / "a" / "b"
    with pytest.raises(dl.DownloadError) as e:
        dl.unpack(archive, into)
    assert str(archive) in str(e.value) and member in str(e.value)
    assert not list(tmp_path.rglob("evil.txt"))
    assert list(into.iterdir()) == []  # no marker, no half tree, no temp folder


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_unpack_refuses_a_corrupt_zip(tmp_path, damage):
    data = bytearray(_zip({"top/a.txt": b"alpha" * 100}))
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        i = data.index(b"alphaalpha")
        data[i:i + 5] = b"ALPHA"  # stored member: its CRC no longer matches
    archive = tmp_path / "broken.zip"
    archive.write_bytes(bytes(data))
    with pytest.raises(dl.DownloadError, match="broken.zip.*corrupt"):
        dl.unpack(archive, tmp_path / "out")
    assert not (tmp_path / "out" / ".unpacked-broken.zip").exists()
    assert not (tmp_path / "out" / "top").exists()


# ------------------------------------------------------------------------------ Zenodo, TAU22, files


def _fake_tau22(server: FakeServer) -> dict[str, bytes]:
    """A Zenodo record JSON for TAU22 with two tiny zips and a doc zip that is never served."""
    meta = b"filename\tscene_label\tidentifier\tsource_label\naudio/park-lyon-1-2-3-a.wav\tpark\tlyon-1\ta\n"
    archives = {
        f"{TAU}.audio.1.zip": _zip({f"{TAU}/audio/park-lyon-1-2-3-a.wav": b"RIFF0000WAVEfmt fake"}),
        f"{TAU}.meta.zip": _zip({f"{TAU}/meta.csv": meta}),
    }
    entries = []
    for name, data in archives.items():
        server.files[f"/files/{name}"] = data
        entries.append({"key": name, "size": len(data), "checksum": f"md5:{hashlib.md5(data).hexdigest()}",
                        "links": {"self": f"{server.url}/files/{name}"}})
    entries.append({"key": f"{TAU}.doc.zip", "size": 10, "checksum": "md5:" + "0" * 32,
                    "links": {"self": f"{server.url}/files/{TAU}.doc.zip"}})
    server.files[f"/api/records/{dl.TAU22_RECORD}"] = json.dumps({"files": entries}).encode()
    for name in dl.SPLIT_FILES:
        server.files[f"/splits/{name}"] = f"filename\tscene_label\n# {name}\n".encode()
    return archives


def test_zenodo_files_reads_the_record(server):
    archives = _fake_tau22(server)
    files = dl.zenodo_files(dl.TAU22_RECORD, api=server.url + "/api/records/")
    assert [f["name"] for f in files] == [*archives, f"{TAU}.doc.zip"]
    first = files[0]
    assert first["url"] == f"{server.url}/files/{TAU}.audio.1.zip"
    assert first["size"] == len(archives[first["name"]])
    assert first["md5"] == hashlib.md5(archives[first["name"]]).hexdigest()


def test_fetch_tau22_end_to_end(server, tmp_path, capsys):
    _fake_tau22(server)
    kw = dict(api=server.url + "/api/records/", splits_url=server.url + "/splits/", include=["audio", "meta"],
              progress=False)
    folder = dl.fetch_tau22(tmp_path, **kw)
    assert folder == tmp_path / TAU
    assert (folder / "meta.csv").read_text().startswith("filename\tscene_label")
    assert (folder / "audio" / "park-lyon-1-2-3-a.wav").read_bytes().startswith(b"RIFF")
    assert (folder / "split5.csv").read_text() == "filename\tscene_label\n# split5.csv\n"
    assert all((folder / name).is_file() for name in dl.SPLIT_FILES)
    assert (tmp_path / "_downloads" / f"{TAU}.meta.zip").is_file()
    assert f"/files/{TAU}.doc.zip" not in server.paths()  # left out by include
    assert "2 archives" in capsys.readouterr().out
    # A second run reads the record again but fetches no archive or split file.
    before = len(server.requests)
    assert dl.fetch_tau22(tmp_path, **kw) == folder
    assert server.paths()[before:] == [f"/api/records/{dl.TAU22_RECORD}"]


def test_fetch_tau22_can_drop_archives_and_names_a_dead_record(server, tmp_path):
    _fake_tau22(server)
    kw = dict(api=server.url + "/api/records/", splits_url=server.url + "/splits/", include=["audio", "meta"],
              progress=False, keep_archives=False)
    folder = dl.fetch_tau22(tmp_path, **kw)
    assert (folder / "meta.csv").is_file() and list((tmp_path / "_downloads").iterdir()) == []
    before = len(server.requests)
    dl.fetch_tau22(tmp_path, **kw)  # unpacked already (markers): the deleted archives are not fetched again
    assert not [p for p in server.paths()[before:] if p.startswith("/files/")]
    with pytest.raises(dl.DownloadError, match="404.*by hand.*zenodo.org/records/6337421"):
        dl.fetch_tau22(tmp_path / "other", api=server.url + "/nothing/", progress=False)


def test_fetch_files_quotes_names(server, tmp_path):
    names = ["B&O_BM2.wav", "Beyer M260.wav"]
    for i, name in enumerate(names):
        server.files[f"/dirs/{name}"] = bytes([i]) * 100
    paths = dl.fetch_files(server.url + "/dirs", names, tmp_path / "irs", progress=False, timeout=5)
    assert paths == [tmp_path / "irs" / name for name in names]
    assert [p.read_bytes() for p in paths] == [b"\x00" * 100, b"\x01" * 100]
    assert server.paths() == [f"/dirs/{name}" for name in names]


def test_beats_checkpoint_is_checked_in_place_or_fetched(tmp_path, monkeypatch, server):
    blob = os.urandom(3000)
    monkeypatch.setitem(dl.BEATS_CHECKPOINTS, "tiny.pt", {"size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()})
    with pytest.raises(dl.DownloadError, match=r"tiny\.pt not found\. Download tiny\.pt by hand from the links in"):
        dl.fetch_beats_checkpoint("tiny.pt", tmp_path)
    (tmp_path / "tiny.pt").write_bytes(blob[:-1] + b"x")  # right size, wrong bytes
    with pytest.raises(dl.DownloadError, match="is not the official tiny.pt: .*sha256"):
        dl.fetch_beats_checkpoint("tiny.pt", tmp_path)
    (tmp_path / "tiny.pt").unlink()
    server.files["/BEATs/tiny.pt"] = blob
    got = dl.fetch_beats_checkpoint("tiny.pt", tmp_path, url=server.url + "/BEATs/tiny.pt", progress=False)
    assert got.read_bytes() == blob
    assert dl.fetch_beats_checkpoint("tiny.pt", tmp_path) == got  # now found in place, no URL needed
    with pytest.raises(ValueError, match="unknown BEATs checkpoint"):
        dl.fetch_beats_checkpoint("BEATs_iter9.pt", tmp_path)

"""``python -m memvir_pl.data fetch``: download from a local HTTP server, resume, verify, extract safely."""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
import zipfile
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from memvir_pl.data import load_file_dataset
from memvir_pl.data.__main__ import main
from memvir_pl.data.fetch import ARCHIVES, Archive, ChecksumError, fetch
from tests.data_fixtures import write_cars_folders, write_cub, write_sop


class ArchiveServer(ThreadingHTTPServer):
    """Serves ``files`` (name -> bytes) on 127.0.0.1; honours ``Range: bytes=K-`` when ``ranges``;
    records each request's Range header (or None)."""

    def __init__(self, files: dict[str, bytes], ranges: bool = True) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files, self.ranges, self.requests = files, ranges, []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: ArchiveServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = self.server.files.get(self.path.lstrip("/"))
        asked = self.headers.get("Range")
        self.server.requests.append(asked)
        if body is None:
            self.send_error(404)
            return
        start = int(asked.removeprefix("bytes=").rstrip("-")) if asked and self.server.ranges else 0
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def serve():
    servers = []

    def start(files: dict[str, bytes], ranges: bool = True) -> ArchiveServer:
        server = ArchiveServer(files, ranges)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _tgz(source: Path, folder: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(source / folder, arcname=folder)
    return buffer.getvalue()


def _zip(source: Path, folder: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted((source / folder).rglob("*")):
            archive.write(path, path.relative_to(source))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def cub_archive(tmp_path_factory) -> bytes:
    source = tmp_path_factory.mktemp("cub_source")
    write_cub(source / "CUB_200_2011")
    return _tgz(source, "CUB_200_2011")


def _pinned(name: str, body: bytes, server: ArchiveServer, algorithm: str = "md5") -> Archive:
    """The dataset's pinned archive with this fixture's address, size and checksum."""
    digest = f"{algorithm}:{hashlib.new(algorithm, body).hexdigest()}"
    return replace(ARCHIVES[name], url=f"{server.url}/{ARCHIVES[name].filename}", size=len(body), digest=digest)


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".extract-") or p.suffix == ".part")


def test_the_pinned_archives_are_the_publishers():
    assert ARCHIVES["cub"].size == 1_150_585_339 and ARCHIVES["cub"].digest == "md5:97eceeb196236b17998738112f37df78"
    assert ARCHIVES["cub"].url.startswith("https://data.caltech.edu/")
    assert ARCHIVES["sop"].size == 3_083_860_082 and ARCHIVES["sop"].digest.startswith("sha256:")


def test_fetch_resumes_a_partial_download_verifies_and_extracts(tmp_path, serve, cub_archive):
    server = serve({"CUB_200_2011.tgz": cub_archive})
    archive = _pinned("cub", cub_archive, server)
    half = len(cub_archive) // 2
    (tmp_path / "CUB_200_2011.tgz.part").write_bytes(cub_archive[:half])  # an interrupted download
    folder = fetch("cub", tmp_path, archive, progress=False)
    assert server.requests == [f"bytes={half}-"]  # only the rest was asked for
    assert folder == tmp_path / "CUB_200_2011" and (tmp_path / "CUB_200_2011.tgz").read_bytes() == cub_archive
    with pytest.warns(UserWarning, match="official release has 11,788"):
        assert len(load_file_dataset("cub", folder)["train"].paths) == 7
    assert _leftovers(tmp_path) == []
    assert fetch("cub", tmp_path, archive, progress=False) == folder and len(server.requests) == 1  # nothing again


def test_a_server_without_ranges_restarts_the_download(tmp_path, serve, cub_archive):
    server = serve({"CUB_200_2011.tgz": cub_archive}, ranges=False)
    (tmp_path / "CUB_200_2011.tgz.part").write_bytes(b"stale bytes of another attempt")
    fetch("cub", tmp_path, _pinned("cub", cub_archive, server), progress=False)
    assert (tmp_path / "CUB_200_2011.tgz").read_bytes() == cub_archive
    assert (tmp_path / "CUB_200_2011" / "images.txt").is_file()


def test_a_wrong_checksum_or_size_extracts_nothing(tmp_path, serve, cub_archive):
    server = serve({"CUB_200_2011.tgz": cub_archive})
    archive = _pinned("cub", cub_archive, server)
    with pytest.raises(ChecksumError, match="md5 .* expected 0000"):
        fetch("cub", tmp_path, replace(archive, digest="md5:" + "0" * 32), progress=False)
    assert not (tmp_path / "CUB_200_2011").exists() and _leftovers(tmp_path) == []
    (tmp_path / "CUB_200_2011.tgz").unlink()
    with pytest.raises(ChecksumError, match=f"has {len(cub_archive):,} bytes, expected {len(cub_archive) + 1:,}"):
        fetch("cub", tmp_path, replace(archive, size=len(cub_archive) + 1), progress=False)
    assert not (tmp_path / "CUB_200_2011").exists()


def test_an_archive_without_the_expected_folder_leaves_nothing_half_extracted(tmp_path, serve, cub_archive):
    server = serve({"CUB_200_2011.tgz": cub_archive})
    archive = replace(_pinned("cub", cub_archive, server), folder="CUB_200_2011_v2")
    with pytest.raises(ValueError, match="does not hold the folder 'CUB_200_2011_v2'"):
        fetch("cub", tmp_path, archive, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CUB_200_2011.tgz"]


def test_sop_zip_with_sha256_through_the_command_line(tmp_path, serve, monkeypatch, capsys):
    source = tmp_path / "source"
    write_sop(source / "Stanford_Online_Products")
    body = _zip(source, "Stanford_Online_Products")
    server = serve({"Stanford_Online_Products.zip": body})
    pinned = _pinned("sop", body, server, "sha256")
    monkeypatch.setitem(ARCHIVES, "sop", replace(pinned, url="http://127.0.0.1:9/unused"))
    root = tmp_path / "data"
    assert main(["fetch", "sop", "--root", str(root), "--url", pinned.url, "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == f"data.root={root / 'Stanford_Online_Products'}"
    with pytest.warns(UserWarning, match="120,053"):
        assert load_file_dataset("sop", root / "Stanford_Online_Products")["test"].num_classes == 2


def test_cars_and_inshop_say_where_to_get_them_and_find_a_copy(tmp_path, capsys):
    assert main(["fetch", "cars", "--root", str(tmp_path)]) == 1
    assert "class-folder copy" in capsys.readouterr().err
    assert main(["fetch", "inshop", "--root", str(tmp_path)]) == 1
    assert "list_eval_partition.txt and img/" in capsys.readouterr().err
    write_cars_folders(tmp_path / "stanford-cars")
    assert main(["fetch", "cars", "--root", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"data.root={tmp_path / 'stanford-cars'}"

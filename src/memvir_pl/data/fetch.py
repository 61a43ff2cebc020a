"""Fetch the paper datasets into their official layouts: pinned archives, resumable, verified.

``python -m memvir_pl.data fetch cub|sop|cars|inshop --root DIR``. CUB-200-2011 and Stanford
Online Products are downloaded from their publishers' addresses, pinned with size and checksum:
the download shows a progress bar, resumes a partial file (``<archive>.part``, HTTP range
requests), is verified before anything is extracted, and is extracted into a temporary folder
under ``DIR`` that is renamed into place, so a failure at any point leaves no half-extracted
dataset. CARS196 and In-Shop have no stable public archive: ``fetch`` says where to get them
and checks the folder once it is there.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from memvir_pl.data.official import DATASETS

CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Archive:
    """A dataset archive pinned by size and checksum.

    Attributes:
        url: where it is published.
        filename: the archive's file name under ``--root``.
        size: its size in bytes.
        digest: ``"md5:<hex>"`` or ``"sha256:<hex>"``.
        folder: the folder it extracts to (``data.root`` is then ``<root>/<folder>``).
    """

    url: str
    filename: str
    size: int
    digest: str
    folder: str


#: the datasets with a pinned public archive
ARCHIVES: dict[str, Archive] = {
    # CaltechDATA, the publisher's data repository for CUB-200-2011
    "cub": Archive("https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1",
                   "CUB_200_2011.tgz", 1_150_585_339, "md5:97eceeb196236b17998738112f37df78", "CUB_200_2011"),
    # Stanford's CVGL server (the Lifted Structure project page links it)
    "sop": Archive("ftp://cs.stanford.edu/cs/cvgl/Stanford_Online_Products.zip", "Stanford_Online_Products.zip",
                   3_083_860_082, "sha256:b04fa78210e69fab050ce73939550e1cd0f96890bdd98ec9fee732c3b756ef48",
                   "Stanford_Online_Products"),
}

#: where to get the datasets without a stable public archive, and the folder ``data.root`` names
MANUAL: dict[str, tuple[str, str]] = {
    "cars": (
        "The original Stanford Cars page is gone. Use either\n"
        "  - the class-folder copy (e.g. Kaggle's 'Stanford Car Dataset by classes folder'): a folder with\n"
        "    anno_train.csv, anno_test.csv and car_data/{train,test}/<class>/<image>.jpg, or\n"
        "  - a copy of the original release: cars_annos.mat and car_ims/ (car_ims.tgz extracted).\n"
        "Both list the same 16,185 images and 196 classes; classes 1-98 train, 99-196 test.",
        "cars",
    ),
    "inshop": (
        "DeepFashion In-Shop Clothes Retrieval is distributed by its authors (Google Drive, the image\n"
        "archive is password-protected: ask for the password as the project page says):\n"
        "  https://mmlab.ie.cuhk.edu.hk/projects/DeepFashion/InShopRetrieval.html\n"
        "Extract Img/img.zip and Eval/list_eval_partition.txt into one folder: list_eval_partition.txt and img/.",
        "inshop",
    ),
}


class ChecksumError(ValueError):
    """A downloaded archive whose size or checksum differs from the pinned one."""


def file_digest(path: Path, algorithm: str) -> str:
    """The hex digest of a file (read in 1 MiB chunks)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, archive: Archive) -> None:
    """Raise :class:`ChecksumError` unless ``path`` has the archive's size and digest."""
    size = path.stat().st_size
    if size != archive.size:
        raise ChecksumError(f"{path} has {size:,} bytes, expected {archive.size:,}: the download is incomplete or "
                            f"another file. Delete it and fetch again.")
    algorithm, expected = archive.digest.split(":", 1)
    actual = file_digest(path, algorithm)
    if actual != expected:
        raise ChecksumError(f"{path}: {algorithm} {actual}, expected {expected}: the file is damaged or another "
                            f"version. Delete it and fetch again.")


def download(url: str, path: Path, size: int | None = None, progress: bool = True) -> Path:
    """Download ``url`` to ``path`` through ``path.part``, resuming a partial ``.part`` where the
    server honours range requests (else starting over); the finished file is renamed to ``path``."""
    from tqdm import tqdm

    part = path.with_name(path.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)  # noqa: S310 (pinned dataset addresses)
    except urllib.error.HTTPError as error:
        if error.code != 416 or size is None or have != size:  # 416: the .part is already whole
            raise
        os.replace(part, path)
        return path
    with response:
        resumed = have and getattr(response, "status", 200) == 206
        if not resumed:
            have = 0
        total = size or (have + int(response.headers.get("Content-Length", 0)) or None)
        with open(part, "ab" if resumed else "wb") as out, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, desc=path.name, disable=not progress,
            file=sys.stderr,
        ) as bar:
            while chunk := response.read(CHUNK_BYTES):
                out.write(chunk)
                bar.update(len(chunk))
    os.replace(part, path)
    return path


def _extract_tar(archive: tarfile.TarFile, destination: Path) -> None:
    """Extract with the ``data`` filter (no absolute paths, no links out, no devices); on a Python
    without it, refuse any member that would land outside ``destination`` or is not a file or folder."""
    if hasattr(tarfile, "data_filter"):
        archive.extractall(destination, filter="data")
        return
    inside = destination.resolve()
    for member in archive.getmembers():
        target = (destination / member.name).resolve()
        if not (member.isfile() or member.isdir()) or not target.is_relative_to(inside):
            raise ValueError(f"refusing the archive member {member.name!r}: not a plain file inside the archive's folder")
    archive.extractall(destination)


def extract(archive_path: Path, root: Path, folder: str) -> Path:
    """Extract ``archive_path`` (.tgz/.tar/.zip) into a temporary folder under ``root`` and rename its
    ``folder`` to ``root/folder``; on any failure nothing is left but the archive."""
    target = root / folder
    scratch = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    try:
        if zipfile.is_zipfile(archive_path):
            with zipfile.ZipFile(archive_path) as archive:
                archive.extractall(scratch)
        else:
            with tarfile.open(archive_path) as archive:
                _extract_tar(archive, scratch)
        if not (scratch / folder).is_dir():
            found = sorted(p.name for p in scratch.iterdir())
            raise ValueError(f"{archive_path} does not hold the folder {folder!r} (it holds {found})")
        os.replace(scratch / folder, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def fetch(name: str, root: str | Path, archive: Archive | None = None, progress: bool = True) -> Path:
    """Make ``<root>/<folder>`` hold dataset ``name`` and return it (the value for ``data.root``).

    Nothing is downloaded when the folder already has the dataset's files; a finished archive
    under ``root`` is verified and extracted without downloading it again. ``archive`` replaces
    the pinned one (a mirror). Datasets without a public archive raise ``FileNotFoundError``
    with where to get them, unless ``root`` already holds them.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if name in MANUAL:
        instructions, _ = MANUAL[name]
        for candidate in (root, *sorted(p for p in root.iterdir() if p.is_dir())):
            if DATASETS[name].find_layout(candidate) is not None:
                return candidate
        raise FileNotFoundError(f"{name}: nothing to download automatically.\n{instructions}\n"
                                f"Then train with data.root=<that folder> (checked: {root}).")
    if name not in ARCHIVES:
        raise ValueError(f"unknown dataset {name!r}; fetch knows {sorted([*ARCHIVES, *MANUAL])}")
    archive = archive or ARCHIVES[name]
    target = root / archive.folder
    if DATASETS[name].find_layout(target) is not None:
        print(f"{name}: {target} is already there", file=sys.stderr)
        return target
    path = root / archive.filename
    if not path.exists():
        download(archive.url, path, archive.size, progress)
    verify(path, archive)
    if target.exists():
        raise FileExistsError(f"{target} exists but is not a complete {name} folder; move it away and fetch again.")
    extract(path, root, archive.folder)
    return target

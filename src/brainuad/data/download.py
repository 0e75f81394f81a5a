"""Download public healthy cohorts (IXI), resumable and checksum-verified.

This is the only module that touches the network, and only when the user runs ``brainuad download``.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

from brainuad.errors import BrainuadError
from brainuad.io.volumes import atomic_folder

IXI_BASE_URL = "http://biomedic.doc.ic.ac.uk/brain-development/downloads/IXI/"
#: MD5 of the IXI archives as published (the same values TorchIO's IXI dataset checks).
IXI_MD5 = {
    "T1": "34901a0593b41dd19c1a1f746eac2d58",
    "T2": "e3140d78730ecdd32ba92da48c0a9aaa",
    "PD": "88ecd9d1fa33cb4a2278183b42ffd749",
}
CHUNK = 1 << 20


class DownloadError(BrainuadError):
    """The download failed or its checksum did not match."""


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(
    url: str, destination: str | Path, md5: str | None = None, progress: bool = True, timeout: float = 60.0
) -> Path:
    """Download ``url`` to ``destination``, resuming a previous partial download, then verify its MD5.

    The data goes to ``<destination>.part`` and is renamed only once complete and verified, so an interrupted or
    corrupt download never looks finished. Re-running resumes with an HTTP Range request.

    Raises:
        DownloadError: Network failure, or the checksum does not match (the partial file is then deleted).
    """
    from tqdm import tqdm

    destination = Path(destination)
    if destination.exists() and (md5 is None or _md5(destination) == md5):
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    offset = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = response.status
            if offset and status != 206:  # server ignored the Range: start again
                offset = 0
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            mode = "ab" if offset else "wb"
            with (
                open(partial, mode) as handle,
                tqdm(
                    total=total, initial=offset, unit="B", unit_scale=True, desc=destination.name, disable=not progress
                ) as bar,
            ):
                while chunk := response.read(CHUNK):
                    handle.write(chunk)
                    bar.update(len(chunk))
        # A dropped connection can end the stream early without an exception: compare with Content-Length.
        received = partial.stat().st_size
        if total is not None and received < total:
            raise OSError(f"connection closed after {received} of {total} bytes")
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the partial file is already complete
            pass
        else:
            raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise DownloadError(
            f"{url}: download interrupted ({exc}); run the same command again to resume from "
            f"{partial.stat().st_size if partial.exists() else 0} bytes"
        ) from exc
    if md5 is not None:
        actual = _md5(partial)
        if actual != md5:
            partial.unlink(missing_ok=True)
            raise DownloadError(
                f"{url}: checksum mismatch (md5 {actual}, expected {md5}); the partial file was "
                "deleted, run the command again"
            )
    os.replace(partial, destination)
    return destination


def _safe_members(archive: tarfile.TarFile, target: Path) -> list[tarfile.TarInfo]:
    """Regular files and folders only, each staying inside ``target`` (no links, no absolute or ``..`` paths)."""
    members = []
    root = target.resolve()
    for member in archive.getmembers():
        if not (member.isfile() or member.isdir()):
            raise DownloadError(f"archive member {member.name!r} is a link or device; refusing to extract")
        resolved = (root / member.name).resolve()
        if root not in resolved.parents and resolved != root:
            raise DownloadError(f"archive member {member.name!r} would be written outside {target}")
        members.append(member)
    return members


def extract_tar(archive_path: str | Path, target: str | Path) -> Path:
    """Extract a tar archive safely into ``target`` (built in a staging folder, then renamed into place)."""
    archive_path, target = Path(archive_path), Path(target)
    if target.is_dir() and (target / ".complete").exists():
        return target
    try:
        with atomic_folder(target) as staging, tarfile.open(archive_path) as archive:
            for member in _safe_members(archive, staging):
                archive.extract(member, staging, set_attrs=False)
            (staging / ".complete").write_text(str(archive_path.name) + "\n")
    except tarfile.TarError as exc:
        raise DownloadError(f"{archive_path}: not a readable tar archive ({exc})") from exc
    return target


def download_ixi(
    out_dir: str | Path,
    modality: str = "T2",
    base_url: str = IXI_BASE_URL,
    md5: str | None = None,
    extract: bool = True,
    progress: bool = True,
) -> Path:
    """Download the public IXI archive of one modality (T2: 578 healthy scans, ~4.5 GB) and extract it.

    Args:
        out_dir: Destination folder; the archive lands in it as ``IXI-<modality>.tar``.
        modality: ``T1``, ``T2`` or ``PD``.
        base_url: Mirror to download from.
        md5: Expected checksum (defaults to the published one for the modality).
        extract: Also extract into ``out_dir/IXI-<modality>/``.
        progress: Show a progress bar.

    Returns:
        The extracted folder (or the archive when ``extract`` is false).
    """
    modality = modality.upper()
    if modality not in IXI_MD5:
        raise DownloadError(f"unknown IXI modality {modality!r}; choose from {sorted(IXI_MD5)}")
    out_dir = Path(out_dir)
    name = f"IXI-{modality}.tar"
    archive = download_file(base_url.rstrip("/") + "/" + name, out_dir / name, md5 or IXI_MD5[modality], progress)
    if not extract:
        return archive
    return extract_tar(archive, out_dir / f"IXI-{modality}")

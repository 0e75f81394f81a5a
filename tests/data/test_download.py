"""`brainuad download` against a local HTTP server (no internet here): resume, checksum, safe extraction."""

import hashlib
import io
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from brainuad.cli import main
from brainuad.data.download import DownloadError, download_file, download_ixi, extract_tar
from conftest import write_nifti


def make_archive(tmp_path, members=None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        if members is None:
            for name in ("IXI002-Guys-0828-T2.nii.gz", "IXI012-HH-1211-T2.nii.gz"):
                path = write_nifti(tmp_path / name, np.random.rand(6, 6, 6).astype(np.float32))
                archive.add(path, arcname=name)
        else:
            for name, payload in members:
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                archive.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


class Server:
    """Serves one payload at /IXI/IXI-T2.tar with Range support; can drop the first response half-way."""

    def __init__(self, payload: bytes, drop_first: bool = False):
        self.payload, self.drop_first, self.requests = payload, drop_first, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.requests.append(self.headers.get("Range"))
                if not self.path.endswith("IXI-T2.tar"):
                    self.send_error(404)
                    return
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(outer.payload) - 1}/{len(outer.payload)}")
                else:
                    self.send_response(200)
                body = outer.payload[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.drop_first and len(outer.requests) == 1:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(2)  # connection lost mid-transfer
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/IXI/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_interrupted_download_resumes_and_verifies(tmp_path):
    payload = make_archive(tmp_path)
    md5 = hashlib.md5(payload).hexdigest()
    with Server(payload, drop_first=True) as server:
        with pytest.raises(DownloadError, match="resume"):
            download_ixi(tmp_path / "out", "T2", base_url=server.url, md5=md5, progress=False)
        assert (tmp_path / "out" / "IXI-T2.tar.part").exists()
        assert not (tmp_path / "out" / "IXI-T2.tar").exists()
        folder = download_ixi(tmp_path / "out", "T2", base_url=server.url, md5=md5, progress=False)
        assert server.requests[-1] is not None and server.requests[-1].startswith("bytes=")
    assert sorted(p.name for p in folder.glob("*.nii.gz")) == ["IXI002-Guys-0828-T2.nii.gz", "IXI012-HH-1211-T2.nii.gz"]
    assert (tmp_path / "out" / "IXI-T2.tar").read_bytes() == payload


def test_checksum_mismatch_deletes_the_download(tmp_path):
    payload = make_archive(tmp_path)
    with Server(payload) as server, pytest.raises(DownloadError, match="checksum"):
        download_file(server.url + "IXI-T2.tar", tmp_path / "a.tar", md5="0" * 32, progress=False)
    assert not list(tmp_path.glob("a.tar*"))


def test_cli_download(tmp_path, capsys):
    payload = make_archive(tmp_path)
    with Server(payload) as server:
        code = main(
            [
                "download",
                "ixi",
                "--out",
                str(tmp_path / "cli"),
                "--base-url",
                server.url,
                "--md5",
                hashlib.md5(payload).hexdigest(),
                "--quiet",
            ]
        )
    assert code == 0 and "ready" in capsys.readouterr().out
    with Server(payload) as server:
        code = main(
            ["download", "ixi", "--out", str(tmp_path / "cli2"), "--base-url", server.url, "--md5", "0" * 32, "--quiet"]
        )
    assert code == 1 and "checksum" in capsys.readouterr().err


def test_extraction_refuses_paths_outside_the_target(tmp_path):
    archive = tmp_path / "evil.tar"
    archive.write_bytes(make_archive(tmp_path, [("../escape.txt", b"x")]))
    with pytest.raises(DownloadError, match="outside"):
        extract_tar(archive, tmp_path / "target")
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "target").exists()

"""Downloader and GTSDB archive fetching against a loopback HTTP server (127.0.0.1 only)."""

import hashlib
import http.server
import io
import socket
import threading
import zipfile

import ml_collections
import pytest

from afp_tf.data import download, gtsdb, gtsdb_synth


class _Handler(http.server.BaseHTTPRequestHandler):
    payload = b""
    ranges: list = []
    honour_range = True

    def do_GET(self):  # noqa: N802
        data, header = self.payload, self.headers.get("Range")
        type(self).ranges.append(header)
        header = header if self.honour_range else None
        start = int(header.split("=")[1].split("-")[0]) if header else 0
        if start >= len(data) and header:
            self.send_response(416)
            self.end_headers()
            return
        self.send_response(206 if header else 200)
        if header:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _Handler.ranges, _Handler.honour_range = [], True
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _zip_of(folder, prefix="FullIJCNN2013") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, f"{prefix}/{path.name}")
    return buf.getvalue()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_full_file_matches_checksum(server, tmp_path):
    httpd, url = server
    _Handler.payload = bytes(range(256)) * 1000
    digest = hashlib.sha256(_Handler.payload).hexdigest()
    out = download.download(f"{url}/a.bin", tmp_path / "a.bin", sha256=digest)
    assert out.read_bytes() == _Handler.payload
    assert not (tmp_path / "a.bin.part").exists()


def test_download_checksum_mismatch_removes_file(server, tmp_path):
    _, url = server
    _Handler.payload = b"x" * 5000
    with pytest.raises(download.DownloadError, match="Checksum mismatch"):
        download.download(f"{url}/a.bin", tmp_path / "a.bin", sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_download_partial_file_resumes_with_range(server, tmp_path):
    _, url = server
    _Handler.payload = bytes(range(256)) * 400
    (tmp_path / "a.bin.part").write_bytes(_Handler.payload[:30000])
    digest = hashlib.sha256(_Handler.payload).hexdigest()
    out = download.download(f"{url}/a.bin", tmp_path / "a.bin", sha256=digest)
    assert _Handler.ranges == ["bytes=30000-"]
    assert out.read_bytes() == _Handler.payload


def test_download_range_ignored_restarts_from_scratch(server, tmp_path):
    _, url = server
    _Handler.payload, _Handler.honour_range = b"abcdef" * 1000, False
    (tmp_path / "a.bin.part").write_bytes(b"abc")
    out = download.download(f"{url}/a.bin", tmp_path / "a.bin")
    assert out.read_bytes() == _Handler.payload


def test_download_refused_connection_names_manual_location(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/FullIJCNN2013.zip"
    with pytest.raises(download.DownloadError, match="put it in /some/dir"):
        download.download(url, tmp_path / "a.zip", manual_hint="put it in /some/dir", timeout=5)


def test_extract_zip_traversal_member_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../escape.txt", "x")
    with pytest.raises(ValueError, match="outside"):
        download.extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


def _cfg(tmp_path, url, *, sha="", download_flag=True):
    return ml_collections.ConfigDict(
        {
            "data": {
                "source": "auto",
                "data_dir": str(tmp_path / "gtsdb"),
                "download": download_flag,
                "url": url,
                "sha256": sha,
                "val_fraction": 0.25,
                "seed": 0,
                "batch_size": 2,
                "eval_batch_size": 2,
                "image_size": 64,
            }
        }
    )


def test_load_gtsdb_online_downloads_and_extracts_archive(server, tmp_path):
    _, url = server
    gtsdb_synth.generate(tmp_path / "src", 6, scale=0.05, seed=3)
    _Handler.payload = _zip_of(tmp_path / "src")
    digest = hashlib.sha256(_Handler.payload).hexdigest()
    data = gtsdb.load_gtsdb(_cfg(tmp_path, f"{url}/FullIJCNN2013.zip", sha=digest))
    assert (data.num_train, data.num_val, data.num_test) == (3, 1, 2)
    assert (tmp_path / "gtsdb" / "FullIJCNN2013" / "gt.txt").is_file()


def test_load_gtsdb_offline_error_says_where_to_put_files(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/FullIJCNN2013.zip"
    with pytest.raises(download.DownloadError, match=r"Put FullIJCNN2013\.zip into .*gtsdb"):
        gtsdb.load_gtsdb(_cfg(tmp_path, url))


def test_load_gtsdb_missing_dir_without_download_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="No GTSDB data .*ssd_gtsdb_synthetic"):
        gtsdb.load_gtsdb(_cfg(tmp_path, "http://127.0.0.1:1/x.zip", download_flag=False))

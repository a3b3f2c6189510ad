"""Resumable HTTP downloads with a sha256 check, and zip extraction that refuses path traversal.

Only the standard library (``urllib``) is used. A partial download lives in ``<dest>.part`` next
to the destination and is resumed with an HTTP ``Range`` request; the finished file is verified
and renamed onto ``dest`` atomically, so ``dest`` is either absent or complete.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from absl import logging

_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download failed (no network, HTTP error, bad checksum); the message says what to do."""


def sha256_file(path: str | os.PathLike) -> str:
    """Returns the hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    timeout: float = 30.0,
    manual_hint: str = "",
) -> Path:
    """Downloads ``url`` to ``dest``, resuming a previous partial download.

    Args:
      url: an http(s) URL.
      dest: the destination file; its directory is created.
      sha256: the expected hex digest; on mismatch the download is deleted and an error raised.
      timeout: socket timeout in seconds.
      manual_hint: appended to network errors, e.g. where to put the file by hand.

    Returns:
      ``dest`` as a Path.

    Raises:
      DownloadError: the server is unreachable, answers with an error, or the checksum differs.
    """
    dest = Path(dest)
    if dest.is_file() and (sha256 is None or sha256_file(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url)
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            resumed = offset and response.status == 206
            if offset and not resumed:
                logging.info(
                    "Server ignored the Range request; downloading %s from the start.", url
                )
            elif resumed:
                logging.info("Resuming %s at byte %d.", url, offset)
            with open(part, "ab" if resumed else "wb") as f:
                shutil.copyfileobj(response, f, _CHUNK)
    except urllib.error.HTTPError as e:
        if e.code != 416 or not offset:  # 416 with a partial file: it is already complete
            raise DownloadError(
                f"Downloading {url} failed: HTTP {e.code} {e.reason}. {manual_hint}"
            ) from e
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(
            f"Cannot download {url}: {getattr(e, 'reason', e)}. {manual_hint}".strip()
        ) from e
    if sha256 is not None:
        got = sha256_file(part)
        if got != sha256:
            part.unlink()
            raise DownloadError(
                f"Checksum mismatch for {url}: expected sha256 {sha256}, got {got}. The download "
                "was deleted; retry, or check the URL and checksum in the config."
            )
    os.replace(part, dest)
    return dest


def extract_zip(archive: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Extracts a zip into ``out_dir`` after checking no member escapes it.

    Extraction goes to a temporary sibling directory that is renamed into place member by member
    at the top level, so an interrupted extraction leaves no half-written top-level entry.

    Raises:
      ValueError: a member is absolute or climbs out with ``..`` (nothing is written).
    """
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():
            target = (out_dir / name).resolve()
            if name.startswith(("/", "\\")) or not target.is_relative_to(out_dir):
                raise ValueError(
                    f"Refusing to extract {archive}: member {name!r} would be written outside "
                    f"{out_dir}. The archive is corrupt or malicious."
                )
        tmp = out_dir / f".extract-{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            zf.extractall(tmp)
            for entry in tmp.iterdir():
                final = out_dir / entry.name
                if final.is_dir():
                    shutil.rmtree(final)
                os.replace(entry, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir

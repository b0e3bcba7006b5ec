"""Resumable, conditional downloads of raw files into `ANT_HOME/raw/`, recorded in `downloads`.

* A partial file (`<name>.part`) is resumed with an HTTP Range request guarded by If-Range,
  so a changed file on the server restarts cleanly instead of splicing two versions.
* A file downloaded before is re-validated with If-None-Match / If-Modified-Since: an
  unchanged file costs one request (a 304) and no bytes.
* The finished file is checked end to end before it is renamed into place: a gzip file must
  decompress whole, every member's CRC-32 and length matching (DuckDB's reader does not check
  them, so a flipped bit would be parsed as other data). Its sha256, size, ETag and
  Last-Modified go to the `downloads` table, and the ingest checks the sha256 again.
* Each source (base URL) downloads into its own folder, `raw/<release>/<source>/…`, so
  switching mirrors never mixes their files.
* `file://` URLs and plain local directories (mirrors) are copied the same way; any other
  scheme is refused.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
import time
import zlib
from datetime import datetime, timezone
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx
from tqdm import tqdm

from ant_config.errors import UserError
from warehouse.store import HASH_BLOCK, Warehouse, sha256_of, upsert

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
INFLATE_CHUNK = 16 << 20  # bound on decompressed bytes held at once while verifying
GZIP_WBITS = 16 + zlib.MAX_WBITS
REMOTE_SCHEMES = ("http", "https")


class DownloadError(UserError, RuntimeError):
    """A download that will not succeed by retrying (bad URL, 404, ...)."""


class TransientDownloadError(DownloadError):
    """A network failure worth retrying; the partial file is kept for resuming."""


class CorruptRawFile(UserError, RuntimeError):
    """A raw file that cannot be decompressed or read to its end, or that changed on disk."""

    def __init__(self, path: Path | str, cause: Exception | str,
                 advice: str = "It was set aside; run the ingest again to download it anew."):
        super().__init__(f"{path}: the file is truncated or corrupt ({cause}). {advice}")
        self.path, self.reason = path, cause


@dataclass(frozen=True)
class DownloadRecord:
    url: str
    path: str  # relative to ANT_HOME
    sha256: str
    size: int
    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class DownloadResult:
    record: DownloadRecord
    status: str  # "downloaded" | "resumed" | "unchanged"
    bytes_transferred: int
    seconds: float


def verify_raw(path: Path, name: str | None = None) -> str:
    """The sha256 of `path`, read once; a gzip file (by `name`, default the path's: `.gz`) is
    also decompressed to its end on the way, every member's CRC-32 and length checked, in
    bounded memory. What it holds must be the release's text, not gzip again (compressed
    twice), and a file named without `.gz` must not be gzip. Raises CorruptRawFile."""
    digest = hashlib.sha256()
    gzipped = (name or path.name).endswith(".gz")
    inflater = zlib.decompressobj(GZIP_WBITS) if gzipped else None
    try:
        with open(path, "rb") as f:
            head = f.read(len(GZIP_MAGIC))
            f.seek(0)
            if not gzipped and head == GZIP_MAGIC:
                raise CorruptRawFile(path, "gzip data in a file named without .gz")
            payload_head = None
            while block := f.read(HASH_BLOCK):
                digest.update(block)
                if inflater is not None and payload_head is None:
                    payload_head = zlib.decompressobj(GZIP_WBITS).decompress(block, len(GZIP_MAGIC))
                    if payload_head == GZIP_MAGIC:
                        raise CorruptRawFile(path, "compressed twice: the gzip file holds gzip data, not text")
                while inflater is not None and block:
                    if inflater.eof:  # the previous member is whole: another one, or zero padding
                        if not block.strip(b"\0"):
                            break
                        inflater = zlib.decompressobj(GZIP_WBITS)
                    inflater.decompress(block, INFLATE_CHUNK)
                    block = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
    except zlib.error as exc:
        raise CorruptRawFile(path, f"gzip check failed: {exc}") from exc
    if inflater is not None and not inflater.eof:
        raise CorruptRawFile(path, "the gzip stream ends early")
    return digest.hexdigest()


def _local_source(url: str) -> Path | None:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme in ("", None) or len(parsed.scheme) == 1:  # plain path (or a Windows drive)
        return Path(url)
    return None


def raw_path(warehouse: Warehouse, release: str, relative: str, base_url: str) -> Path:
    """Where the file `relative` of the source at `base_url` lives: one folder per source."""
    source = hashlib.sha256(base_url.rstrip("/").encode()).hexdigest()[:12]
    return warehouse.raw_dir / release / source / relative


def fetch(warehouse: Warehouse, url: str, dest: Path, *, timeout_s: float = 60.0,
          progress: bool = True) -> DownloadResult:
    """Bring `url` to `dest` (resuming, or skipping if unchanged) and record it."""
    previous = lookup(warehouse, url)
    if previous is not None and not (warehouse.home / previous.path).exists():
        previous = None
    dest.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    source = _local_source(url)
    if source is not None:
        result = _copy_local(source, dest, previous, warehouse, url)
    elif urlparse(url).scheme in REMOTE_SCHEMES:
        result = _fetch_http(url, dest, previous, warehouse, timeout_s, progress)
    else:
        raise DownloadError(f"{url}: unsupported URL scheme {urlparse(url).scheme!r}; use http(s)://, "
                            f"file:// or a local directory")
    result = DownloadResult(result.record, result.status, result.bytes_transferred,
                            time.monotonic() - started)
    if result.status != "unchanged" or previous is None:
        record(warehouse, result.record)
    else:
        touch(warehouse, url)
    rate = result.bytes_transferred / max(result.seconds, 1e-9) / 1e6
    log.info("%s %s (%d bytes, %.1f MB/s)", result.status, dest.name, result.record.size, rate)
    return result


def _copy_local(source: Path, dest: Path, previous: DownloadRecord | None,
                warehouse: Warehouse, url: str) -> DownloadResult:
    if not source.is_file():
        raise DownloadError(f"{url}: no such file {source}; check the mirror directory and "
                            f"the category name")
    stat = source.stat()
    # Content, not size and time: a mirror file replaced in place may keep both.
    if previous and previous.size == stat.st_size and previous.sha256 == sha256_of(source).hexdigest() \
            and sha256_of(warehouse.home / previous.path).hexdigest() == previous.sha256:
        return DownloadResult(previous, "unchanged", 0, 0.0)
    part = dest.with_name(dest.name + ".part")
    shutil.copyfile(source, part)
    digest = _verified(part, url)
    os.replace(part, dest)
    rec = DownloadRecord(url, str(dest.relative_to(warehouse.home)), digest, stat.st_size, None,
                         str(stat.st_mtime_ns))
    return DownloadResult(rec, "downloaded", stat.st_size, 0.0)


def _verified(part: Path, url: str) -> str:
    """The sha256 of a finished download (`<name>.part`), checked end to end; a corrupt one is deleted."""
    try:
        return verify_raw(part, part.name.removesuffix(".part"))
    except CorruptRawFile as exc:
        part.unlink(missing_ok=True)
        raise CorruptRawFile(url, exc.reason, "Nothing was kept; check the source (or try again).") from exc


def _fetch_http(url: str, dest: Path, previous: DownloadRecord | None, warehouse: Warehouse,
                timeout_s: float, progress: bool) -> DownloadResult:
    part = dest.with_name(dest.name + ".part")
    part_meta = dest.with_name(dest.name + ".part.json")
    headers: dict[str, str] = {}
    if previous and dest.exists() and dest.stat().st_size == previous.size:
        if previous.etag:
            headers["If-None-Match"] = previous.etag
        if previous.last_modified:
            headers["If-Modified-Since"] = previous.last_modified
    offset = part.stat().st_size if part.exists() else 0
    validators = json.loads(part_meta.read_text()) if offset and part_meta.exists() else {}
    if_range = validators.get("etag") or validators.get("last_modified")
    if offset and if_range:
        headers["Range"] = f"bytes={offset}-"
        headers["If-Range"] = if_range
    try:
        with httpx.Client(timeout=timeout_s, follow_redirects=True) as client, \
                client.stream("GET", url, headers=headers) as response:
            return _receive(response, url, dest, part, part_meta, offset, previous, warehouse,
                            progress)
    except httpx.TransportError as exc:
        raise TransientDownloadError(
            f"{url}: {type(exc).__name__}: {exc}. If the host is unreachable, point "
            f"ANT_AMAZON_2014_URL / ANT_AMAZON_2018_URL / ANT_AMAZON_2023_URL (or sources: in the config) at a "
            f"mirror or a local directory.") from exc


def _undo_content_coding(part: Path, coding: str | None, name: str, url: str) -> None:
    """Undo exactly one layer of HTTP content coding on the stored bytes (they are kept as
    sent, so that a dropped connection can resume them). A gzip `Content-Encoding` is undone
    when it really is a layer over the file: a `.gz` file whose content is gzip again (a proxy
    compressed it once more), or gzip bytes under another name. Mirrors that merely label a
    stored `.gz` with `Content-Encoding: gzip` send the file itself, which is kept as it is;
    `verify_raw` then judges what is left, whatever the transport said."""
    coding = (coding or "identity").strip().lower()
    if coding == "identity":
        return
    if coding not in ("gzip", "x-gzip"):
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url}: the server sent content coding {coding!r}, which is not supported "
                            f"(only gzip); nothing was kept. Ask the mirror for the plain file.")
    with open(part, "rb") as f:
        if f.read(len(GZIP_MAGIC)) != GZIP_MAGIC:
            return  # labelled gzip, but not gzip: nothing to undo
    if name.endswith(".gz"):
        try:
            with gzip.open(part, "rb") as f:
                if f.read(len(GZIP_MAGIC)) != GZIP_MAGIC:
                    return  # the .gz file itself, merely labelled
        except (OSError, EOFError, zlib.error):
            return  # verify_raw names what is wrong
    decoded = part.with_name(part.name + ".decoded")
    try:
        with gzip.open(part, "rb") as src, open(decoded, "wb") as out:
            shutil.copyfileobj(src, out, HASH_BLOCK)
    except (OSError, EOFError, zlib.error) as exc:
        decoded.unlink(missing_ok=True)
        part.unlink(missing_ok=True)
        raise CorruptRawFile(url, f"cannot undo its gzip content coding: {exc}",
                             "Nothing was kept; check the source (or try again).") from exc
    os.replace(decoded, part)
    log.info("%s: undid one layer of gzip content coding", url)


def _receive(response: httpx.Response, url: str, dest: Path, part: Path, part_meta: Path,
             offset: int, previous: DownloadRecord | None, warehouse: Warehouse,
             progress: bool) -> DownloadResult:
    status = response.status_code
    if status == 304 and previous is not None:
        return DownloadResult(previous, "unchanged", 0, 0.0)
    if status == 404:
        raise DownloadError(f"{url}: not found (HTTP 404); check the category name and base URL")
    if status == 416:  # our partial file is not a prefix of what the server has now
        part.unlink(missing_ok=True)
        raise TransientDownloadError(f"{url}: stale partial download discarded (HTTP 416); retrying")
    if status >= 500 or status == 429:
        raise TransientDownloadError(f"{url}: server answered HTTP {status}")
    if status not in (200, 206):
        raise DownloadError(f"{url}: unexpected HTTP {status}")

    resumed = status == 206
    if not resumed:
        offset = 0
    etag, last_modified = response.headers.get("etag"), response.headers.get("last-modified")
    part_meta.write_text(json.dumps({"etag": etag, "last_modified": last_modified}))
    length = response.headers.get("content-length")
    total = offset + int(length) if length is not None else None
    received = 0
    with open(part, "ab" if resumed else "wb") as out, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, desc=dest.name,
            disable=not progress, leave=False) as bar:
        try:
            for chunk in response.iter_raw():  # as received: a dropped link loses no bytes
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        except httpx.TransportError as exc:
            raise TransientDownloadError(
                f"{url}: connection lost after {offset + received} bytes ({exc}); the partial "
                f"file {part.name} is kept and the next attempt resumes it") from exc
    size = part.stat().st_size
    if total is not None and size != total:
        raise TransientDownloadError(f"{url}: got {size} of {total} bytes; will resume")
    _undo_content_coding(part, response.headers.get("content-encoding"), dest.name, url)
    digest = _verified(part, url)
    os.replace(part, dest)
    part_meta.unlink(missing_ok=True)
    rec = DownloadRecord(url, str(dest.relative_to(warehouse.home)), digest, size, etag, last_modified)
    return DownloadResult(rec, "resumed" if resumed else "downloaded", received, 0.0)


# -- the downloads table -----------------------------------------------------------------------
def lookup(warehouse: Warehouse, url: str) -> DownloadRecord | None:
    if not warehouse.db_path.exists():
        return None
    with warehouse.reader() as con:
        row = con.execute("SELECT url, path, sha256, size, etag, last_modified FROM downloads "
                          "WHERE url = ?", [url]).fetchone()
    return DownloadRecord(*row) if row else None


def record(warehouse: Warehouse, rec: DownloadRecord) -> None:
    now = datetime.now(timezone.utc)
    with warehouse.writer() as con:
        upsert(con, "downloads", {**asdict(rec), "downloaded_at": now, "checked_at": now})


def touch(warehouse: Warehouse, url: str) -> None:
    with warehouse.writer() as con:
        con.execute("UPDATE downloads SET checked_at = now() WHERE url = ?", [url])


def invalidate(warehouse: Warehouse, url: str, path: Path) -> Path:
    """Forget a raw file found corrupt, so the next run downloads it again; keep it aside."""
    aside = path.with_name(path.name + ".corrupt")
    if path.exists():
        os.replace(path, aside)
    with warehouse.writer() as con:
        con.execute("DELETE FROM downloads WHERE url = ?", [url])
    return aside

"""Product images: fetched once, checked, kept in a content-addressed cache.

`ANT_HOME/images/<sha256[:2]>/<sha256>` holds each distinct image once; the `image_fetches`
table maps every URL ever tried to its file or to the reason it failed. Checks before an image
is accepted: HTTP status, an image content type, a size cap (streamed, so a huge file is cut
off early), a pixel cap read from the header before decoding (decompression bombs), and a
full decode (truncated or corrupt files). Timeouts and 5xx answers are retried, then
recorded as transient so the next run tries again; other failures are final.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
from PIL import Image

from ant_config import ImageFetchConfig
from warehouse.store import Warehouse, upsert

log = logging.getLogger(__name__)

RETRY_BACKOFF_S = 0.5


@dataclass(frozen=True)
class ImageFetch:
    url: str
    sha256: str | None
    bytes: int | None
    reason: str | None
    transient: bool


class _Refused(Exception):
    def __init__(self, reason: str, transient: bool = False):
        super().__init__(reason)
        self.reason, self.transient = reason, transient


def image_path(wh: Warehouse, sha256: str) -> Path:
    return wh.home / "images" / sha256[:2] / sha256


def check_image(data: bytes, max_pixels: int) -> str | None:
    """Why `data` is not a usable image, or None."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            if width * height > max_pixels:
                return f"{width}x{height} pixels exceeds the cap of {max_pixels} (decompression-bomb guard)"
            im.load()
    except Image.DecompressionBombError as exc:
        return f"decompression bomb: {exc}"
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for broken files
        return f"cannot decode: {type(exc).__name__}: {exc}"
    return None


def _rewrite(url: str, rules: dict[str, str]) -> str:
    for prefix, replacement in rules.items():
        if url.startswith(prefix):
            return replacement + url[len(prefix):]
    return url


def _download(client: httpx.Client, url: str, cfg: ImageFetchConfig) -> bytes:
    try:
        with client.stream("GET", url) as r:
            if r.status_code >= 500 or r.status_code == 429:
                raise _Refused(f"HTTP {r.status_code}", transient=True)
            if r.status_code != 200:
                raise _Refused(f"HTTP {r.status_code}")
            kind = r.headers.get("content-type", "")
            if not kind.startswith("image/"):
                raise _Refused(f"content type {kind or 'missing'!r} is not an image")
            data = bytearray()
            for chunk in r.iter_bytes():
                data += chunk
                if len(data) > cfg.max_bytes:
                    raise _Refused(f"larger than the cap of {cfg.max_bytes} bytes")
            return bytes(data)
    except httpx.TimeoutException as exc:
        raise _Refused(f"timeout after {cfg.timeout_s}s", transient=True) from exc
    except httpx.TransportError as exc:
        raise _Refused(f"{type(exc).__name__}: {exc}", transient=True) from exc


def _fetch_one(wh: Warehouse, client: httpx.Client, url: str, cfg: ImageFetchConfig) -> ImageFetch:
    target = _rewrite(url, cfg.url_rewrite)
    for attempt in range(cfg.retries + 1):
        try:
            data = _download(client, target, cfg)
            break
        except _Refused as refused:
            if not refused.transient or attempt == cfg.retries:
                return ImageFetch(url, None, None, refused.reason, refused.transient)
            time.sleep(RETRY_BACKOFF_S * (attempt + 1))
    reason = check_image(data, cfg.max_pixels)
    if reason:
        return ImageFetch(url, None, len(data), reason, False)
    sha = hashlib.sha256(data).hexdigest()
    path = image_path(wh, sha)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{sha}.{threading.get_ident()}.part")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return ImageFetch(url, sha, len(data), None, False)


def fetch_images(wh: Warehouse, urls: list[str], cfg: ImageFetchConfig) -> dict[str, ImageFetch]:
    """Every URL's outcome; URLs fetched (or finally refused) before are not fetched again."""
    urls = list(dict.fromkeys(urls))
    known: dict[str, ImageFetch] = {}
    if wh.db_path.exists() and urls:
        with wh.reader() as con:
            con.execute("CREATE TEMP TABLE wanted (url VARCHAR)")
            con.executemany("INSERT INTO wanted VALUES (?)", [[u] for u in urls])
            for row in con.execute("SELECT url, sha256, bytes, reason, transient FROM image_fetches "
                                   "JOIN wanted USING (url) WHERE NOT transient").fetchall():
                known[row[0]] = ImageFetch(*row)
    todo = [u for u in urls if u not in known or
            (known[u].sha256 and not image_path(wh, known[u].sha256).exists())]
    if not todo:
        return known
    started, fetched = time.monotonic(), []
    limits = httpx.Limits(max_connections=cfg.concurrency)
    with httpx.Client(timeout=cfg.timeout_s, follow_redirects=True, limits=limits) as client, \
            ThreadPoolExecutor(cfg.concurrency) as pool:
        for n, result in enumerate(pool.map(lambda u: _fetch_one(wh, client, u, cfg), todo), 1):
            fetched.append(result)
            if n % 500 == 0 or n == len(todo):
                rate = n / max(time.monotonic() - started, 1e-9)
                log.info("images: %d/%d fetched (%.0f/s, ETA %.0fs)", n, len(todo), rate,
                         (len(todo) - n) / max(rate, 1e-9))
    with wh.writer() as con:
        con.begin()
        for f in fetched:
            upsert(con, "image_fetches", {"url": f.url, "sha256": f.sha256, "bytes": f.bytes,
                                          "reason": f.reason, "transient": f.transient})
        con.commit()
    failed = sum(f.sha256 is None for f in fetched)
    log.info("images: %d fetched, %d failed, %d known from earlier runs", len(fetched) - failed,
             failed, len(known))
    return {**known, **{f.url: f for f in fetched}}


def pending_retries(wh: Warehouse, domain: str) -> int:
    """Image URLs of `domain` whose last fetch failed transiently (the next run tries again)."""
    if not wh.db_path.exists():
        return 0
    with wh.reader() as con:
        return con.execute("SELECT count(DISTINCT f.url) FROM items it, unnest(it.image_urls) AS u(url) "
                           "JOIN image_fetches f ON f.url = u.url WHERE it.domain = ? AND f.transient",
                           [domain]).fetchall()[0][0]

"""Product images: fetched once, safely and fast, checked, kept in a content-addressed cache.

`ANT_HOME/images/<sha256[:2]>/<sha256>` holds each distinct image once; the `image_fetches`
table maps every URL ever tried to its file or to the reason it failed.

Image URLs come from downloaded metadata, i.e. from whoever serves it, so a URL is fetched
only if (each redirect hop checked again, at most `max_redirects`):
- its scheme is http or https (anything else is a final failure);
- its host is one of `allowed_hosts` (or a subdomain), or the URL was rewritten by
  `url_rewrite`, whose targets the user chose and are trusted;
- every address its host resolves to is public (no loopback, private, link-local, reserved,
  multicast or unspecified address); the connection then goes to the checked address, so a
  second DNS answer cannot swap it (TLS still verifies the host name).
Failures are recorded by category ("refused: …", "unreachable", "HTTP 404", …), never with
network details, so the table is no port-scan oracle.

Fast and bounded: one asyncio client (HTTP/2 where offered), `concurrency` requests in flight
(`per_host` per host), 429/503 retried after their Retry-After, a `deadline_s` per image, at
most `inflight_bytes` held at once, decoding and checks (type, size, pixel cap against
decompression bombs, full decode) in `decode_workers` processes.

Resumable: each outcome is appended to this process's journal the moment it is known, and the
journal is folded into `image_fetches` every `commit_every_s`; a run that dies (even by
kill -9) leaves its journal, which the next run folds in first. So a crash loses only the
fetches in flight, and a re-run skips everything recorded.
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import io
import ipaddress
import json
import logging
import multiprocessing
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx
from PIL import Image

from ant_config import ImageFetchConfig
from warehouse.store import Warehouse, upsert

log = logging.getLogger(__name__)

SCHEMES = ("http", "https")
REDIRECTS = (301, 302, 303, 307, 308)
RETRY_STATUSES = (429, 500, 502, 503, 504)
PROGRESS_EVERY_S = 10.0

# host → addresses; the default asks the system resolver (tests pass their own)
Resolver = Callable[[str], Awaitable[list[str]]]


@dataclass(frozen=True)
class ImageFetch:
    url: str
    sha256: str | None
    bytes: int | None
    reason: str | None
    transient: bool


class _Refused(Exception):
    def __init__(self, reason: str, transient: bool = False, retry_after: float | None = None):
        super().__init__(reason)
        self.reason, self.transient, self.retry_after = reason, transient, retry_after


def image_path(wh: Warehouse, sha256: str) -> Path:
    return wh.home / "images" / sha256[:2] / sha256


def check_image(data: bytes, max_pixels: int) -> str | None:
    """Why `data` is not a usable image, or None (runs in a decoding process). The whole file is
    decoded; a JPEG at 1/8 scale, which still reads every byte of it (a truncated or corrupt
    one fails) at half the cost."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            if width * height > max_pixels:
                return f"{width}x{height} pixels exceeds the cap of {max_pixels} (decompression-bomb guard)"
            if im.format == "JPEG":
                im.draft("RGB", (max(1, width // 8), max(1, height // 8)))
            im.load()
    except Image.DecompressionBombError as exc:
        return f"decompression bomb: {exc}"
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for broken files
        return f"cannot decode: {type(exc).__name__}: {exc}"
    return None


async def system_resolver(host: str) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return not (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_reserved or ip.is_multicast
                or ip.is_unspecified or not ip.is_global)


def _rewrite(url: str, rules: dict[str, str]) -> tuple[str, bool]:
    """(URL to fetch, whether a user's rewrite rule made it, i.e. it is trusted)."""
    for prefix, replacement in rules.items():
        if url.startswith(prefix):
            return replacement + url[len(prefix):], True
    return url, False


class _Budget:
    """At most `total` bytes reserved at once. A download reserves its whole size (or the cap)
    before reading its body and never grows beyond it, so waiting never deadlocks."""

    def __init__(self, total: int):
        self.free, self.cond = total, asyncio.Condition()

    async def take(self, n: int) -> None:
        async with self.cond:
            await self.cond.wait_for(lambda: self.free >= n)
            self.free -= n

    async def give(self, n: int) -> None:
        async with self.cond:
            self.free += n
            self.cond.notify_all()


class Fetcher:
    def __init__(self, wh: Warehouse, cfg: ImageFetchConfig, resolver: Resolver = system_resolver):
        self.wh, self.cfg, self.resolver = wh, cfg, resolver
        self.trusted = {urlsplit(t).netloc.lower() for t in cfg.url_rewrite.values()}
        self.addresses: dict[str, list[str]] = {}  # one answer per host and run, then pinned

    # -- policy ------------------------------------------------------------------------------
    def _allowed_host(self, host: str) -> bool:
        return any(host == h or host.endswith("." + h) for h in self.cfg.allowed_hosts)

    async def _target(self, url: str, trusted: bool) -> tuple[str, dict, dict]:
        """(URL to connect to, headers, extensions) for one hop, or _Refused (final)."""
        parts = urlsplit(url)
        if parts.scheme not in SCHEMES:
            raise _Refused(f"refused: scheme {parts.scheme or '(none)'!r} (only http and https)")
        host = (parts.hostname or "").lower()
        if not host:
            raise _Refused("refused: no host")
        if trusted or parts.netloc.lower() in self.trusted:
            return url, {}, {}
        if not self._allowed_host(host):
            raise _Refused(f"refused: host {host} is not an allowed image host")
        try:
            if host not in self.addresses:
                self.addresses[host] = [host] if _is_ip(host) else await self.resolver(host)
        except (OSError, UnicodeError):
            raise _Refused("unreachable", transient=True) from None
        addresses = self.addresses[host]
        if not addresses or not all(public_address(a) for a in addresses):
            raise _Refused(f"refused: {host} resolves to a non-public address")
        pinned = f"[{addresses[0]}]" if ":" in addresses[0] else addresses[0]
        netloc = f"{pinned}:{parts.port}" if parts.port else pinned
        return (urlunsplit(parts._replace(netloc=netloc)), {"Host": parts.netloc},
                {"sni_hostname": host} if parts.scheme == "https" else {})

    # -- one image ---------------------------------------------------------------------------
    async def _download(self, client: httpx.AsyncClient, url: str, trusted: bool, budget: _Budget
                        ) -> tuple[bytes, int]:
        """(body, bytes reserved in `budget`); the caller gives the reservation back."""
        for _ in range(self.cfg.max_redirects + 1):
            target, headers, extensions = await self._target(url, trusted)
            request = client.build_request("GET", target, headers=headers, extensions=extensions)
            try:
                response = await client.send(request, stream=True)
            except httpx.TimeoutException:
                raise _Refused(f"timeout after {self.cfg.timeout_s}s", transient=True) from None
            except httpx.TransportError:
                raise _Refused("unreachable", transient=True) from None
            try:
                status = response.status_code
                if status in REDIRECTS and "location" in response.headers:
                    url, trusted = urljoin(url, response.headers["location"]), False  # checked again
                    continue
                if status in RETRY_STATUSES:
                    raise _Refused(f"HTTP {status}", transient=True, retry_after=_retry_after(response))
                if status != 200:
                    raise _Refused(f"HTTP {status}")
                kind = response.headers.get("content-type", "")
                if not kind.startswith("image/"):
                    raise _Refused(f"content type {kind or 'missing'!r} is not an image")
                declared = int(response.headers.get("content-length") or self.cfg.max_bytes)
                if declared > self.cfg.max_bytes:
                    raise _Refused(f"larger than the cap of {self.cfg.max_bytes} bytes")
                await budget.take(declared)
                try:
                    data = bytearray()
                    async for chunk in response.aiter_bytes():
                        data += chunk
                        if len(data) > declared:
                            raise _Refused(f"larger than the cap of {self.cfg.max_bytes} bytes"
                                           if declared == self.cfg.max_bytes else "longer than its Content-Length")
                except BaseException:
                    await budget.give(declared)
                    raise
                return bytes(data), declared
            except httpx.TimeoutException:
                raise _Refused(f"timeout after {self.cfg.timeout_s}s", transient=True) from None
            except httpx.TransportError:
                raise _Refused("unreachable", transient=True) from None
            finally:
                await response.aclose()
        raise _Refused(f"refused: more than {self.cfg.max_redirects} redirects")

    async def _fetch_one(self, client, url: str, decode: Executor, budget: _Budget,
                         hosts: dict[str, asyncio.Semaphore]) -> ImageFetch:
        target, trusted = _rewrite(url, self.cfg.url_rewrite)
        host = urlsplit(target).netloc.lower()
        gate = hosts.setdefault(host, asyncio.Semaphore(self.cfg.per_host))
        for attempt in range(self.cfg.retries + 1):
            try:
                async with gate:  # the deadline counts from the first byte sent, not the wait for a slot
                    async with asyncio.timeout(self.cfg.deadline_s):
                        data, held = await self._download(client, target, trusted, budget)
                break
            except TimeoutError:
                return ImageFetch(url, None, None, f"exceeded the deadline of {self.cfg.deadline_s}s", False)
            except _Refused as refused:
                if not refused.transient or attempt == self.cfg.retries:
                    return ImageFetch(url, None, None, refused.reason, refused.transient)
                wait = self.cfg.retry_backoff_s * 2 ** attempt
                if refused.retry_after is not None:
                    wait = min(refused.retry_after, self.cfg.max_retry_after_s)
                await asyncio.sleep(wait)
        try:
            reason = await asyncio.get_running_loop().run_in_executor(decode, check_image, data, self.cfg.max_pixels)
            if reason:
                return ImageFetch(url, None, len(data), reason, False)
            sha = await asyncio.to_thread(_store, self.wh, data)
        finally:
            await budget.give(held)
        return ImageFetch(url, sha, len(data), None, False)

    # -- many images ---------------------------------------------------------------------------
    async def run(self, urls: list[str]) -> list[ImageFetch]:
        cfg = self.cfg
        results: list[ImageFetch] = []
        pending: list[ImageFetch] = []
        budget, hosts, work = _Budget(cfg.inflight_bytes), {}, iter(urls)
        started = last_commit = last_log = time.monotonic()

        async def worker(client: httpx.AsyncClient) -> None:
            """`concurrency` of these share `work`, so millions of URLs never become millions of tasks."""
            for url in work:
                result = await self._fetch_one(client, url, decode, budget, hosts)
                journal.write(result)
                results.append(result)
                pending.append(result)

        pool = min(cfg.pool_size, cfg.concurrency)
        limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
        timeout, tls = httpx.Timeout(cfg.timeout_s), httpx.create_ssl_context()  # one TLS context for all clients
        journal = Journal(self.wh)
        with _decoders(cfg.decode_workers) as decode:
            async with contextlib.AsyncExitStack() as clients_open:
                clients = [await clients_open.enter_async_context(httpx.AsyncClient(
                    http2=True, limits=limits, timeout=timeout, verify=tls, follow_redirects=False, trust_env=False))
                    for _ in range(-(-cfg.concurrency // pool))]
                tasks = [asyncio.create_task(worker(clients[i % len(clients)]))
                         for i in range(min(cfg.concurrency, len(urls)))]
                while tasks:
                    done, _ = await asyncio.wait(tasks, timeout=1.0)
                    tasks = [t for t in tasks if t not in done]
                    for t in done:
                        t.result()  # an unexpected error surfaces here
                    now = time.monotonic()
                    if pending and (now - last_commit >= cfg.commit_every_s or not tasks):
                        # the batch is exactly what this journal holds; later outcomes go to a new one
                        batch, pending[:], done_journal, journal = list(pending), [], journal, Journal(self.wh)
                        await asyncio.to_thread(record, self.wh, batch)
                        done_journal.close()
                        last_commit = now
                    if now - last_log >= PROGRESS_EVERY_S or not tasks:
                        rate = len(results) / max(now - started, 1e-9)
                        log.info("images: %d/%d fetched (%.0f/s, ETA %.0fs)", len(results), len(urls), rate,
                                 (len(urls) - len(results)) / max(rate, 1e-9))
                        last_log = now
        journal.close()
        return results


def _decoders(workers: int):
    """`workers` decoding processes (spawned: never fork a threaded process), or threads where
    this process may not have children (a daemonic one, e.g. a Dask worker): still bounded."""
    if multiprocessing.current_process().daemon:
        return ThreadPoolExecutor(workers)
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _store(wh: Warehouse, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    path = image_path(wh, sha)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{sha}.{os.getpid()}.{id(data)}.part")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return sha


class Journal:
    """This process's fetch outcomes, one JSON line each, written as they happen. Its lock is
    held while the process lives, so another run folds in only the journals of dead runs."""

    def __init__(self, wh: Warehouse):
        folder = wh.home / "images" / "journal"
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{os.getpid()}-{uuid.uuid4().hex}.jsonl"
        self.file = open(self.path, "a+")
        fcntl.flock(self.file, fcntl.LOCK_EX)

    def write(self, fetched: ImageFetch) -> None:
        self.file.write(json.dumps(fetched.__dict__) + "\n")
        self.file.flush()  # in the OS's hands: survives the death of this process

    def close(self) -> None:
        self.path.unlink(missing_ok=True)
        self.file.close()

    @staticmethod
    def fold_in(wh: Warehouse) -> int:
        """Record the journals that runs which died left behind; how many outcomes."""
        folded = 0
        for path in sorted((wh.home / "images" / "journal").glob("*.jsonl")):
            with open(path) as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live run's journal
                lines = [line for line in f.read().splitlines() if line.endswith("}")]  # a torn last line is lost
                outcomes = [ImageFetch(**json.loads(line)) for line in lines]
                if outcomes:
                    record(wh, outcomes)
                path.unlink()
                folded += len(outcomes)
        if folded:
            log.info("images: %d outcomes recorded from the journal of an interrupted run", folded)
        return folded


def record(wh: Warehouse, fetched: list[ImageFetch]) -> None:
    """Upsert fetch outcomes into `image_fetches` in one transaction."""
    with wh.writer() as con:
        con.begin()
        for f in fetched:
            upsert(con, "image_fetches", {"url": f.url, "sha256": f.sha256, "bytes": f.bytes,
                                          "reason": f.reason, "transient": f.transient})
        con.commit()


def known_fetches(wh: Warehouse, urls: list[str]) -> dict[str, ImageFetch]:
    """Recorded outcomes of `urls` that need no new attempt (not transient, file present)."""
    Journal.fold_in(wh)
    known: dict[str, ImageFetch] = {}
    if wh.db_path.exists() and urls:
        with wh.reader() as con:
            con.execute("CREATE TEMP TABLE wanted (url VARCHAR)")
            con.executemany("INSERT INTO wanted VALUES (?)", [[u] for u in urls])
            for row in con.execute("SELECT url, sha256, bytes, reason, transient FROM image_fetches "
                                   "JOIN wanted USING (url) WHERE NOT transient").fetchall():
                known[row[0]] = ImageFetch(*row)
    return {u: f for u, f in known.items() if not f.sha256 or image_path(wh, f.sha256).exists()}


def fetch_images(wh: Warehouse, urls: list[str], cfg: ImageFetchConfig,
                 resolver: Resolver = system_resolver) -> dict[str, ImageFetch]:
    """Every URL's outcome; URLs fetched (or finally refused) before are not fetched again."""
    urls = list(dict.fromkeys(urls))
    known = known_fetches(wh, urls)
    todo = [u for u in urls if u not in known]
    if not todo:
        return known
    fetcher = Fetcher(wh, cfg, resolver)
    with ThreadPoolExecutor(1) as runner:  # its own event loop, whatever the caller runs in
        fetched = runner.submit(asyncio.run, fetcher.run(todo)).result()
    failed = sum(f.sha256 is None for f in fetched)
    log.info("images: %d fetched, %d failed, %d known from earlier runs", len(fetched) - failed, failed, len(known))
    return {**known, **{f.url: f for f in fetched}}


def pending_retries(wh: Warehouse, domain: str) -> int:
    """Image URLs of `domain` whose last fetch failed transiently (the next run tries again)."""
    if not wh.db_path.exists():
        return 0
    with wh.reader() as con:
        return con.execute("SELECT count(DISTINCT f.url) FROM items it, unnest(it.image_urls) AS u(url) "
                           "JOIN image_fetches f ON f.url = u.url WHERE it.domain = ? AND f.transient",
                           [domain]).fetchall()[0][0]

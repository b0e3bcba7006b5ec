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

Fast and bounded: one aiohttp session (its C HTTP parser: ~0.5 ms of CPU per image, where
httpx's pure-Python stack took ~6), `concurrency` requests in flight (`per_host` per host),
bodies taken as sent (a Content-Encoding is refused: nothing inflates before the byte cap),
429/503 retried after their Retry-After, a `deadline_s` per image, at most `inflight_bytes`
held at once; checks (type, size, pixel cap against decompression bombs, full decode), hashing
and storing in `decode_workers` processes (warehouse/image_cache.py).

Resumable: each outcome is appended to this process's journal the moment it is known, and the
journal is folded into `image_fetches` every `commit_every_s`; a run that dies (even by
kill -9) leaves its journal, which the next run folds in first. So a crash loses only the
fetches in flight, and a re-run skips everything recorded.
"""
from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import json
import logging
import multiprocessing
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urljoin, urlsplit, urlunsplit

import aiohttp
import pyarrow as pa
import yarl

from ant_config import ImageFetchConfig
from warehouse.image_cache import cached_path, check_and_keep
from warehouse.store import Warehouse, upsert_many

log = logging.getLogger(__name__)

SCHEMES = ("http", "https")
REDIRECTS = (301, 302, 303, 307, 308)
RETRY_STATUSES = (429, 500, 502, 503, 504)
AS_SENT = {"Accept-Encoding": "identity"}
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
    return cached_path(wh.home / "images", sha256)


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

    async def _target(self, url: str, trusted: bool) -> tuple[str, dict, str | None]:
        """(URL to connect to, headers, TLS server name) for one hop, or _Refused (final)."""
        parts = urlsplit(url)
        if parts.scheme not in SCHEMES:
            raise _Refused(f"refused: scheme {parts.scheme or '(none)'!r} (only http and https)")
        host = (parts.hostname or "").lower()
        if not host:
            raise _Refused("refused: no host")
        if trusted or parts.netloc.lower() in self.trusted:
            return url, {}, None
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
                host if parts.scheme == "https" else None)

    # -- one image ---------------------------------------------------------------------------
    async def _download(self, session: aiohttp.ClientSession, url: str, trusted: bool, budget: _Budget
                        ) -> tuple[bytes, int]:
        """(body, bytes reserved in `budget`); the caller gives the reservation back."""
        for _ in range(self.cfg.max_redirects + 1):
            target, headers, server_name = await self._target(url, trusted)
            try:
                async with session.get(yarl.URL(target, encoded=True), headers={**AS_SENT, **headers},
                                       allow_redirects=False, server_hostname=server_name) as response:
                    status = response.status
                    if status in REDIRECTS and "location" in response.headers:
                        url, trusted = urljoin(url, response.headers["location"]), False  # checked again
                        continue
                    if status in RETRY_STATUSES:
                        raise _Refused(f"HTTP {status}", transient=True, retry_after=_retry_after(response.headers))
                    if status != 200:
                        raise _Refused(f"HTTP {status}")
                    kind = response.headers.get("content-type", "")
                    if not kind.startswith("image/"):
                        raise _Refused(f"content type {kind or 'missing'!r} is not an image")
                    if response.headers.get("content-encoding", "identity") != "identity":
                        raise _Refused(f"content encoding {response.headers['content-encoding']!r} (asked for none)")
                    declared = int(response.headers.get("content-length") or self.cfg.max_bytes)
                    if declared > self.cfg.max_bytes:
                        raise _Refused(f"larger than the cap of {self.cfg.max_bytes} bytes")
                    await budget.take(declared)
                    try:
                        data = bytearray()
                        async for chunk in response.content.iter_any():
                            data += chunk
                            if len(data) > declared:
                                raise _Refused(f"larger than the cap of {self.cfg.max_bytes} bytes"
                                               if declared == self.cfg.max_bytes else "longer than its Content-Length")
                    except BaseException:
                        await budget.give(declared)
                        raise
                    return bytes(data), declared
            except aiohttp.ServerTimeoutError:  # connect or read; the deadline is asyncio's own timeout
                raise _Refused(f"timeout after {self.cfg.timeout_s}s", transient=True) from None
            except aiohttp.ClientError:
                raise _Refused("unreachable", transient=True) from None
        raise _Refused(f"refused: more than {self.cfg.max_redirects} redirects")

    async def _fetch_one(self, session: aiohttp.ClientSession, url: str, decode: Executor, budget: _Budget,
                         hosts: dict[str, asyncio.Semaphore]) -> ImageFetch:
        target, trusted = _rewrite(url, self.cfg.url_rewrite)
        host = urlsplit(target).netloc.lower()
        gate = hosts.setdefault(host, asyncio.Semaphore(self.cfg.per_host))
        for attempt in range(self.cfg.retries + 1):
            # The slot is held until the image is checked and stored, so downloaded images never
            # queue up for the decoders: a kill -9 loses at most `per_host` fetches per host.
            async with gate:
                try:
                    async with asyncio.timeout(self.cfg.deadline_s):  # from the first byte sent, not the wait for a slot
                        data, held = await self._download(session, target, trusted, budget)
                except TimeoutError:
                    return ImageFetch(url, None, None, f"exceeded the deadline of {self.cfg.deadline_s}s", False)
                except _Refused as refused:
                    if not refused.transient or attempt == self.cfg.retries:
                        return ImageFetch(url, None, None, refused.reason, refused.transient)
                    wait = self.cfg.retry_backoff_s * 2 ** attempt
                    if refused.retry_after is not None:
                        wait = min(refused.retry_after, self.cfg.max_retry_after_s)
                else:
                    return await self._keep(url, data, held, decode, budget)
            await asyncio.sleep(wait)  # outside the slot: a host that asked us to wait gets other work meanwhile
        raise AssertionError("unreachable: the last attempt returns")

    async def _keep(self, url: str, data: bytes, held: int, decode: Executor, budget: _Budget) -> ImageFetch:
        """Check and store `data` in a decoding process; gives its `held` bytes back to `budget`."""
        try:
            reason, sha = await asyncio.get_running_loop().run_in_executor(
                decode, check_and_keep, data, self.cfg.max_pixels, self.wh.home / "images")
        finally:
            await budget.give(held)
        return ImageFetch(url, sha, len(data), reason, False)

    # -- many images ---------------------------------------------------------------------------
    async def run(self, urls: list[str]) -> list[ImageFetch]:
        cfg = self.cfg
        results: list[ImageFetch] = []
        pending: list[ImageFetch] = []
        budget, hosts, work = _Budget(cfg.inflight_bytes), {}, iter(urls)
        started = last_commit = last_log = time.monotonic()

        async def worker(session: aiohttp.ClientSession) -> None:
            """`concurrency` of these share `work`, so millions of URLs never become millions of tasks."""
            for url in work:
                result = await self._fetch_one(session, url, decode, budget, hosts)
                journal.write(result)
                results.append(result)
                pending.append(result)

        timeout = aiohttp.ClientTimeout(total=None, sock_connect=cfg.timeout_s, sock_read=cfg.timeout_s)
        journal = Journal(self.wh)
        with _decoders(cfg.decode_workers) as decode:
            async with aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=cfg.concurrency, limit_per_host=0),  # per host: ours
                    timeout=timeout, auto_decompress=False, trust_env=False) as session:
                tasks = [asyncio.create_task(worker(session)) for _ in range(min(cfg.concurrency, len(urls)))]
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


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds a 429/503 asks us to wait (Retry-After: seconds or an HTTP date), or None."""
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


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
    """Upsert fetch outcomes into `image_fetches` in one statement (a URL's last outcome wins)."""
    last = {f.url: f for f in fetched}
    with wh.writer() as con:
        upsert_many(con, "image_fetches", [f.__dict__ for f in last.values()])


def known_fetches(wh: Warehouse, urls: list[str]) -> dict[str, ImageFetch]:
    """Recorded outcomes of `urls` that need no new attempt (not transient, file present)."""
    Journal.fold_in(wh)
    known: dict[str, ImageFetch] = {}
    if wh.db_path.exists() and urls:
        with wh.reader() as con:
            con.register("wanted", pa.table({"url": pa.array(urls, pa.string())}))
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

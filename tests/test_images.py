"""The image fetcher against hostile metadata, on loopback only: refused schemes, hosts and
addresses (after our own resolver answers, and again on every redirect hop), a deadline per
image, Retry-After, a bounded byte budget, and a resume after kill -9 that re-fetches little.
No test sends a packet to a non-loopback address: those are refused before any connection."""
from __future__ import annotations

import gzip
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from PIL import Image

from ant_config import ImageFetchConfig
from tests.conftest import _REFUSED, Server
from warehouse.images import fetch_images
from warehouse.store import Warehouse

ROOT = Path(__file__).parent.parent
AMAZON = "https://images-na.ssl-images-amazon.com/"


def jpeg(n: int = 0, size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (n % 255, 80, 160)).save(buf, "JPEG")
    return buf.getvalue()


class Listener:
    """A loopback HTTP server whose routes the test sets: path → (status, headers, body or drip)."""

    def __init__(self, host: str = "127.0.0.1"):
        self.routes: dict[str, tuple] = {}
        self.hits: list[str] = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                listener.hits.append(self.path)
                status, headers, body = listener.routes.get(self.path, (404, {}, b"nope"))
                if callable(status):
                    status, headers, body = status()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if isinstance(body, bytes):
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                else:  # a drip: (bytes, seconds between them)
                    data, pause = body
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    for b in data:
                        self.wfile.write(bytes([b]))
                        self.wfile.flush()
                        time.sleep(pause)

        self.httpd = Server((host, 0), Handler)
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def mirror():
    server = Listener()
    yield server
    server.close()


@pytest.fixture()
def intranet():
    """A listener on another loopback address, standing for a host the fetcher must never reach."""
    server = Listener("127.0.0.2")
    yield server
    server.close()


def resolver(answers: dict[str, list[str]]):
    async def resolve(host: str) -> list[str]:
        if host not in answers:
            raise OSError(f"no such host {host}")
        return answers[host]
    return resolve


def config(mirror: Listener, **changes) -> ImageFetchConfig:
    return ImageFetchConfig(**{"url_rewrite": {AMAZON: mirror.url + "/"}, "retries": 0, **changes})


def test_refused_schemes_hosts_and_addresses_are_final_and_never_contacted(tmp_path, mirror, intranet):
    wh = Warehouse(tmp_path / "home")
    port = intranet.httpd.server_address[1]
    answers = {"images-na.ssl-images-amazon.com": ["10.0.0.1"], "m.media-amazon.com": ["169.254.169.254"],
               "ecx.images-amazon.com": ["127.0.0.2"], "g-ecx.images-amazon.com": ["93.184.216.34", "::1"],
               "z-ecx.images-amazon.com": ["0.0.0.0"]}
    urls = {
        "file:///etc/passwd": "refused: scheme 'file'",
        "ftp://images-na.ssl-images-amazon.com/x.jpg": "refused: scheme 'ftp'",
        "data:image/png;base64,AAAA": "refused: scheme 'data'",
        f"http://127.0.0.2:{port}/direct.jpg": "refused: host 127.0.0.2 is not an allowed image host",
        "http://169.254.169.254/latest/meta-data/": "refused: host 169.254.169.254 is not an allowed image host",
        "http://evil.example/x.jpg": "refused: host evil.example is not an allowed image host",
        "http://images-na.ssl-images-amazon.com.evil.example/x.jpg": "is not an allowed image host",
        "https://images-na.ssl-images-amazon.com/x.jpg": None,  # rewritten to the mirror: trusted
        "http://images-na.ssl-images-amazon.com/private.jpg": "resolves to a non-public address",
        "http://m.media-amazon.com/metadata.jpg": "resolves to a non-public address",
        f"http://ecx.images-amazon.com:{port}/loopback.jpg": "resolves to a non-public address",
        "http://g-ecx.images-amazon.com/mixed.jpg": "resolves to a non-public address",
        "http://z-ecx.images-amazon.com/unspecified.jpg": "resolves to a non-public address",
    }
    mirror.routes["/x.jpg"] = (200, {"Content-Type": "image/jpeg"}, jpeg())
    outcome = fetch_images(wh, list(urls), config(mirror), resolver(answers))
    for url, expected in urls.items():
        got = outcome[url]
        if expected is None:
            assert got.sha256 and got.reason is None, (url, got)
        else:
            assert got.sha256 is None and expected in got.reason and not got.transient, (url, got)
    assert intranet.hits == []


def test_a_broken_guard_could_still_reach_loopback_only():
    """The resolver answers above name private and public addresses; the suite's socket jail
    (tests/conftest.py) refuses any of them, so a guard that let one through fails its test and
    contacts nothing. Checked with a documentation address (RFC 5737), never routed."""
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError, match="loopback only"):
        sock.connect(("192.0.2.1", 80))
    assert _REFUSED.pop() == "192.0.2.1:80"  # recorded, and taken back so this test passes


def test_every_redirect_hop_is_checked_again(tmp_path, mirror, intranet):
    wh = Warehouse(tmp_path / "home")
    port = intranet.httpd.server_address[1]
    answers = {"m.media-amazon.com": ["10.0.0.1"]}
    mirror.routes.update({
        "/to-intranet.jpg": (302, {"Location": f"http://127.0.0.2:{port}/secret.jpg"}, b""),
        "/to-metadata.jpg": (301, {"Location": "http://169.254.169.254/latest/meta-data/"}, b""),
        "/to-private-name.jpg": (307, {"Location": "http://m.media-amazon.com/x.jpg"}, b""),
        "/to-file.jpg": (302, {"Location": "file:///etc/passwd"}, b""),
        "/loop.jpg": (302, {"Location": "/loop.jpg"}, b""),
        "/relative.jpg": (302, {"Location": "/ok.jpg"}, b""),
        "/ok.jpg": (200, {"Content-Type": "image/jpeg"}, jpeg(1)),
    })
    urls = {AMAZON + name: reason for name, reason in (
        ("to-intranet.jpg", "is not an allowed image host"), ("to-metadata.jpg", "is not an allowed image host"),
        ("to-private-name.jpg", "resolves to a non-public address"), ("to-file.jpg", "refused: scheme 'file'"),
        ("loop.jpg", "more than 3 redirects"), ("relative.jpg", None))}
    outcome = fetch_images(wh, list(urls), config(mirror), resolver(answers))
    for url, expected in urls.items():
        got = outcome[url]
        assert (got.reason is None and got.sha256) if expected is None else (expected in got.reason), (url, got)
    assert intranet.hits == []  # the redirect to 127.0.0.2 was never followed


def test_a_drip_ends_at_the_deadline_and_is_final(tmp_path, mirror):
    wh = Warehouse(tmp_path / "home")
    mirror.routes["/drip.jpg"] = (200, {"Content-Type": "image/jpeg"}, (jpeg(), 0.5))  # ~1 KB at 2 B/s
    started = time.monotonic()
    outcome = fetch_images(wh, [AMAZON + "drip.jpg"], config(mirror, deadline_s=2, timeout_s=10))
    assert time.monotonic() - started < 60  # the deadline, not the drip's 500 s (a busy machine is slow, not broken)
    got = outcome[AMAZON + "drip.jpg"]
    assert got.reason == "exceeded the deadline of 2.0s" and not got.transient  # not tried on every run


def test_retry_after_is_honoured_and_the_budget_never_deadlocks(tmp_path, mirror):
    wh = Warehouse(tmp_path / "home")
    answers = iter([(429, {"Retry-After": "1"}, b"slow down")])
    mirror.routes["/busy.jpg"] = (lambda: next(answers, (200, {"Content-Type": "image/jpeg"}, jpeg(2))), None, None)
    big = [jpeg(n, size=(300, 300)) for n in range(12)]
    for n, data in enumerate(big):
        mirror.routes[f"/big{n}.jpg"] = (200, {"Content-Type": "image/jpeg"}, data)
    cfg = config(mirror, retries=1, max_bytes=max(map(len, big)) + 10, inflight_bytes=2 * max(map(len, big)) + 20)
    started = time.monotonic()
    outcome = fetch_images(wh, [AMAZON + "busy.jpg"] + [f"{AMAZON}big{n}.jpg" for n in range(12)], cfg)
    assert time.monotonic() - started >= 1.0  # waited as asked
    assert all(f.sha256 for f in outcome.values()), outcome
    assert mirror.hits.count("/busy.jpg") == 2


def test_an_encoded_body_is_refused_before_anything_inflates_it(tmp_path, mirror):
    wh = Warehouse(tmp_path / "home")
    bomb = gzip.compress(bytes(50 << 20))  # 50 MB of zeros in ~50 KB: under the byte cap as sent
    mirror.routes["/gzip.jpg"] = (200, {"Content-Type": "image/jpeg", "Content-Encoding": "gzip"}, bomb)
    got = fetch_images(wh, [AMAZON + "gzip.jpg"], config(mirror, max_bytes=1 << 20, inflight_bytes=1 << 20))
    got = got[AMAZON + "gzip.jpg"]
    assert got.sha256 is None and got.reason == "content encoding 'gzip' (asked for none)" and not got.transient


FETCH_MANY = """
import logging, sys
from ant_config import ImageFetchConfig
from warehouse.images import fetch_images
from warehouse.store import Warehouse
logging.basicConfig(level=logging.INFO)
base, home, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
cfg = ImageFetchConfig(url_rewrite={"https://images-na.ssl-images-amazon.com/": base + "/"}, retries=0,
                       commit_every_s=0.3, concurrency=8)
fetch_images(Warehouse(home), [f"https://images-na.ssl-images-amazon.com/{i}.jpg" for i in range(n)], cfg)
"""


def test_a_fetch_killed_midway_resumes_without_fetching_again(tmp_path, mirror):
    n = 2000  # at 8 in flight and 20 ms each, about 5 s of fetching: stopped a quarter in
    for i in range(n):
        mirror.routes[f"/{i}.jpg"] = (lambda i=i: (time.sleep(0.02), (200, {"Content-Type": "image/jpeg"}, jpeg(i)))[1],
                                      None, None)
    home = tmp_path / "home"
    Warehouse(home).ensure_home()
    first = subprocess.Popen([sys.executable, "-c", FETCH_MANY, mirror.url, str(home), str(n)], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline, committed = time.monotonic() + 120, set()
    while len(committed) < n // 4 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
        committed = recorded(home)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    committed = recorded(home)
    before = set(mirror.hits)
    assert n // 4 <= len(committed) < n, "the first run should be stopped midway, after some commits"
    mirror.hits.clear()
    outcome = fetch_images(Warehouse(home), [f"{AMAZON}{i}.jpg" for i in range(n)],
                           config(mirror, commit_every_s=0.3, concurrency=32))
    assert all(f.sha256 for f in outcome.values())
    again = set(mirror.hits)
    assert not again & {f"/{url.rsplit('/', 1)[1]}" for url in committed}  # nothing recorded is fetched again
    assert len(again & before) <= len(before) - len(committed)  # only the work since the last commit


def recorded(home: Path) -> set[str]:
    wh = Warehouse(home)
    if not wh.db_path.exists():
        return set()
    with wh.reader() as con:
        return {u for (u,) in con.execute("SELECT url FROM image_fetches WHERE sha256 IS NOT NULL").fetchall()}

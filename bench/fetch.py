"""Image fetching throughput, memory and resume, against a loopback server that answers like a
far-away image host: real-sized JPEGs (500x500, ~50 KB) after ~20 ms of latency each.

    python bench/fetch.py [--images 10000] [--latency-ms 20] [--workdir DIR]

1. A full fetch with the default settings (`features.fetch`): images/s, the fetching
   process's peak RSS and the decoding processes' peak RSS.
2. The same fetch killed (SIGKILL) a third of the way in, then run again: the share of images
   the second run fetched again. Outcomes are journaled as they happen, so that is what was in
   flight: at most `per_host` images (64), whatever the run's size; hence 10,000 images by
   default (a category's worth), where 3,000 would make the same loss 2%.
The server runs in its own process; everything stays on 127.0.0.1.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image

from ant_config import ImageFetchConfig

HOST = "https://images-na.ssl-images-amazon.com/images/I/"


def make_images(folder: Path, n: int) -> None:
    """`n` distinct product-photo-like JPEGs (gradients plus noise), cached in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    x = np.linspace(0, 255, 500)
    base = np.stack([np.add.outer(x, x) / 2, np.add.outer(x, x[::-1]) / 2, np.full((500, 500), 200.0)], -1)
    for i in range(n):
        path = folder / f"{i}.jpg"
        if not path.exists():
            pixels = (base * rng.uniform(0.5, 1.0, 3) + rng.normal(0, 8, base.shape)).clip(0, 255).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, "JPEG", quality=85)
            path.write_bytes(buf.getvalue())


def serve(folder: Path, latency_s: float, port_file: Path, hits_file: Path) -> None:
    """The image host: keep-alive HTTP/1.1, `latency_s` before every answer; counts requests per path."""
    hits: dict[str, int] = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            time.sleep(latency_s)
            name = self.path.rsplit("/", 1)[-1]
            hits[name] = hits.get(name, 0) + 1
            data = (folder / name).read_bytes() if (folder / name).exists() else None
            self.send_response(200 if data else 404)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(data or b"")))
            self.end_headers()
            self.wfile.write(data or b"")

    class Server(ThreadingHTTPServer):
        request_queue_size, daemon_threads = 1024, True

        def handle_error(self, request, client_address):
            pass

    httpd = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    port_file.write_text(str(httpd.server_address[1]))
    part = hits_file.with_suffix(".part")
    while True:  # the parent reads the counts and kills this process
        part.write_text(json.dumps(hits))
        part.replace(hits_file)  # never read half-written
        time.sleep(0.5)


def fetch(base: str, home: str, n: int) -> None:
    """One fetch of the n images (its own process, so its RSS is its own); one JSON line."""
    import resource
    from warehouse.images import fetch_images
    from warehouse.store import Warehouse
    started = time.monotonic()
    out = fetch_images(Warehouse(home), [f"{HOST}{i}.jpg" for i in range(n)],
                       ImageFetchConfig(url_rewrite={HOST: base + "/"}))
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"seconds": time.monotonic() - started, "fetched": sum(f.sha256 is not None for f in out.values()),
                      "rss_mb": me.ru_maxrss / 1024, "decoders_rss_mb": children.ru_maxrss / 1024,
                      "cpu_s": me.ru_utime + me.ru_stime, "decoders_cpu_s": children.ru_utime + children.ru_stime}))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "ant-bench-fetch")
    parser.add_argument("--role", choices=["server", "client"], help=argparse.SUPPRESS)
    parser.add_argument("--base"), parser.add_argument("--home")
    args = parser.parse_args()
    folder = args.workdir / "images"
    if args.role == "server":
        return serve(folder, args.latency_ms / 1000, args.workdir / "port", args.workdir / "hits.json")
    if args.role == "client":
        return fetch(args.base, args.home, args.images)

    make_images(folder, args.images)
    (args.workdir / "port").unlink(missing_ok=True)
    server = subprocess.Popen([sys.executable, __file__, "--role", "server", "--images", str(args.images),
                               "--latency-ms", str(args.latency_ms), "--workdir", str(args.workdir)])
    try:
        while not (args.workdir / "port").exists():
            time.sleep(0.1)
        base = f"http://127.0.0.1:{(args.workdir / 'port').read_text()}"

        def client(home: Path, **popen) -> subprocess.Popen:
            return subprocess.Popen([sys.executable, __file__, "--role", "client", "--base", base, "--home", str(home),
                                     "--images", str(args.images)], **popen)

        def hits() -> dict[str, int]:
            time.sleep(0.6)  # the server writes its counts every half second
            return json.loads((args.workdir / "hits.json").read_text())

        server_cpu = cpu_seconds(server.pid)
        full = client(Path(tempfile.mkdtemp(prefix="ant-fetch-")), stdout=subprocess.PIPE, text=True)
        result = json.loads(full.communicate()[0].strip().splitlines()[-1])
        server_cpu = cpu_seconds(server.pid) - server_cpu
        n, seconds = result["fetched"], result["seconds"]
        fetcher_cpu = result["cpu_s"] + result["decoders_cpu_s"]
        print(f"fetch : {n:,} of {args.images:,} images in {seconds:.1f}s = {n / seconds:,.0f} images/s "
              f"({args.latency_ms:.0f} ms latency each); peak RSS {result['rss_mb']:,.0f} MB (decoding processes "
              f"{result['decoders_rss_mb']:,.0f} MB)")
        print(f"cpu   : fetcher {1000 * result['cpu_s'] / n:.2f} ms/image + decoding {1000 * result['decoders_cpu_s'] / n:.2f}"
              f" ms/image; the loopback server {1000 * server_cpu / n:.2f} ms/image on the same {os.cpu_count()} "
              f"cores. With the cores to itself the fetcher is bounded by {os.cpu_count() * n / fetcher_cpu:,.0f} images/s")

        home = Path(tempfile.mkdtemp(prefix="ant-fetch-resume-"))
        start = sum(hits().values())
        killed = client(home, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        while sum(hits().values()) - start < args.images // 3:
            pass
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()
        before = hits()
        again = client(home, stdout=subprocess.PIPE, text=True)
        json.loads(again.communicate()[0].strip().splitlines()[-1])
        after = hits()
        first_run = {k for k, v in before.items() if v >= 2}  # fetched by the full run and by the killed one
        refetched = sum(1 for k in first_run if after.get(k, 0) > before[k])
        print(f"resume: killed after {len(first_run):,} images; the next run fetched {refetched:,} of them "
              f"again ({refetched / args.images:.1%} of all; at most the {ImageFetchConfig().per_host} in flight)")
    finally:
        server.kill()


if __name__ == "__main__":
    main()

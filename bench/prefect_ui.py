"""The transfer report where Prefect users look: checked in a real browser, against a real server.

    python bench/prefect_ui.py [--chromium /usr/bin/chromium] [--screenshot report.png]

Starts `prefect server start` (UI on) on 127.0.0.1, publishes a `transfer-report` artifact the
way the pipeline does (a report of nine methods × three seeds, both charts inlined), opens the
artifact's page in headless Chromium and asks the page itself, over the DevTools protocol,
whether both charts loaded and whether any table is wider than the space it is shown in.
Prints the verdicts and writes a screenshot. Needs Chromium (Debian: `apt-get install
chromium`); about half a minute. Kept as a script, not a test: CI machines have no browser.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import numpy as np
import websockets

from flows.server import wait_for_api

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# What the page reports: every image loaded with a size, and no table wider than its container.
PROBE = """JSON.stringify({
  images: [...document.querySelectorAll('img[src^="data:image/png"]')].map(i => [i.complete, i.naturalWidth]),
  tables: [...document.querySelectorAll('table')].map(t => [t.scrollWidth, t.parentElement.clientWidth]),
  text: document.body.innerText.slice(0, 200)})"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def publish(api: str, home: Path) -> str:
    """A transfer-report artifact as the pipeline writes it; its id."""
    sys.path.insert(0, str(ROOT))
    os.environ["PREFECT_API_URL"] = api
    from prefect import flow
    from prefect.artifacts import create_markdown_artifact
    from ant_config import AntConfig
    from ant_config.protocol import METHODS
    from ant_model.evaluate import Evaluation
    from flows.pipeline import inline_charts
    from services.context import Context
    from services.planning import adapt_folder
    from services.report import REPORT_FILE, save_report
    from services.training import RANKS_FILE
    ctx, rng, results = Context.of(AntConfig(home=home)), np.random.default_rng(0), []
    for method, spec in METHODS.items():
        for seed in (0, 1, 2):
            run = {"target": "Gift_Cards", "method": method, "seed": seed, "version": f"{method}-{seed}",
                   "valid": {"recall@10": rng.random()}, "recall@10": rng.random() * 0.4, "ndcg@10": rng.random() * 0.2,
                   "recall@50": rng.random(), "ndcg@50": rng.random() * 0.3, "best_epoch": 40 if spec.trains else None,
                   "epochs_run": 50 if spec.trains else 0, "stopped_by": "patience" if spec.trains else None}
            folder = adapt_folder(ctx, "Gift_Cards", method, run["version"])
            folder.mkdir(parents=True, exist_ok=True)
            Evaluation(rng.integers(0, 100, 453), np.zeros(453, dtype=int)).save(folder / RANKS_FILE)
            results.append(run)
    report = save_report(ctx, results)

    @flow(name="pipeline")
    def transfer_report() -> str:
        return str(create_markdown_artifact(inline_charts((report / REPORT_FILE).read_text(), report),
                                            key="transfer-report"))
    return transfer_report()


async def inspect(debug_port: int, url: str, screenshot: Path) -> dict:
    """Open `url` in the running Chromium, wait for the report to render, probe it, shoot it."""
    for _ in range(100):
        try:
            target = httpx.put(f"http://127.0.0.1:{debug_port}/json/new?{url}", timeout=2).json()
            break
        except (httpx.HTTPError, ValueError):
            await asyncio.sleep(0.2)
    async with websockets.connect(target["webSocketDebuggerUrl"], max_size=64 << 20) as ws:
        ids = iter(range(1, 10_000))

        async def call(method: str, **params):
            n = next(ids)
            await ws.send(json.dumps({"id": n, "method": method, "params": params}))
            while True:
                message = json.loads(await ws.recv())
                if message.get("id") == n:
                    return message.get("result", {})

        found = {}
        for _ in range(60):  # the UI renders the artifact after its own API calls
            await asyncio.sleep(0.5)
            value = (await call("Runtime.evaluate", expression=PROBE, returnByValue=True))["result"]["value"]
            found = json.loads(value)
            if len(found["images"]) >= 2 and all(done and width for done, width in found["images"]):
                break
        shot = await call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--screenshot", type=Path, default=Path("prefect-ui-report.png"))
    args = parser.parse_args()
    work, port, debug_port = Path(tempfile.mkdtemp(prefix="ant-ui-")), free_port(), free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(work / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_API_URL": api}
    env.pop("PREFECT_API_URL", None)
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    browser = None
    try:
        if not wait_for_api(api, 120, server):
            sys.exit("the Prefect server did not start within 120 s")
        artifact = publish(api, work / "home")
        browser = subprocess.Popen([args.chromium, *CHROMIUM_FLAGS, f"--remote-debugging-port={debug_port}",
                                    f"--user-data-dir={work / 'chromium'}", "--window-size=1400,1000"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        found = asyncio.run(inspect(debug_port, f"http://127.0.0.1:{port}/artifacts/artifact/{artifact}",
                                    args.screenshot))
    finally:
        if browser:
            browser.kill()
        os.killpg(server.pid, signal.SIGINT)
    charts = len(found.get("images", [])) == 2 and all(done and width for done, width in found["images"])
    fits = bool(found.get("tables")) and all(wide <= room for wide, room in found["tables"])
    print(f"charts inline : {'ok' if charts else 'FAILED'} ({found.get('images')})")
    print(f"tables fit    : {'ok' if fits else 'FAILED'} (table width vs room, px: {found.get('tables')})")
    print(f"screenshot    : {args.screenshot.resolve()}")
    sys.exit(0 if charts and fits else 1)


if __name__ == "__main__":
    main()

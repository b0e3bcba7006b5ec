"""One Prefect API per user for the flow commands of every home, never an orphan.

With `PREFECT_API_URL` set, flows use that server and nothing here runs. Otherwise
`prefect_api(home)` reuses the server another command started, or starts one (`python -m
flows.server`), and points this process at it. The server keeps its state beside Prefect's
own, in `$PREFECT_HOME/ant-server/` (`~/.prefect/ant-server/`), so its database is migrated
once per user, not once per home; each flow run is tagged `ant-home:<home>`, and task caches
key on the warehouse's identity, so homes never share results.

Every command using the server holds a shared lock on `ant-server/users.lock` for its
lifetime; the kernel releases that lock however the command ends (SIGINT, SIGTERM, even
`kill -9`). The server's watchdog stops the server once it has been able to take the lock
exclusively, i.e. nobody has used it, for `idle_s` seconds (`orchestration.server_idle_s`:
the next command then starts at once; 0 stops it with its last command).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from filelock import FileLock

from ant_config.errors import UserError

STARTUP_TIMEOUT_S = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120"))
WATCH_INTERVAL_S = 1.0
HEALTH_TIMEOUT_S = 2.0


class ServerError(UserError, RuntimeError):
    """The local Prefect API could not be started."""


def server_state() -> Path:
    """The server's folder (database, log, locks, `server.json`), made if missing."""
    folder = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser().resolve() / "ant-server"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=HEALTH_TIMEOUT_S).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for_api(url: str, timeout_s: float, process: subprocess.Popen | None = None) -> bool:
    """Whether the API at `url` answers its health check within `timeout_s` (False at once if
    `process`, the server, exits first)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        if _healthy(url):
            return True
        time.sleep(0.2)
    return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(state: Path, idle_s: float) -> str:
    port = _free_port()
    log = open(state / "server.log", "ab")
    process = subprocess.Popen([sys.executable, "-m", "flows.server", str(state), str(port), str(idle_s)],
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True, cwd=Path(__file__).resolve().parent.parent)
    url = f"http://127.0.0.1:{port}/api"
    if wait_for_api(url, STARTUP_TIMEOUT_S, process):
        (state / "server.json").write_text(json.dumps({"url": url, "pid": process.pid}))
        return url
    if process.poll() is not None:
        raise ServerError(f"the local Prefect server exited at start (code {process.returncode}); "
                          f"see {state / 'server.log'}")
    process.terminate()
    raise ServerError(f"the local Prefect server did not answer within {STARTUP_TIMEOUT_S:.0f}s; see "
                      f"{state / 'server.log'} (or set PREFECT_API_URL to a running server)")


@contextlib.contextmanager
def prefect_api(home: str | Path, idle_s: float = 0.0) -> Iterator[str | None]:
    """Inside: Prefect talks to the user's server (yields its URL; None when PREFECT_API_URL is
    set), and the flow runs started are tagged with `home`. `idle_s`: how long a server this
    call starts stays up after its last user."""
    if os.environ.get("PREFECT_API_URL"):
        yield None
        return
    state = server_state()
    users = open(state / "users.lock", "a")
    try:
        fcntl.flock(users, fcntl.LOCK_SH)  # held until this process ends
        with FileLock(str(state / "start.lock")):
            known = state / "server.json"
            url = json.loads(known.read_text())["url"] if known.exists() else None
            if url is None or not _healthy(url):
                url = _start(state, idle_s)
        from prefect import tags
        from prefect.settings import PREFECT_API_URL, temporary_settings
        os.environ["PREFECT_API_URL"] = url  # for worker processes too (a local Dask cluster)
        with temporary_settings(updates={PREFECT_API_URL: url}), tags(f"ant-home:{Path(home).resolve()}"):
            yield url
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        users.close()  # releases the shared lock; the server stops once no one has held it for idle_s


def _watch(state: Path, server, idle_s: float) -> None:
    """Stop `server` once no command has held the users lock for `idle_s` seconds."""
    users = open(state / "users.lock", "a")
    idle_since = None
    while not server.should_exit:
        time.sleep(WATCH_INTERVAL_S)
        try:
            fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            idle_since = None  # in use
            continue
        idle_since = idle_since or time.monotonic()
        if time.monotonic() - idle_since >= idle_s:
            (state / "server.json").unlink(missing_ok=True)  # before anyone can take the lock again
            server.should_exit = True
        fcntl.flock(users, fcntl.LOCK_UN)


def serve(state: Path, port: int, idle_s: float) -> None:
    """The server process: Prefect's API app under uvicorn, stopped by the watchdog."""
    os.environ.update({"PREFECT_HOME": str(state), "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
                       "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
    import uvicorn
    from prefect.server.api.server import create_app
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="error",
                                           lifespan="on"))
    threading.Thread(target=_watch, args=(state, server, idle_s), daemon=True).start()
    server.run()


if __name__ == "__main__":
    serve(Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))

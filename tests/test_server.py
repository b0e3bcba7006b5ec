"""The Prefect API of the flow commands: one per user for every home, shared by the commands
that run at once, and gone `idle_s` after the last of them ends, however it ends (kill -9
included)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.server import prefect_api, server_state
from tests.test_cli_config import ANT

ROOT = Path(__file__).parent.parent
SHARE = "from flows.server import prefect_api\nimport sys\nwith prefect_api(sys.argv[1]) as url: print(url)"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (already exited, not yet reaped) is not alive
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def wait_gone(pid: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.2)
    return False


@pytest.fixture()
def no_api(monkeypatch, tmp_path):
    """No PREFECT_API_URL, and a PREFECT_HOME of this test's own (not the session's server)."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    return {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}


def test_commands_on_any_home_share_one_server_which_stops_after_the_last(tmp_path, no_api):
    from prefect.context import TagsContext
    with prefect_api(tmp_path / "a") as url:
        assert f"ant-home:{(tmp_path / 'a').resolve()}" in TagsContext.get().current_tags  # runs say their home
        state = json.loads((server_state() / "server.json").read_text())
        other = subprocess.run([sys.executable, "-c", SHARE, str(tmp_path / "b")], capture_output=True, text=True,
                               cwd=ROOT, env=no_api, timeout=1800)
        assert other.returncode == 0, other.stderr[-2000:]
        assert other.stdout.strip() == url  # another home, the same server: not a second one
        assert alive(state["pid"])  # the other command's exit did not stop it: this one still uses it
    assert wait_gone(state["pid"]), "the server outlived its last user"
    assert not (server_state() / "server.json").exists()


def test_the_server_waits_idle_s_for_the_next_command(tmp_path, no_api):
    """What makes a second command start at once: the same server, not a new one."""
    with prefect_api(tmp_path / "a", idle_s=8) as url:
        pid = json.loads((server_state() / "server.json").read_text())["pid"]
    time.sleep(1.5)
    assert alive(pid)
    with prefect_api(tmp_path / "b") as again:
        assert again == url  # the same server (a new one would have another port)
    assert alive(pid)
    assert wait_gone(pid, timeout=120), "the server outlived idle_s"


def test_kill_9_of_a_flow_command_leaves_no_server(tmp_path, write_config, no_api):
    config = write_config(orchestration={"server_idle_s": 0})
    cli = subprocess.Popen([*ANT, "ingest", "--config", str(config)], cwd=ROOT, env=no_api,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    state = server_state() / "server.json"
    deadline = time.monotonic() + 120
    while not state.exists() and cli.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert state.exists(), "the command never started its server"
    server = json.loads(state.read_text())["pid"]
    cli.send_signal(signal.SIGKILL)
    cli.wait(timeout=30)
    assert wait_gone(server), "kill -9 of the command left its Prefect server running"

"""As users run it: a real Prefect server on 127.0.0.1, the process work pool, the deployments
of prefect.yaml, `prefect deployment run` for the pipeline and a worker with --run-once; a
second run hits the caches and registers nothing new."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from ant_config.protocol import METHODS
from flows.server import wait_for_api
from tests.conftest import CONVERGING_SASREC


ROOT = Path(__file__).parent.parent
PREFECT = [sys.executable, "-m", "prefect"]


@pytest.fixture()
def prefect_server(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    server = subprocess.Popen([*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port),
                               "--no-ui", "--analytics-off"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    api = f"http://127.0.0.1:{port}/api"
    try:
        if not wait_for_api(api, 120, server):
            pytest.fail("the Prefect server did not start within 120 s")
        yield api, {**env, "PREFECT_API_URL": api}
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def run(args, env, timeout=3600):  # only a hung command reaches it: a busy machine is slow, not broken
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-3000:])
    return done.stdout


def test_deployment_run_through_a_worker(prefect_server, pipeline_config, tmp_path):
    api, env = prefect_server
    config = pipeline_config(sasrec=CONVERGING_SASREC)  # so that a model is promoted
    run([*PREFECT, "work-pool", "create", "ant", "--type", "process"], env)
    run([*PREFECT, "--no-prompt", "deploy", "--all"], env)

    def deployment_run() -> list[str]:
        """Trigger, work, check; the state names of the run's task runs (subflows' included)."""
        out = run([*PREFECT, "deployment", "run", "pipeline/quickstart", "-p", f"config_path={config}"], env)
        run_id = next(line.split()[-1] for line in out.splitlines() if "UUID" in line)
        run([*PREFECT, "worker", "start", "--pool", "ant", "--run-once"], env)
        state = httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()["state"]
        assert state["type"] == "COMPLETED", state
        ids, frontier = {run_id}, [run_id]
        while frontier:
            children = httpx.post(f"{api}/flow_runs/filter", timeout=10, json={
                "flow_runs": {"parent_flow_run_id": {"any_": frontier}}}).json()
            frontier = [c["id"] for c in children]
            ids.update(frontier)
        tasks = httpx.post(f"{api}/task_runs/filter", timeout=10, json={"flow_runs": {"id": {"any_": list(ids)}}}).json()
        return [t["state"]["name"] for t in tasks if not t["state"]["state_details"].get("child_flow_run_id")]

    assert set(deployment_run()) == {"Completed"}
    home = tmp_path / "home"
    models = json.loads(run([sys.executable, "-m", "flows.cli", "sql", "--csv", "--config", str(config),
                             "SELECT to_json(list(kind)) FROM models"], env).splitlines()[1].strip('"').replace('""', '"'))
    assert sorted(models) == ["adapt"] * len(METHODS) + ["pretrain"] * 2
    report = home / "artifacts" / "reports" / "latest"
    assert "## Gift_Cards" in (report / "report.md").read_text() and (report / "metrics.png").exists()
    assert "Promoted `" in run([sys.executable, "-m", "flows.cli", "report", "--config", str(config)], env)

    assert set(deployment_run()) == {"Cached"}  # no task ran again
    again = json.loads(run([sys.executable, "-m", "flows.cli", "sql", "--csv", "--config", str(config),
                            "SELECT to_json(list(kind)) FROM models"], env).splitlines()[1].strip('"').replace('""', '"'))
    assert sorted(again) == sorted(models)  # nothing trained or registered again

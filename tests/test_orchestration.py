"""Crashes, concurrency and scale-out of the whole pipeline, run as users run it (`ant run`
in its own process, against the session's Prefect API):

- a run killed after the features stage resumes without redoing ingest or features and ends
  with the registry of an uninterrupted run;
- two runs on the same ANT_HOME at once take turns for the data writes, share the training
  (each version is trained once) and end with the registry of one run;
- features and adaptation on a Dask cluster and pre-training under torchrun register the
  same model versions as the default run.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from filelock import FileLock, Timeout
from prefect.settings import get_current_settings

from ant_config import load_config
from ant_config.protocol import METHODS
from flows.pipeline import pipeline
from services.context import Context
from services.planning import adapt_plan, pretrain_plan
from tests.prefect_runs import task_runs
from warehouse import registry
from warehouse.store import Warehouse

ROOT = Path(__file__).parent.parent
pytestmark = pytest.mark.slow


def ant_run(config: Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "PREFECT_API_URL": str(get_current_settings().api.url), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "flows.cli", "run", "--config", str(config)], cwd=ROOT,
                            env=env, text=True, start_new_session=True, **popen)


def registry_rows(home: Path) -> list[tuple]:
    return sorted((r["kind"], r["method"] or "", r["version"]) for r in registry.models(Warehouse(home)))


def uninterrupted_registry(config: Path) -> list[tuple]:
    """The (kind, method, version) rows a full run of `config` registers: versions are content
    hashes of config, data and parent, so they are known once the features exist."""
    ctx = Context.of(load_config(config))
    ant, text = (pretrain_plan(ctx, ["Magazine_Subscriptions"], kind) for kind in ("ant", "text-only"))
    parent = {"ant": ant.version, "text-only": text.version}
    return sorted([("pretrain", "ant", ant.version), ("pretrain", "text-only", text.version)] + [
        ("adapt", m, adapt_plan(ctx, "Gift_Cards", m, seed, parent.get(spec.parent)).version)
        for m, spec in METHODS.items() for seed in ctx.config.seeds])


def wait_until_locked(home: Path, proc: subprocess.Popen, timeout: float = 1800) -> None:
    """Until `proc` holds the write lock of `home`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        probe = FileLock(str(home / ".write.lock"))
        try:
            probe.acquire(timeout=0)
            probe.release()
            time.sleep(0.2)
        except Timeout:
            return
    pytest.fail(f"the first run never took the write lock (exit {proc.poll()})")


def test_killed_after_features_then_resumed(prefect, pipeline_config, tmp_path):
    config = pipeline_config()
    home = tmp_path / "home"
    run = ant_run(config, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    featurized, lines = set(), []
    for line in run.stdout:
        lines.append(line)
        if "task run 'features " in line and "Finished in state Completed" in line:
            featurized.add(line.split("'features ")[1].split("'")[0])
        if featurized == {"Magazine_Subscriptions", "Gift_Cards"}:
            os.killpg(run.pid, signal.SIGKILL)  # mid-run: the pre-training may have begun
            break
    assert run.wait(timeout=30) == -signal.SIGKILL, "the run ended before its features stage:\n" + "".join(lines[-40:])

    resumed = pipeline(str(config), return_state=True)
    assert resumed.is_completed()
    ran = {r.name: r.state.name for r in task_runs(resumed.state_details.flow_run_id)}
    for name, state in ran.items():
        if name.split()[0] in ("download", "ingest", "features"):
            assert state == "Cached", f"{name} ran again"
    assert sum(state == "Completed" for state in ran.values()) >= 7  # the adaptation ran

    rows = registry_rows(home)
    assert rows == uninterrupted_registry(config)
    assert len({version for _, _, version in rows}) == len(rows) == 2 + len(METHODS)  # no duplicates
    folders = {p.parent.name for p in (home / "artifacts").rglob("result.json")}
    assert folders == {version for _, _, version in rows}  # no orphaned artifacts


def test_two_runs_on_one_home_share_the_work(prefect, pipeline_config, tmp_path):
    config = pipeline_config()
    home = tmp_path / "home"
    first = ant_run(config, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wait_until_locked(home, first)
    second = ant_run(config, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    outputs = [p.communicate(timeout=3600)[0] for p in (first, second)]
    for proc, out in zip((first, second), outputs):
        assert proc.returncode == 0, out[-3000:]
        assert "## Gift_Cards" in out
    assert registry_rows(home) == uninterrupted_registry(config)  # one set of models, each registered once


def test_dask_and_torchrun_register_the_same_models(prefect, pipeline_config, tmp_path):
    config = pipeline_config(orchestration={"task_runner": "dask", "workers": 2, "pretrain_processes": 2})
    assert pipeline(str(config), return_state=True).is_completed()
    rows = registry_rows(tmp_path / "home")
    assert rows == uninterrupted_registry(config)
    ant = next(version for kind, method, version in rows if method == "ant")
    assert (tmp_path / "home" / "artifacts" / "pretrain" / "ant" / ant / "fit.json").exists()  # torchrun's

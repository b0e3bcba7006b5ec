"""Prefect task caching keyed on content, with the results kept under ANT_HOME.

A task's cache key hashes what its result depends on (data fingerprints, the config sections
it reads, model versions, the code version) and the warehouse's identity, never the flow
run. So a re-run with nothing changed returns every task's stored result without running
it, a change re-runs exactly the tasks whose inputs it touches, and a new or re-created
warehouse starts cold. `PREFECT_TASKS_REFRESH_CACHE=true` runs every task again.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import Task

from ant_config import AntConfig
from warehouse.store import Warehouse

CODE_VERSION = 1  # bump when a change to the code changes what a task produces


def content_key(config: AntConfig, name: str, parts: Any) -> str:
    payload = {"task": name, "code": CODE_VERSION, "warehouse": Warehouse(config.home).identity(),
               "parts": parts}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def keyed(name: str, parts: Callable[[dict], Any]) -> Callable[[Any, dict], str]:
    """A `cache_key_fn` for a task whose parameters include `config`: the hash of
    `parts(parameters)`, computed when the task is about to run (its inputs are ready)."""
    def cache_key(_context: Any, parameters: dict) -> str:
        return content_key(parameters["config"], name, parts(parameters))
    return cache_key


def results_dir(config: AntConfig) -> Path:
    return Path(config.home).resolve() / "prefect-results"


def in_home(task: Task, config: AntConfig, **options) -> Task:
    """`task` with its results persisted under `config.home` (what makes the cache work)."""
    return task.with_options(result_storage=results_dir(config), persist_result=True, **options)

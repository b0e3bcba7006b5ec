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

from services.context import Context
from services.planning import CODE_VERSION


def content_key(ctx: Context, name: str, parts: Any) -> str:
    payload = {"task": name, "code": CODE_VERSION, "warehouse": ctx.warehouse.identity(), "parts": parts}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def keyed(name: str, parts: Callable[[dict], Any]) -> Callable[[Any, dict], str]:
    """A `cache_key_fn` for a task whose parameters include `ctx`: the hash of
    `parts(parameters)`, computed when the task is about to run (its inputs are ready)."""
    def cache_key(_context: Any, parameters: dict) -> str:
        return content_key(parameters["ctx"], name, parts(parameters))
    return cache_key


def results_dir(ctx: Context) -> Path:
    return ctx.warehouse.home / "prefect-results"


def in_home(task: Task, ctx: Context, **options) -> Task:
    """`task` with its results persisted under the home (what makes the cache work)."""
    return task.with_options(result_storage=results_dir(ctx), persist_result=True, **options)

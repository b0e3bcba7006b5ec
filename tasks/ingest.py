"""Prefect tasks of the ingest: download one raw file, build one domain's tables.

Thin wrappers: the work is in `warehouse.download` and `warehouse.ingest`, which tests
call directly. Retries apply to transient network errors only (a 404 will not heal).
A download is cached on its URL within one `download.revalidate_after_h` period (the next
period re-validates it with the host; it also runs again whenever the local file is gone); an
ingest is cached on the raw files' content and the filtering settings.
"""
from __future__ import annotations

import time
import uuid
from pathlib import Path

from prefect import task
from prefect.logging import get_run_logger

from ant_config import AntConfig
from tasks.caching import in_home, keyed
from warehouse.download import DownloadRecord, TransientDownloadError, fetch, raw_path
from warehouse.ingest import DomainSummary, fingerprint, ingest_domain
from warehouse.schema import SCHEMA_VERSION
from warehouse.sources import SourceFile
from warehouse.store import Warehouse


def _transient(task, task_run, state) -> bool:
    """Retry only what a retry can fix."""
    try:
        state.result()
    except TransientDownloadError:
        return True
    except Exception:  # noqa: BLE001 - any other failure is final
        return False
    return False


def _remote_file(parameters: dict) -> list:
    config, source = parameters["config"], parameters["source"]
    hours = config.download.revalidate_after_h
    period = int(time.time() // (hours * 3600)) if hours else uuid.uuid4().hex  # 0: never cached
    return [source.url(config.sources.base_url(source.release)), source.path, hours, period]


def _raw_content(parameters: dict) -> list:
    return [parameters["config"].release, parameters["category"], SCHEMA_VERSION,
            fingerprint(parameters["reviews"], parameters["meta"], parameters["config"].filtering)]


@task(name="download", retry_condition_fn=_transient, task_run_name="download {source.path}",
      cache_key_fn=keyed("download", _remote_file))
def download_source(config: AntConfig, source: SourceFile) -> DownloadRecord:
    wh = Warehouse(config.home)
    result = fetch(wh, source.url(config.sources.base_url(source.release)),
                   raw_path(wh, source.release, source.path),
                   timeout_s=config.download.timeout_s)
    get_run_logger().info("%s: %s, %d bytes in %.1fs", Path(source.path).name, result.status,
                          result.record.size, result.seconds)
    return result.record


def download_task(config: AntConfig, source: SourceFile):
    """`download_source` as a run of `config` uses it: retried on transient errors, and run
    even within its cache period when the local file is missing."""
    missing = not raw_path(Warehouse(config.home), source.release, source.path).exists()
    return in_home(download_source, config, refresh_cache=missing,
                   retries=config.download.retries, retry_delay_seconds=config.download.retry_delay_s)


@task(name="ingest-domain", task_run_name="ingest {category}", cache_key_fn=keyed("ingest", _raw_content))
def ingest_category(config: AntConfig, category: str, reviews: DownloadRecord,
                    meta: DownloadRecord) -> DomainSummary:
    summary = ingest_domain(Warehouse(config.home), config.release, category, reviews, meta,
                            config.filtering, config.ingest)
    get_run_logger().info("%s", summary)
    return summary

"""Prefect tasks of the ingest: download one raw file, build one domain's tables.

Thin wrappers: the work is in `warehouse.download` and `warehouse.ingest`, which tests
call directly. Retries apply to transient network errors only (a 404 will not heal).
"""
from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.logging import get_run_logger

from ant_config import AntConfig
from warehouse.download import DownloadRecord, TransientDownloadError, fetch, raw_path
from warehouse.ingest import DomainSummary, ingest_domain
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


@task(name="download", retry_condition_fn=_transient, task_run_name="download {source.path}")
def download_source(config: AntConfig, source: SourceFile) -> DownloadRecord:
    wh = Warehouse(config.home)
    result = fetch(wh, source.url(config.sources.base_url(source.release)),
                   raw_path(wh, source.release, source.path),
                   timeout_s=config.download.timeout_s)
    get_run_logger().info("%s: %s, %d bytes in %.1fs", Path(source.path).name, result.status,
                          result.record.size, result.seconds)
    return result.record


@task(name="ingest-domain", task_run_name="ingest {category}")
def ingest_category(config: AntConfig, category: str, reviews: DownloadRecord,
                    meta: DownloadRecord) -> DomainSummary:
    summary = ingest_domain(Warehouse(config.home), config.release, category, reviews, meta,
                            config.filtering, config.ingest)
    get_run_logger().info("%s", summary)
    return summary

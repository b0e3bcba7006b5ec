"""Prefect tasks of the ingest: download one raw file, build one domain's tables, import one
processed dataset.

Thin wrappers: the work is in `warehouse.download`, `warehouse.ingest` and `warehouse.atomic`,
which tests call directly. Retries apply to transient network errors only (a 404 will not heal).
A download is cached on its URL within one `download.revalidate_after_h` period (the next
period re-validates it with the host; it also runs again whenever the local file is gone); an
ingest is cached on the raw files' sha256 and the filtering settings, and runs whenever the
warehouse holds another version of the domain (e.g. after a switch of mirrors and back).
"""
from __future__ import annotations

import time
import uuid
from dataclasses import asdict
from pathlib import Path

from prefect import task
from prefect.logging import get_run_logger

from ant_config import AtomicImport
from services.context import Context
from tasks.caching import in_home, keyed
from warehouse import atomic
from warehouse.download import DownloadRecord, TransientDownloadError, fetch, raw_path
from warehouse.ingest import DomainSummary, fingerprint, ingest_domain
from warehouse.schema import SCHEMA_VERSION
from warehouse.sources import SourceFile


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
    config, source = parameters["ctx"].config, parameters["source"]
    hours = config.download.revalidate_after_h
    period = int(time.time() // (hours * 3600)) if hours else uuid.uuid4().hex  # 0: never cached
    return [source.url(config.sources.base_url(source.release)), source.path, hours, period]


def _raw_content(parameters: dict) -> list:
    config = parameters["ctx"].config
    return [config.release, parameters["category"], SCHEMA_VERSION,
            fingerprint(parameters["reviews"], parameters["meta"], config.filtering)]


@task(name="download", retry_condition_fn=_transient, task_run_name="download {source.path}",
      cache_key_fn=keyed("download", _remote_file))
def download_source(ctx: Context, source: SourceFile) -> DownloadRecord:
    config = ctx.config
    base = config.sources.base_url(source.release)
    result = fetch(ctx.warehouse, source.url(base), raw_path(ctx.warehouse, source.release, source.path, base),
                   timeout_s=config.download.timeout_s)
    get_run_logger().info("%s: %s, %d bytes in %.1fs", Path(source.path).name, result.status,
                          result.record.size, result.seconds)
    return result.record


def download_task(ctx: Context, source: SourceFile):
    """`download_source` as a run of `ctx` uses it: retried on transient errors, and run
    even within its cache period when the local file is missing."""
    base = ctx.config.sources.base_url(source.release)
    missing = not raw_path(ctx.warehouse, source.release, source.path, base).exists()
    return in_home(download_source, ctx, refresh_cache=missing,
                   retries=ctx.config.download.retries, retry_delay_seconds=ctx.config.download.retry_delay_s)


@task(name="ingest-domain", task_run_name="ingest {category}", cache_key_fn=keyed("ingest", _raw_content))
def ingest_category(ctx: Context, category: str, reviews: DownloadRecord,
                    meta: DownloadRecord) -> DomainSummary:
    config = ctx.config
    summary = ingest_domain(ctx.warehouse, config.release, category, reviews, meta, config.filtering, config.ingest)
    get_run_logger().info("%s", summary)
    return summary


def _import_content(parameters: dict) -> list:
    spec = parameters["spec"]
    return [spec.model_dump(mode="json"), SCHEMA_VERSION,
            atomic.fingerprint(spec.dir, spec.name, feature_files(spec))]


def feature_files(spec: AtomicImport) -> list[atomic.FeatureFile]:
    return [atomic.FeatureFile(m, path, dim) for m, path, dim in spec.feature_files()]


@task(name="import", task_run_name="import {spec.name}", cache_key_fn=keyed("import", _import_content))
def import_dataset(ctx: Context, spec: AtomicImport) -> dict:
    """A processed dataset of the config's `imports` as a domain (skipped when its files are unchanged)."""
    summary = atomic.import_atomic(ctx.warehouse, spec.dir, spec.name, feature_files(spec), ctx.config.ingest)
    get_run_logger().info("%s", summary)
    return asdict(summary)

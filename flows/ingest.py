"""The ingest flow: raw Amazon files → clean sequences in the warehouse, categories side by side."""
from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_table_artifact

from ant_config import AntConfig, load_config
from tasks.caching import in_home
from tasks.ingest import download_task, ingest_category
from warehouse.ingest import DomainSummary
from warehouse.sources import check_categories, source_files
from warehouse.store import Warehouse


def ingest_categories(config: AntConfig, categories: list[str]) -> list[DomainSummary]:
    """Wire downloads and per-domain ingests; call inside a flow."""
    check_categories(config.release, categories)
    ingest_one = in_home(ingest_category, config)
    wh = Warehouse(config.home)
    with wh.run_lock(config.orchestration.lock_timeout_s):
        wh.collect_garbage()
        files = {c: source_files(config.release, c, config.sources.reviews_2018) for c in categories}
        downloads = {c: {sf.kind: download_task(config, sf).submit(config, sf) for sf in fs}
                     for c, fs in files.items()}
        # A sliding window keeps `parallel_domains` categories in DuckDB at once: each
        # ingest waits for the one `parallel_domains` places before it. Downloads run freely.
        window = config.ingest.parallel_domains
        futures = []
        for i, c in enumerate(categories):
            futures.append(ingest_one.submit(
                config, c, downloads[c]["reviews"], downloads[c]["meta"],
                wait_for=futures[i - window:i - window + 1] if i >= window else []))
        for per_category in downloads.values():  # surface a failed download as itself
            for f in per_category.values():
                f.result()
        summaries = [f.result() for f in futures]
    create_table_artifact(key="ingest-summary", table=[s.as_dict() for s in summaries],
                          description=f"Amazon {config.release} ingest into {config.home}")
    return summaries


@flow(name="ingest")
def ingest(config_path: str | None = None, release: str | None = None,
           domains: list[str] | None = None) -> list[dict]:
    """Download and ingest `domains` (default: the config's auxiliary + target categories)."""
    config = load_config(config_path, release=release)
    categories = domains or config.categories
    if not categories:
        raise ValueError("no categories to ingest: name them in the config (auxiliary/targets) "
                         "or with --domain")
    return [s.as_dict() for s in ingest_categories(config, categories)]

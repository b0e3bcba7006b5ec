"""The ingest flow: raw Amazon files → clean sequences in the warehouse, categories side by
side, plus the processed datasets of the config's `imports`."""
from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_table_artifact

from ant_config import load_config
from ant_config.releases import check_categories, domain_name
from services.context import Context
from tasks.caching import in_home
from tasks.ingest import download_task, import_dataset, ingest_category
from warehouse.ingest import fingerprint, published_fingerprint
from warehouse.sources import source_files


def ingest_domains(ctx: Context, categories: list[str], imports: bool = True) -> list[dict]:
    """Wire downloads, per-category ingests and the imports; call inside a flow."""
    config = ctx.config
    check_categories(config.release, categories)
    ingest_one, import_one = in_home(ingest_category, ctx), in_home(import_dataset, ctx)
    with ctx.warehouse.write_lock(config.orchestration.lock_timeout_s):
        ctx.warehouse.collect_garbage()
        files = {c: source_files(config.release, c, config.sources.reviews_2018) for c in categories}
        downloads = {c: {sf.kind: download_task(ctx, sf).submit(ctx, sf) for sf in fs} for c, fs in files.items()}
        # A sliding window keeps `parallel_domains` categories in DuckDB at once: each
        # ingest waits for the one `parallel_domains` places before it. Downloads run freely.
        window = config.ingest.parallel_domains
        futures = []
        for i, c in enumerate(categories):
            files = {kind: f.result() for kind, f in downloads[c].items()}  # a failed download fails as itself
            # A cached ingest is only right while the warehouse still holds what it published.
            stale = published_fingerprint(ctx.warehouse, domain_name(config.release, c)) != \
                fingerprint(files["reviews"], files["meta"], config.filtering)
            futures.append(ingest_one.with_options(refresh_cache=stale).submit(
                ctx, c, files["reviews"], files["meta"],
                wait_for=futures[i - window:i - window + 1] if i >= window else []))
        summaries = [f.result().as_dict() for f in futures]
        summaries += [import_one(ctx, spec) for spec in (config.imports_used() if imports else [])]
    create_table_artifact(key="ingest-summary", table=summaries,
                          description=f"Amazon {config.release} ingest into {config.home}")
    return summaries


@flow(name="ingest")
def ingest(config_path: str | None = None, release: str | None = None,
           domains: list[str] | None = None, overrides: dict | None = None) -> list[dict]:
    """Download and ingest `domains` (default: the config's auxiliary + target categories, and
    its imports)."""
    ctx = Context.of(load_config(config_path, release=release, **(overrides or {})))
    categories = domains or ctx.config.categories
    if not categories and not ctx.config.imports_used():
        raise ValueError("no categories to ingest: name them in the config (auxiliary/targets) "
                         "or with --domain")
    return ingest_domains(ctx, categories, imports=not domains)

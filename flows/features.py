"""The features flow: frozen text, image and price vectors for every ingested domain."""
from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_table_artifact

from ant_config import load_config
from flows.runners import task_runner
from services.context import Context
from tasks.caching import in_home
from tasks.features import featurize
from warehouse import features as store
from warehouse.store import WarehouseError


def featurize_domains(ctx: Context, domains: list[str]) -> list[dict]:
    """Encode `domains` on the configured task runner: one after another by default (each uses
    every core, the encoders load once), side by side with `orchestration.workers` > 1 or on a
    Dask cluster. Imported domains are encoded too, keeping the vectors they came with (see
    services.features). Call inside a flow."""
    wanted = list(dict.fromkeys(domains))
    if not wanted:
        raise WarehouseError("no domain to encode: name one with --domain, or list auxiliary and targets in the config")
    with ctx.warehouse.write_lock(ctx.config.orchestration.lock_timeout_s):
        missing = sorted(set(wanted) - set(store.domains(ctx.warehouse)))
        if missing:
            raise WarehouseError(f"not ingested yet: {', '.join(missing)}; run `ant ingest` first")
        encode = in_home(featurize, ctx)
        with task_runner(ctx.config) as runner:
            futures = [runner.submit(encode, {"ctx": ctx, "domain": d}) for d in wanted]
            summaries = [_cached(row) if f.state.name == "Cached" else row for f in futures for row in f.result()]
    create_table_artifact(key="features-summary", table=summaries,
                          description=f"Item features in {ctx.config.home}")
    return summaries


def _cached(row: dict) -> dict:
    """A summary replayed from Prefect's cache: the same inputs and config as a run that stored
    these vectors, so nothing was encoded this time."""
    if row["status"] in ("encoded", "unchanged"):
        return {**row, "status": "unchanged (cached)", "encoded": 0, "reused": row["items"]}
    return row


@flow(name="features")
def features(config_path: str | None = None, domains: list[str] | None = None) -> list[dict]:
    """Encode `domains` (default: the config's domains)."""
    ctx = Context.of(load_config(config_path))
    return featurize_domains(ctx, domains or ctx.config.domains)

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
    Dask cluster. Imported domains keep the features they came with. Call inside a flow."""
    imported = {i.name for i in ctx.config.imports}
    wanted = [d for d in domains if d not in imported]
    with ctx.warehouse.write_lock(ctx.config.orchestration.lock_timeout_s):
        missing = sorted(set(wanted) - set(store.domains(ctx.warehouse)))
        if missing:
            raise WarehouseError(f"not ingested yet: {', '.join(missing)}; run `ant ingest` first")
        encode = in_home(featurize, ctx)
        with task_runner(ctx.config) as runner:
            futures = [runner.submit(encode, {"ctx": ctx, "domain": d}) for d in wanted]
            summaries = [row for f in futures for row in f.result()]
    create_table_artifact(key="features-summary", table=summaries,
                          description=f"Item features in {ctx.config.home}")
    return summaries


@flow(name="features")
def features(config_path: str | None = None, domains: list[str] | None = None) -> list[dict]:
    """Encode `domains` (default: the config's domains)."""
    ctx = Context.of(load_config(config_path))
    return featurize_domains(ctx, domains or ctx.config.domains)

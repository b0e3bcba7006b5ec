"""The features flow: frozen text, image and price vectors for every ingested domain."""
from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_table_artifact

from ant_config import load_config
from flows.runners import task_runner
from tasks.caching import in_home
from tasks.features import featurize
from warehouse import features as store
from warehouse.sources import domain_name
from warehouse.store import Warehouse, WarehouseError


@flow(name="features")
def features(config_path: str | None = None, domains: list[str] | None = None) -> list[dict]:
    """Encode `domains` (default: the config's categories) on the configured task runner:
    one after another by default (each uses every core, the encoders load once), side by
    side with `orchestration.workers` > 1 or on a Dask cluster."""
    config = load_config(config_path)
    wh = Warehouse(config.home)
    wanted = domains or [domain_name(config.release, c) for c in config.categories]
    with wh.run_lock(config.orchestration.lock_timeout_s):
        missing = sorted(set(wanted) - set(store.domains(wh)))
        if missing:
            raise WarehouseError(f"not ingested yet: {', '.join(missing)}; run `ant ingest` first")
        encode = in_home(featurize, config)
        with task_runner(config) as runner:
            futures = [runner.submit(encode, {"config": config, "domain": d}) for d in wanted]
            summaries = [row for f in futures for row in f.result()]
    create_table_artifact(key="features-summary", table=summaries,
                          description=f"Item features in {config.home}")
    return summaries

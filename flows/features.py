"""The features flow: frozen text, image and price vectors for every ingested domain."""
from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_table_artifact

from ant_config import load_config
from tasks.features import featurize
from warehouse import features as store
from warehouse.sources import domain_name
from warehouse.store import Warehouse, WarehouseError


@flow(name="features")
def features(config_path: str | None = None, domains: list[str] | None = None) -> list[dict]:
    """Encode `domains` (default: the config's categories) one after another: each uses
    every core, and the encoders are loaded once for all."""
    config = load_config(config_path)
    wh = Warehouse(config.home)
    wanted = domains or [domain_name(config.release, c) for c in config.categories]
    with wh.run_lock():
        missing = sorted(set(wanted) - set(store.domains(wh)))
        if missing:
            raise WarehouseError(f"not ingested yet: {', '.join(missing)}; run `ant ingest` first")
        summaries = [row for d in wanted for row in featurize(config, d)]
    create_table_artifact(key="features-summary", table=summaries,
                          description=f"Item features in {config.home}")
    return summaries

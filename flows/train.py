"""Training flows: pre-train one model on the auxiliary domains; adapt it to one target."""
from __future__ import annotations

from prefect import flow

from ant_config import load_config
from tasks.model import adapt_task, pretrain_task
from warehouse.sources import domain_name
from warehouse.store import Warehouse


@flow(name="pretrain")
def pretrain(config_path: str | None = None, domains: list[str] | None = None,
             overrides: dict | None = None, text_only: bool = False) -> dict:
    """Pre-train on `domains` (default: the config's auxiliary categories)."""
    config = load_config(config_path, **(overrides or {}))
    domains = domains or [domain_name(config.release, c) for c in config.auxiliary]
    with Warehouse(config.home).run_lock():
        return pretrain_task(config, domains, text_only)


@flow(name="adapt")
def adapt(target: str, method: str = "relearn", config_path: str | None = None,
          pretrained: str | None = None, seed: int | None = None, overrides: dict | None = None) -> dict:
    """Train and evaluate one method on one target domain."""
    config = load_config(config_path, **(overrides or {}))
    return adapt_task(config, target, method, pretrained, seed)

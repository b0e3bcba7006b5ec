"""Training flows: pre-train one model on the auxiliary domains; adapt it to targets."""
from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_table_artifact

from ant_config import AntConfig, load_config
from ant_model.strategies import METHODS
from flows.runners import task_runner
from tasks.caching import in_home
from tasks.model import adapt_task, pretrain_task, promote_best
from tasks.report import METRICS
from warehouse.sources import domain_name
from warehouse.store import Warehouse


@flow(name="pretrain")
def pretrain(config_path: str | None = None, domains: list[str] | None = None,
             overrides: dict | None = None, text_only: bool = False) -> dict:
    """Pre-train on `domains` (default: the config's auxiliary categories)."""
    config = load_config(config_path, **(overrides or {}))
    domains = domains or [domain_name(config.release, c) for c in config.auxiliary]
    with Warehouse(config.home).run_lock(config.orchestration.lock_timeout_s):
        return in_home(pretrain_task, config)(config, domains, text_only)


def adapt_targets(config: AntConfig, targets: list[str], methods: list[str], seeds: list[int],
                  pretrained: str | None = None, text_pretrained: str | None = None) -> list[dict]:
    """Every method × seed on every target, side by side on the configured task runner; then,
    where scratch ran too, promote each target's best method. Call inside a flow."""
    adapt, promote = in_home(adapt_task, config), in_home(promote_best, config)
    with task_runner(config) as runner:
        futures = {target: [runner.submit(adapt, {
            "config": config, "target": target, "method": method, "seed": seed,
            "pretrained": text_pretrained if method == "unisrec" else pretrained})
            for method in methods for seed in seeds] for target in targets}
        results = {target: [f.result() for f in fs] for target, fs in futures.items()}
    if "scratch" in methods:
        for target, runs in results.items():
            promote(config, target, runs)
    rows = [r for runs in results.values() for r in runs]
    create_table_artifact(key="adapt-metrics", description="Test metrics of every adapted model",
                          table=[{k: r[k] for k in ("target", "method", "seed", "version", *METRICS)} for r in rows])
    return rows


@flow(name="adapt")
def adapt(target: str, method: str | None = None, config_path: str | None = None,
          pretrained: str | None = None, seed: int | None = None, overrides: dict | None = None) -> list[dict]:
    """Train and evaluate `method` (default: every method, over the config's seeds, then
    promote the best) on one target domain."""
    config = load_config(config_path, **(overrides or {}))
    seeds = [seed] if seed is not None else ([config.adapt.seed] if method else config.seeds)
    with Warehouse(config.home).run_lock(config.orchestration.lock_timeout_s):
        return adapt_targets(config, [target], [method] if method else list(METHODS), seeds, pretrained)

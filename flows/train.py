"""Training flows: pre-train a model on the auxiliary domains; adapt to targets."""
from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_table_artifact

from ant_config import load_config
from ant_config.protocol import METHODS, METRICS
from flows.runners import task_runner
from services.context import Context
from services.planning import adapt_plan, pretrain_plan
from tasks.caching import in_home
from tasks.model import adapt_task, pretrain_task, promote_task, recommend_task


def pretrain_model(ctx: Context, domains: list[str], kind: str = "ant") -> dict:
    """Pre-train (or find) one model on `domains`; call inside a flow."""
    return in_home(pretrain_task, ctx)(ctx, pretrain_plan(ctx, domains, kind))


def adapt_targets(ctx: Context, targets: list[str], methods: list[str], seeds: list[int],
                  pretrained: str | None = None, text_pretrained: str | None = None) -> list[dict]:
    """Every method × seed on every target, side by side on the configured task runner; then,
    where scratch ran too, promote each target's best method and write its recommendations.
    Call inside a flow."""
    plans = {target: [adapt_plan(ctx, target, method, seed,
                                 text_pretrained if METHODS[method].parent == "text-only" else pretrained)
                      for method in methods for seed in seeds] for target in targets}
    adapt, promote, recommend = in_home(adapt_task, ctx), in_home(promote_task, ctx), in_home(recommend_task, ctx)
    with task_runner(ctx.config) as runner:
        futures = {target: [runner.submit(adapt, {"ctx": ctx, "plan": plan}) for plan in ps]
                   for target, ps in plans.items()}
        results = {target: [f.result() for f in fs] for target, fs in futures.items()}
    if "scratch" in methods:
        for target, runs in results.items():
            promoted = promote(ctx, target, runs)
            if promoted["version"]:
                recommend(ctx, target, promoted["version"], ctx.config.serving.top_k)
    rows = [r for runs in results.values() for r in runs]
    create_table_artifact(key="adapt-metrics", description="Test metrics of every adapted model",
                          table=[{k: r[k] for k in ("target", "method", "seed", "version", *METRICS,
                                                    "best_epoch", "stopped_by")} for r in rows])
    return rows


@flow(name="pretrain")
def pretrain(config_path: str | None = None, domains: list[str] | None = None,
             overrides: dict | None = None, text_only: bool = False) -> dict:
    """Pre-train on `domains` (default: the config's auxiliary domains)."""
    ctx = Context.of(load_config(config_path, **(overrides or {})))
    return pretrain_model(ctx, domains or ctx.config.auxiliary_domains, "text-only" if text_only else "ant")


@flow(name="adapt")
def adapt(target: str, method: str | None = None, config_path: str | None = None,
          pretrained: str | None = None, seed: int | None = None, overrides: dict | None = None) -> list[dict]:
    """Train and evaluate `method` (default: every method, over the config's seeds, then
    promote the best) on one target domain."""
    ctx = Context.of(load_config(config_path, **(overrides or {})))
    seeds = [seed] if seed is not None else ([ctx.config.adapt.seed] if method else ctx.config.seeds)
    return adapt_targets(ctx, [target], [method] if method else list(METHODS), seeds, pretrained)

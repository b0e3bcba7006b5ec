"""Prefect tasks of training: thin wrappers of `services.training` and `services.promotion`.

Each is cached on the model version its plan names (a content hash of config, data,
encoders, parent and code), so a finished version never trains again and a crashed one
resumes from its last epoch.
"""
from __future__ import annotations

from prefect import task

from services import promotion, recommend, training
from services.context import Context
from services.planning import Plan
from tasks.caching import keyed


@task(name="pretrain", task_run_name="pretrain {plan.method} {plan.domains}",
      cache_key_fn=keyed("pretrain", lambda p: p["plan"].version))
def pretrain_task(ctx: Context, plan: Plan) -> dict:
    return training.run_pretrain(ctx, plan)


@task(name="adapt", task_run_name="adapt {plan.domains[0]} {plan.method} seed {plan.seed}",
      cache_key_fn=keyed("adapt", lambda p: p["plan"].version))
def adapt_task(ctx: Context, plan: Plan) -> dict:
    return training.run_adapt(ctx, plan)


def _runs_of(parameters: dict) -> list:
    return [parameters["target"], sorted(r["version"] for r in parameters["results"])]


@task(name="promote", task_run_name="promote {target}", cache_key_fn=keyed("promote", _runs_of))
def promote_task(ctx: Context, target: str, results: list[dict]) -> dict:
    return promotion.promote_best(ctx, target, results)


@task(name="recommend", task_run_name="recommend {target}",
      cache_key_fn=keyed("recommend", lambda p: [p["target"], p["promoted"], p["k"]]))
def recommend_task(ctx: Context, target: str, promoted: str, k: int) -> dict:
    """Top-k for every user of `target` from the model just promoted (`promoted`, its version)."""
    return recommend.recommend_all(ctx, target, k, ctx.config.adapt.eval_batch_size)

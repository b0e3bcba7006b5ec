"""The Prefect task of item features: `services.features.featurize_domain` for one domain.

Cached on the domain's data fingerprint and the features config; it runs again while some
image fetches failed transiently (they may succeed now).
"""
from __future__ import annotations

import uuid

from prefect import task

from services.context import Context
from services.features import featurize_domain
from tasks.caching import keyed
from warehouse.images import pending_retries
from warehouse.training import fingerprint


def _domain_content(parameters: dict) -> list:
    ctx, domain = parameters["ctx"], parameters["domain"]
    retry = uuid.uuid4().hex if pending_retries(ctx.warehouse, domain) else None  # never a cache hit
    return [domain, fingerprint(ctx.warehouse, domain), ctx.config.features.model_dump(), retry]


@task(name="features", task_run_name="features {domain}", cache_key_fn=keyed("features", _domain_content))
def featurize(ctx: Context, domain: str) -> list[dict]:
    return [s.as_dict() for s in featurize_domain(ctx, domain)]

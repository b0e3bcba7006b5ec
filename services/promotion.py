"""Which model serves a target: the promotion policy.

Among the methods trained on a target, the one with the best mean validation Recall@10 is
promoted, but only a method that (a) trains, (b) beats the `pop` sanity baseline on
validation and (c) is not below `scratch` on validation. A model no better than popularity
has learned nothing, and a method below scratch transfers negatively: neither ever serves.
When no method qualifies, nothing is promoted and the previous promotion stays.
"""
from __future__ import annotations

import logging

import numpy as np

from ant_config.protocol import METHODS, SELECT_ON
from services.context import Context
from warehouse import registry

log = logging.getLogger(__name__)


def mean_valid(runs: list[dict]) -> float:
    return float(np.mean([r["valid"][SELECT_ON] for r in runs]))


def by_method(results: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for r in results:
        grouped.setdefault(r["method"], []).append(r)
    return grouped


def below_pop(results: list[dict]) -> set[str]:
    """Trained methods whose mean validation Recall@10 does not beat `pop`'s, or with a run that
    did not beat most-popular on its own validation users (`pop_valid`, recorded by training
    with a patience floor), whether or not `pop` itself is among the results."""
    grouped = by_method(results)
    floor = mean_valid(grouped["pop"]) if "pop" in grouped else float("-inf")
    return {m for m, runs in grouped.items() if METHODS[m].trains and (
        mean_valid(runs) <= floor or any(r.get("pop_valid") is not None and r["valid"][SELECT_ON] <= r["pop_valid"]
                                         for r in runs))}


def choose(results: list[dict]) -> tuple[str | None, str]:
    """(version or None, reason) for one target's results."""
    grouped = by_method(results)
    scratch = mean_valid(grouped["scratch"]) if "scratch" in grouped else float("-inf")
    weak = below_pop(results)
    negative = {m for m, runs in grouped.items() if METHODS[m].trains and mean_valid(runs) < scratch}
    eligible = [m for m in grouped if METHODS[m].trains and m not in weak | negative]
    excluded = []
    if weak:
        excluded.append(f"not better than pop on validation: {', '.join(sorted(weak))}")
    if negative - weak:
        excluded.append(f"below scratch on validation: {', '.join(sorted(negative - weak))}")
    if not eligible:
        return None, "no method qualifies (" + "; ".join(excluded) + ")"
    method = max(eligible, key=lambda m: mean_valid(grouped[m]))
    best = max(grouped[method], key=lambda r: r["valid"][SELECT_ON])
    reason = (f"{method}: best mean validation {SELECT_ON} ({mean_valid(grouped[method]):.4f}) over "
              f"{len(grouped[method])} seed(s)" + ("; " + "; ".join(excluded) if excluded else ""))
    return best["version"], reason


def promote_best(ctx: Context, target: str, results: list[dict]) -> dict:
    """Promote `target`'s best qualifying model; {target, version (None: nothing promoted), reason}."""
    version, reason = choose(results)
    if version is None:
        log.warning("%s: nothing promoted, %s; the previous promotion (if any) stays", target, reason)
    else:
        registry.promote(ctx.warehouse, version, reason)
    return {"target": target, "version": version, "reason": reason}

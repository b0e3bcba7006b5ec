"""Which item features a model reads, decided from the data unless the user says.

- pre-training: the modalities every pre-training domain has (some item has the feature);
- adaptation from a pre-trained model: that model's modalities (a target lacking one gets
  zeros for it, with a warning: the model can still run);
- a model trained on the target alone: the modalities the target has.

`--modalities` (or `model.modalities` in the config) overrides the default. A modality that a
domain has no feature rows for at all cannot be read, and asking for it is a clear error.
"""
from __future__ import annotations

import logging

from ant_config.protocol import MODALITIES
from services.context import Context
from warehouse.store import WarehouseError
from warehouse.training import ModalityCoverage, coverage

log = logging.getLogger(__name__)


class ModalityError(WarehouseError):
    """Item features a model needs that a domain does not have."""


def _describe(domain: str, cover: dict[str, ModalityCoverage]) -> str:
    return f"{domain} has " + (", ".join(f"{m} ({c.items}/{c.catalogue} items)" for m, c in cover.items()
                                         if c.present) or "no item features")


def resolve(ctx: Context, domains: list[str], requested: list[str] | None) -> tuple[list[str], dict[str, int]]:
    """(modalities, their widths) for a model trained on `domains`: `requested`, else every
    modality all of them have. Widths come from the data."""
    covers = {d: coverage(ctx.warehouse, d) for d in domains}
    if requested is None:
        chosen = [m for m in MODALITIES if all(c[m].present for c in covers.values())]
        dropped = [m for m in MODALITIES if m not in chosen and any(c[m].present for c in covers.values())]
        if not chosen:
            raise ModalityError("the domains share no item feature, so no model can read them: "
                                + "; ".join(_describe(d, c) for d, c in covers.items())
                                + ". Run `ant features`, or train on other domains.")
        if dropped:
            log.warning("training on %s: %s", ", ".join(chosen), "; ".join(
                f"{m} is missing in {', '.join(d for d, c in covers.items() if not c[m].present)}" for m in dropped))
    else:
        chosen = [m for m in MODALITIES if m in requested]  # one order, so one version
        for m in chosen:
            absent = [d for d, c in covers.items() if c[m].dim is None]
            if absent:
                raise ModalityError(f"no {m} features for {', '.join(absent)}: drop {m!r} from --modalities "
                                    f"(or model.modalities), or run `ant features` first")
            lacking = [d for d, c in covers.items() if not c[m].present]
            if lacking:
                log.warning("no item of %s has %s features: they are zeros there", ", ".join(lacking), m)
    dims = {m: next(c[m].dim for c in covers.values() if c[m].dim is not None) for m in chosen}
    for m in chosen:
        widths = {d: c[m].dim for d, c in covers.items() if c[m].dim is not None}
        if len(set(widths.values())) > 1:
            raise ModalityError(f"{m} features have different widths across domains ({widths}): encode every "
                                f"domain with the same {m} encoder")
    return chosen, dims


def check_target(ctx: Context, target: str, modalities: list[str]) -> None:
    """Warn about modalities a pre-trained model reads that the target does not have."""
    cover = coverage(ctx.warehouse, target)
    lacking = [m for m in modalities if not cover[m].present]
    if lacking:
        log.warning("%s has no %s features: the pre-trained model reads zeros for them there",
                    target, ", ".join(lacking))

"""The Prefect task that writes the transfer report (services/report.py)."""
from __future__ import annotations

from prefect import task

from services.context import Context
from services.report import save_report
from tasks.caching import keyed
from warehouse import registry


def _report_inputs(parameters: dict) -> list:
    versions = sorted(r["version"] for r in parameters["results"])
    return [versions, registry.promotions(parameters["ctx"].warehouse)]


@task(name="report", task_run_name="report", cache_key_fn=keyed("report", _report_inputs))
def write_report(ctx: Context, results: list[dict]) -> str:
    """The report folder's path."""
    return str(save_report(ctx, results))

"""The end-to-end DAG: ingest → features → pre-train → every method on every target →
promotion and recommendations → report. Every task is cached on content, so a re-run with
nothing changed runs no task and a killed run resumes."""
from __future__ import annotations

import base64
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from ant_config import load_config
from ant_config.protocol import METHODS
from flows.features import featurize_domains
from flows.ingest import ingest_domains
from flows.train import adapt_targets, pretrain_model
from services.context import Context
from services.report import DELTA_CHART, METRICS_CHART, REPORT_FILE
from tasks.caching import in_home
from tasks.report import write_report


def inline_charts(report: str, folder: Path) -> str:
    """The report with its charts embedded as data URIs, for the Prefect UI (which cannot
    reach files next to the report)."""
    for chart in (METRICS_CHART, DELTA_CHART):
        data = base64.b64encode((folder / chart).read_bytes()).decode()
        report = report.replace(f"({chart})", f"(data:image/png;base64,{data})")
    return report


@flow(name="pipeline")
def pipeline(config_path: str | None = None, overrides: dict | None = None) -> str:
    """Run everything the config names; returns the transfer report (Markdown)."""
    ctx = Context.of(load_config(config_path, **(overrides or {})))
    config = ctx.config
    ingest_domains(ctx, config.categories)
    featurize_domains(ctx, config.domains)
    ant = pretrain_model(ctx, config.auxiliary_domains)
    # The UniSRec-style baseline's parent: the ANT model itself when that reads text only.
    text = ant if ant["modalities"] == ["text"] else pretrain_model(ctx, config.auxiliary_domains, "text-only")
    results = adapt_targets(ctx, config.target_domains, list(METHODS), config.seeds, ant["version"], text["version"])
    folder = Path(in_home(write_report, ctx)(ctx, results))
    report = (folder / REPORT_FILE).read_text()
    create_markdown_artifact(inline_charts(report, folder), key="transfer-report", description="ANT transfer report")
    return report

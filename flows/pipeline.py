"""The end-to-end DAG: ingest → features → pre-train → every method on every target →
promotion → report. Holds the ANT_HOME run lock throughout; every task is cached on
content, so a re-run with nothing changed runs no task and a killed run resumes."""
from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from ant_config import load_config
from ant_model.strategies import METHODS
from flows.features import features
from flows.ingest import ingest
from flows.train import adapt_targets, pretrain
from tasks.caching import in_home
from tasks.report import write_report
from warehouse.sources import domain_name
from warehouse.store import Warehouse


@flow(name="pipeline")
def pipeline(config_path: str | None = None) -> str:
    """Run everything the config names; returns the transfer report (Markdown)."""
    config = load_config(config_path)
    with Warehouse(config.home).run_lock(config.orchestration.lock_timeout_s):
        ingest(config_path)
        features(config_path)
        ant = pretrain(config_path)
        text = pretrain(config_path, text_only=True)  # the UniSRec-style baseline's parent
        targets = [domain_name(config.release, c) for c in config.targets]
        results = adapt_targets(config, targets, list(METHODS), config.seeds, ant["version"], text["version"])
        folder = Path(in_home(write_report, config)(config, results))
    report = (folder / "report.md").read_text()
    create_markdown_artifact(f"{report}\n\nReport and chart: `{folder}`", key="transfer-report",
                             description="ANT transfer report")
    return report

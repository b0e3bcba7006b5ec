"""The end-to-end DAG: ingest → features → pre-train → every method on every target → report."""
from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from ant_config import load_config
from ant_model.strategies import METHODS
from flows.features import features
from flows.ingest import ingest
from flows.train import adapt, pretrain
from tasks.report import save_report, transfer_report
from warehouse import registry
from warehouse.sources import domain_name
from warehouse.store import Warehouse


@flow(name="pipeline")
def pipeline(config_path: str | None = None) -> str:
    """Run everything the config names; returns the transfer report (Markdown)."""
    config = load_config(config_path)
    ingest(config_path)
    features(config_path)
    pretrain(config_path)
    pretrain(config_path, text_only=True)  # the UniSRec-style baseline's parent
    results, promotions = [], []
    for category in config.targets:
        target = domain_name(config.release, category)
        runs = [adapt(target, method, config_path, seed=seed) for method in METHODS for seed in config.seeds]
        version, reason = registry.choose_for_promotion(runs)
        registry.promote(Warehouse(config.home), version, reason)
        results += runs
        promotions.append(f"- **{target}**: promoted `{version}` ({reason})")
    report = transfer_report(results) + "\n## Promoted models\n\n" + "\n".join(promotions) + "\n"
    path = save_report(config, report)
    create_markdown_artifact(f"{report}\n\nSaved as `{path}`.", key="transfer-report",
                             description="ANT transfer report")
    return report

"""The transfer report: per target, every method's test metrics (mean ± std over seeds), a
negative-transfer verdict for each adapted method (its mean test metric below scratch's),
the promoted model and why, and a bar chart of the same numbers.

Written to `ANT_HOME/artifacts/reports/<content hash>/` (report.md + transfer.png, never
overwritten) and copied to `reports/latest/`, which `ant report` prints.
"""
from __future__ import annotations

import hashlib
import shutil
from collections import defaultdict
from pathlib import Path

import matplotlib
import numpy as np
from prefect import task

from ant_config import AntConfig
from ant_model.strategies import PRETRAINED_METHODS
from tasks.caching import keyed
from warehouse import registry
from warehouse.store import Warehouse

matplotlib.use("Agg")  # files only, never a display
from matplotlib import pyplot as plt  # noqa: E402  (after choosing the backend)

METRICS = ("recall@10", "ndcg@10", "recall@50", "ndcg@50")
CHART = "transfer.png"


def _by_target(results: list[dict]) -> dict[str, dict[str, list[dict]]]:
    grouped: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        grouped[r["target"]][r["method"]].append(r)
    return grouped


def transfer_report(results: list[dict], promotions: dict[str, tuple[str, str]] | None = None) -> str:
    """Markdown; `promotions` maps a target to (promoted version, reason)."""
    lines = []
    for target, methods in _by_target(results).items():
        mean = {m: {k: float(np.mean([r[k] for r in runs])) for k in METRICS} for m, runs in methods.items()}
        seeds = max(len(runs) for runs in methods.values())
        lines += [f"## {target}", "",
                  f"Test metrics, full ranking over the catalogue, mean ± std over {seeds} seed(s).", "",
                  f"| method | {' | '.join(METRICS)} | negative transfer |",
                  "|---|" + "---|" * (len(METRICS) + 1)]
        for method, runs in methods.items():
            cells = [f"{mean[method][k]:.4f} ± {np.std([r[k] for r in runs]):.4f}" for k in METRICS]
            verdict = ""
            if method in PRETRAINED_METHODS and "scratch" in mean:
                worse = [k for k in METRICS if mean[method][k] < mean["scratch"][k]]
                verdict = f"**yes** ({', '.join(worse)})" if worse else "no"
            lines.append(f"| {method} | {' | '.join(cells)} | {verdict} |")
        best = max(methods, key=lambda m: np.mean([r["valid"]["recall@10"] for r in methods[m]]))
        lines += ["", f"Best on validation Recall@10: **{best}**."]
        if promotions and target in promotions:
            version, reason = promotions[target]
            lines.append(f"Promoted `{version}`: {reason}.")
        lines.append("")
    return "\n".join(lines)


def bar_chart(results: list[dict], path: Path) -> Path:
    """One panel per target: every method's mean test metrics, with the std over seeds."""
    grouped = _by_target(results)
    fig, axes = plt.subplots(len(grouped), 1, figsize=(10, 3.6 * len(grouped)), squeeze=False)
    width = 0.8 / len(METRICS)
    for ax, (target, methods) in zip(axes[:, 0], grouped.items()):
        x = np.arange(len(methods))
        for i, metric in enumerate(METRICS):
            values = [[r[metric] for r in runs] for runs in methods.values()]
            ax.bar(x + (i - (len(METRICS) - 1) / 2) * width, [np.mean(v) for v in values], width,
                   yerr=[np.std(v) for v in values], capsize=2, label=metric)
        ax.set_xticks(x, list(methods), rotation=15)
        ax.set_title(target)
        ax.set_ylabel("test metric")
        ax.legend(ncols=len(METRICS), fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def report_dir(config: AntConfig) -> Path:
    return Path(config.home).resolve() / "artifacts" / "reports"


def save_report(config: AntConfig, results: list[dict]) -> Path:
    """The report folder of these results (report.md + transfer.png); also `reports/latest/`."""
    report = transfer_report(results, registry.promotions(Warehouse(config.home)))
    folder = report_dir(config) / hashlib.sha256(report.encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    bar_chart(results, folder / CHART)
    (folder / "report.md").write_text(f"{report}\n![Test metrics per method]({CHART})\n")
    # Swap in the new `latest` by renames, so a crash leaves the old or the new one whole.
    latest, staged, old = (report_dir(config) / n for n in ("latest", ".latest.new", ".latest.old"))
    for leftover in (staged, old):
        shutil.rmtree(leftover, ignore_errors=True)
    shutil.copytree(folder, staged)
    if latest.exists():
        latest.rename(old)
    staged.rename(latest)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def _report_inputs(parameters: dict) -> list:
    wh = Warehouse(parameters["config"].home)
    versions = sorted(r["version"] for r in parameters["results"])
    return [versions, registry.promotions(wh)]


@task(name="report", task_run_name="report", cache_key_fn=keyed("report", _report_inputs))
def write_report(config: AntConfig, results: list[dict]) -> str:
    """The report folder's path."""
    return str(save_report(config, results))

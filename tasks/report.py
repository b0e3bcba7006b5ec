"""The transfer report: per target, every method's test metrics (mean ± std over seeds) and a
negative-transfer verdict for each adapted method (its mean test metric below scratch's)."""
from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

import numpy as np

from ant_config import AntConfig
from ant_model.strategies import PRETRAINED_METHODS

METRICS = ("recall@10", "ndcg@10", "recall@50", "ndcg@50")


def transfer_report(results: list[dict]) -> str:
    by_target: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        by_target[r["target"]][r["method"]].append(r)
    lines = []
    for target, methods in by_target.items():
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
        lines += ["", f"Best on validation Recall@10: **{best}**.", ""]
    return "\n".join(lines)


def report_dir(config: AntConfig) -> Path:
    return Path(config.home).resolve() / "artifacts" / "reports"


def save_report(config: AntConfig, report: str) -> Path:
    """`reports/<content hash>.md` (never overwritten) and `reports/latest.md`."""
    folder = report_dir(config)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(report.encode()).hexdigest()[:16]}.md"
    path.write_text(report)
    (folder / "latest.md").write_text(report)
    return path

"""The transfer report: per target, every method's test metrics (mean ± std over seeds), how
its training ended, and for each transferring method a verdict against scratch that respects
noise; plus two charts.

The verdict pairs each user's test Recall@10 under the method with the same user's under
scratch, for the same seed, and bootstraps the mean difference over those (user, seed) pairs:
*negative* transfer when the 95% interval lies entirely below 0, *positive* when entirely
above, else *no significant difference*. A mean below scratch alone is not a verdict.

Written to `ANT_HOME/artifacts/reports/<content hash>/` (report.md, metrics.png, delta.png,
never overwritten) and copied to `reports/latest/`, which `ant report` prints.
"""
from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np

from ant_config.protocol import METHODS, METRICS, SELECT_ON
from ant_model.evaluate import paired_bootstrap
from services.context import Context
from services.promotion import below_pop, by_method
from services.training import test_evaluation
from warehouse import registry

matplotlib.use("Agg")  # files only, never a display
from matplotlib import pyplot as plt  # noqa: E402  (after choosing the backend)

METRICS_CHART, DELTA_CHART, REPORT_FILE = "metrics.png", "delta.png", "report.md"
SHORT = {"recall@10": "R@10", "ndcg@10": "N@10", "recall@50": "R@50", "ndcg@50": "N@50"}
# Four decimals, as RecBole prints: on a sparse target (Tools_text, R@10 ≈ 0.02) three hid a
# significant +0.0014 of re-learning over scratch behind "0.021 ± 0.000" and "0.020 ± 0.001".
DIGITS = 4


@dataclass(frozen=True)
class Verdict:
    delta: float  # mean per-user test Recall@10 difference, method − scratch
    low: float
    high: float

    @property
    def label(self) -> str:
        if self.high < 0:
            return "negative"
        if self.low > 0:
            return "positive"
        return "no significant difference"


def verdict(ctx: Context, runs: list[dict], scratch: list[dict]) -> Verdict | None:
    """The method against scratch, paired by seed and user; None without a common seed."""
    theirs = {r["seed"]: r for r in scratch}
    pairs = [(test_evaluation(ctx, r).per_user(SELECT_ON), test_evaluation(ctx, theirs[r["seed"]]).per_user(SELECT_ON))
             for r in runs if r["seed"] in theirs]
    if not pairs:
        return None
    return Verdict(*paired_bootstrap(np.concatenate([a for a, _ in pairs]), np.concatenate([b for _, b in pairs])))


def verdicts(ctx: Context, results: list[dict]) -> dict[str, dict[str, Verdict]]:
    """target → method → verdict, for the transferring methods of targets where scratch ran."""
    out: dict[str, dict[str, Verdict]] = {}
    for target, methods in _by_target(results).items():
        if "scratch" not in methods:
            continue
        for method, runs in methods.items():
            if METHODS[method].transfers and (v := verdict(ctx, runs, methods["scratch"])) is not None:
                out.setdefault(target, {})[method] = v
    return out


def _by_target(results: list[dict]) -> dict[str, dict[str, list[dict]]]:
    targets: dict[str, list[dict]] = {}
    for r in results:
        targets.setdefault(r["target"], []).append(r)
    return {t: by_method(rs) for t, rs in targets.items()}


def _training_cell(runs: list[dict]) -> str:
    if not METHODS[runs[0]["method"]].trains:
        return "—"
    capped = sum(r["stopped_by"] == "cap" for r in runs)
    best = np.mean([r["best_epoch"] for r in runs])
    return f"{best:.0f}" + (f" (**cap** {capped}/{len(runs)})" if capped else "")


def _mean_std(runs: list[dict], metric: str) -> str:
    values = [r[metric] for r in runs]
    return f"{np.mean(values):.{DIGITS}f} ± {np.std(values):.{DIGITS}f}"


def transfer_report(ctx: Context, results: list[dict], promotions: dict[str, tuple[str, str]],
                    judged: dict[str, dict[str, Verdict]]) -> str:
    """Markdown, one `## target` section each: a metrics table and a transfer table (two
    narrow tables fit where one wide one is cut off, e.g. in the Prefect UI)."""
    lines = []
    for target, methods in _by_target(results).items():
        seeds = max(len(runs) for runs in methods.values())
        weak = below_pop([r for runs in methods.values() for r in runs])
        lines += [f"## {target}", "",
                  f"Test metrics (full ranking, history excluded, ties as a random tie-break), mean ± std over "
                  f"{seeds} seed(s), and the best epoch (mean).", "",
                  "| method | " + " | ".join(SHORT[m] for m in METRICS) + " | best epoch |",
                  "|---|" + "---:|" * (len(METRICS) + 1)]
        for method, runs in methods.items():
            name = f"{method} †" if method in weak else method
            lines.append(f"| {name} | {' | '.join(_mean_std(runs, m) for m in METRICS)} | {_training_cell(runs)} |")
        lines.append("")
        if weak:
            lines.append(f"† not better than `pop` on validation {SHORT[SELECT_ON]} (on average, or in one run): "
                         f"never promoted.")
        capped = sorted(m for m, runs in methods.items() if any(r["stopped_by"] == "cap" for r in runs))
        if capped:
            lines.append(f"**Not converged**: {', '.join(capped)} stopped at the epoch cap before patience ended "
                         f"them; raise `adapt.epochs` (or `sasrec.epochs`).")
        if judged.get(target):
            lines += ["", f"Transfer: Δ {SHORT[SELECT_ON]} against scratch, paired bootstrap 95% CI over users × seeds.",
                      "", f"| method | Δ {SHORT[SELECT_ON]} [95% CI] | transfer |", "|---|---:|---|"]
            for method, v in judged[target].items():
                label = "**negative**" if v.label == "negative" else v.label
                lines.append(f"| {method} | {v.delta:+.{DIGITS}f} [{v.low:+.{DIGITS}f}, {v.high:+.{DIGITS}f}] | {label} |")
            if "scratch" in weak:
                lines += ["", "scratch is †: a Δ against a baseline that learned nothing is no evidence of transfer."]
        if target in promotions:
            version, reason = promotions[target]
            lines += ["", f"Promoted `{version}`: {reason}."]
        lines.append("")
    return "\n".join(lines)


def metrics_chart(results: list[dict], path: Path) -> Path:
    """One panel per target: every method's mean test metrics with the std over seeds."""
    grouped = _by_target(results)
    fig, axes = plt.subplots(len(grouped), 1, figsize=(11, 3.8 * len(grouped)), squeeze=False)
    width = 0.8 / len(METRICS)
    for ax, (target, methods) in zip(axes[:, 0], grouped.items()):
        x = np.arange(len(methods))
        for i, metric in enumerate(METRICS):
            values = [[r[metric] for r in runs] for runs in methods.values()]
            ax.bar(x + (i - (len(METRICS) - 1) / 2) * width, [np.mean(v) for v in values], width,
                   yerr=[np.std(v) for v in values], capsize=2, label=SHORT[metric])
        ax.set_xticks(x, list(methods), rotation=20, ha="right")
        ax.set_title(target)
        ax.set_ylabel("test metric")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")  # beside the bars
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def delta_chart(judged: dict[str, dict[str, Verdict]], path: Path) -> Path:
    """One panel per target: Δ Recall@10 against scratch per transferring method, 95% CI whiskers."""
    rows = max((len(v) for v in judged.values()), default=1)
    panels = max(len(judged), 1)
    fig, axes = plt.subplots(panels, 1, figsize=(8, panels * (1.5 + 0.45 * rows)), squeeze=False)
    for ax, (target, methods) in zip(axes[:, 0], judged.items()):
        for y, (name, v) in enumerate(methods.items()):
            colour = {"negative": "tab:red", "positive": "tab:green"}.get(v.label, "tab:grey")
            ax.errorbar([v.delta], [y], xerr=[[v.delta - v.low], [v.high - v.delta]], fmt="o", color=colour,
                        capsize=4)
        ax.axvline(0, color="black", linewidth=1)
        ax.set_yticks(range(len(methods)), list(methods))
        ax.set_title(f"{target}: Δ {SHORT[SELECT_ON]} vs scratch (95% CI)")
    if not judged:
        axes[0, 0].set_axis_off()
        axes[0, 0].text(0.5, 0.5, "no transfer verdicts (scratch or pre-trained methods missing)", ha="center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_report(ctx: Context, results: list[dict]) -> Path:
    """The report folder of these results (report.md + charts); also `reports/latest/`."""
    judged = verdicts(ctx, results)
    report = transfer_report(ctx, results, registry.promotions(ctx.warehouse), judged)
    root = ctx.reports
    folder = root / hashlib.sha256(report.encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    metrics_chart(results, folder / METRICS_CHART)
    delta_chart(judged, folder / DELTA_CHART)
    (folder / REPORT_FILE).write_text(f"{report}\n![Test metrics per method]({METRICS_CHART})\n\n"
                                      f"![Δ against scratch]({DELTA_CHART})\n")
    # Swap in the new `latest` by renames, so a crash leaves the old or the new one whole.
    latest, staged, old = (root / n for n in ("latest", ".latest.new", ".latest.old"))
    for leftover in (staged, old):
        shutil.rmtree(leftover, ignore_errors=True)
    shutil.copytree(folder, staged)
    if latest.exists():
        latest.rename(old)
    staged.rename(latest)
    shutil.rmtree(old, ignore_errors=True)
    return folder

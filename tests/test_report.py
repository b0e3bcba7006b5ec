"""The promotion policy and the transfer report's verdict: a method that does not beat `pop`
on validation is never promoted, and negative transfer needs a paired-bootstrap interval
entirely below zero, not just a lower mean."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ant_config import AntConfig
from ant_model.evaluate import Evaluation
from services.context import Context
from services.planning import adapt_folder
from services.promotion import choose
from services.report import delta_chart, metrics_chart, transfer_report, verdicts
from services.training import RANKS_FILE


def result(method: str, valid: float, seed: int = 0, stopped_by: str | None = "patience", test: float = 0.3) -> dict:
    return {"target": "T", "method": method, "seed": seed, "version": f"{method}-{seed}", "valid": {"recall@10": valid},
            "recall@10": test, "ndcg@10": test / 2, "recall@50": min(test * 2, 1), "ndcg@50": test / 1.5,
            "best_epoch": 7 if stopped_by else None, "epochs_run": 17 if stopped_by else 0, "stopped_by": stopped_by}


def test_promotion_never_picks_a_method_that_does_not_beat_pop():
    results = [result("relearn", 0.30), result("finetune", 0.27), result("scratch", 0.25), result("pop", 0.28),
               result("random", 0.05)]
    version, reason = choose(results)
    assert version == "relearn-0" and "not better than pop on validation: finetune, scratch" in reason
    nothing, why = choose([result("relearn", 0.20), result("scratch", 0.22), result("pop", 0.30)])
    assert nothing is None and "no method qualifies" in why
    below, because = choose([result("relearn", 0.20), result("scratch", 0.25), result("pop", 0.10)])
    assert below == "scratch-0" and "below scratch on validation: relearn" in because


@pytest.fixture()
def ctx(tmp_path):
    return Context.of(AntConfig(home=tmp_path / "home"))


def with_ranks(ctx: Context, run: dict, hits: np.ndarray) -> dict:
    """Store per-user test ranks for `run`: rank 1 where `hits`, else far down."""
    folder = adapt_folder(ctx, run["target"], run["method"], run["version"])
    folder.mkdir(parents=True, exist_ok=True)
    Evaluation(np.where(hits, 0, 500), np.zeros(len(hits), dtype=int)).save(folder / RANKS_FILE)
    return run


def test_verdict_needs_an_interval_below_zero(ctx):
    rng = np.random.default_rng(0)
    users = 400
    runs = []
    for seed in (0, 1):
        scratch = rng.random(users) < 0.35
        runs += [with_ranks(ctx, result("scratch", 0.3, seed), scratch),
                 with_ranks(ctx, result("relearn", 0.3, seed), scratch ^ (rng.random(users) < 0.02)),  # noise only
                 with_ranks(ctx, result("finetune", 0.3, seed), scratch & (rng.random(users) < 0.6)),  # clearly worse
                 with_ranks(ctx, result("unisrec", 0.3, seed), scratch | (rng.random(users) < 0.3))]   # clearly better
    judged = verdicts(ctx, runs)["T"]
    assert judged["finetune"].label == "negative" and judged["finetune"].high < 0
    assert judged["unisrec"].label == "positive" and judged["unisrec"].low > 0
    assert judged["relearn"].label == "no significant difference" and judged["relearn"].low < 0 < judged["relearn"].high
    assert "scratch" not in judged  # only transferring methods are judged


def test_report_flags_weak_and_unconverged_methods_and_draws_both_charts(ctx, tmp_path):
    runs = [with_ranks(ctx, result("relearn", 0.30, stopped_by="cap"), np.ones(50, bool)),
            with_ranks(ctx, result("scratch", 0.20), np.zeros(50, bool)),
            with_ranks(ctx, result("pop", 0.25, stopped_by=None), np.zeros(50, bool))]
    judged = verdicts(ctx, runs)
    report = transfer_report(ctx, runs, {"T": ("relearn-0", "why")}, judged)
    assert "| scratch † |" in report and "† not better than `pop`" in report
    assert "(**cap** 1/1)" in report and "**Not converged**: relearn" in report
    assert "| relearn | +1.0000 [+1.0000, +1.0000] | positive |" in report and "Promoted `relearn-0`: why." in report
    assert "| scratch † | 0.3000 ± 0.0000 | 0.1500 ± 0.0000 |" in report  # four decimals: small gaps stay visible
    assert all(line.count("|") <= 7 for line in report.splitlines())  # narrow tables: they fit the Prefect UI
    for draw, name in ((lambda p: metrics_chart(runs, p), "metrics.png"), (lambda p: delta_chart(judged, p), "delta.png")):
        with Image.open(draw(tmp_path / name)) as image:
            assert image.size[0] >= 800


def test_a_run_below_its_own_most_popular_floor_is_flagged_without_pop_in_the_results(ctx):
    """CDs_text scratch seed 1 once stopped on its initial plateau, and the report called
    relearn's Δ against it "positive" because `pop` was not in the same results. Training now
    records most-popular's validation R@10 (`pop_valid`); one run at or below it marks the method."""
    failed = {**result("scratch", 0.012, seed=1), "pop_valid": 0.012}
    runs = [with_ranks(ctx, {**result("scratch", 0.05), "pop_valid": 0.012}, np.zeros(50, bool)),
            with_ranks(ctx, failed, np.zeros(50, bool)),
            with_ranks(ctx, {**result("relearn", 0.05), "pop_valid": 0.012}, np.ones(50, bool)),
            with_ranks(ctx, {**result("relearn", 0.05, seed=1), "pop_valid": 0.012}, np.ones(50, bool))]
    version, reason = choose(runs)
    assert version == "relearn-0" and "not better than pop on validation: scratch" in reason
    report = transfer_report(ctx, runs, {}, verdicts(ctx, runs))
    assert "| scratch † |" in report and "| relearn |" in report
    assert "scratch is †: a Δ against a baseline that learned nothing is no evidence of transfer." in report

"""The whole DAG on the fixture mirror over 127.0.0.1: ingest → features → pre-train →
every method on the target → report; a second run hits every task's cache (Prefect records
each task run as Cached) and reports the same."""
from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from ant_config.protocol import METHODS
from tests.conftest import CONVERGING_SASREC
from tests.prefect_runs import task_runs


def test_pipeline_end_to_end_then_cached(prefect, pipeline_config, tmp_path):
    from flows.pipeline import pipeline
    path = pipeline_config()
    first = pipeline(str(path), return_state=True)
    report = first.result()
    assert "## Gift_Cards" in report
    ran = task_runs(first.state_details.flow_run_id)
    assert {r.name.split()[0] for r in ran} >= {"download", "ingest", "features", "pretrain", "adapt",
                                                 "promote", "report"}
    assert all(r.state.name == "Completed" for r in ran)
    latest = tmp_path / "home" / "artifacts" / "reports" / "latest"
    assert (latest / "report.md").read_text() == report
    for chart in ("metrics.png", "delta.png"):
        with Image.open(latest / chart) as image:
            assert image.size[0] > 500 and image.size[1] > 150, chart
    from flows.pipeline import inline_charts  # the Prefect artifact: charts travel inside it
    inlined = inline_charts(report, latest)
    assert inlined.count("](data:image/png;base64,") == 2 and "metrics.png)" not in inlined
    tables = report.split("Transfer: Δ")
    rows = {line.split("|")[1].strip().rstrip(" †") for line in tables[0].splitlines()
            if line.startswith("| ") and not line.startswith("| method")}
    assert rows == set(METHODS)
    verdicts = {line.split("|")[1].strip(): line.split("|")[3].strip() for line in tables[1].splitlines()
                if line.startswith("| ") and not line.startswith("| method")}
    assert set(verdicts) == {m for m, spec in METHODS.items() if spec.transfers}  # one verdict each
    assert set(verdicts.values()) <= {"**negative**", "positive", "no significant difference"}
    results = [json.loads(r.read_text()) for r in
               (tmp_path / "home" / "artifacts" / "adapt" / "Gift_Cards").glob("*/*/result.json")]
    assert len(results) == len(METHODS) and all(r["target"] == "Gift_Cards" for r in results)
    for r in results:  # every training result says how it ended
        assert r["stopped_by"] in (("patience", "cap") if METHODS[r["method"]].trains else (None,)), r

    second = pipeline(str(path), return_state=True)
    assert second.result() == report
    again = task_runs(second.state_details.flow_run_id)
    assert len(again) == len(ran)
    assert [r.name for r in again if r.state.name != "Cached"] == []  # no task ran again
    assert len(list((tmp_path / "home" / "artifacts" / "adapt").glob("*/*/*/result.json"))) == len(METHODS)


def test_registry_promotion_and_recommend(prefect, pipeline_config, tmp_path):
    from flows.pipeline import pipeline
    from tests.test_cli_config import ant
    from warehouse import registry
    from warehouse.store import Warehouse
    path = pipeline_config(seeds=[0, 1], sasrec=CONVERGING_SASREC)  # what is promoted is known
    report = pipeline(str(path))
    wh = Warehouse(tmp_path / "home")
    rows = registry.models(wh)
    assert sorted(r["kind"] for r in rows) == ["adapt"] * (2 * len(METHODS)) + ["pretrain"] * 2
    for r in rows:
        assert r["lineage"] and r["path"] and r["flow_run_id"]
        if r["kind"] == "adapt":
            assert r["lineage"]["data"]["Gift_Cards"]["fingerprint"]
            folder = tmp_path / "home" / "artifacts" / "adapt" / "Gift_Cards" / r["method"] / r["version"]
            assert r["test"]["recall@10"] == json.loads((folder / "result.json").read_text())["recall@10"]
            assert r["training"]["stopped_by"] in ("patience", "cap", None)
    with wh.reader() as con:  # the registry in plain SQL
        runs = con.execute("SELECT pretrained, adapted, targets FROM runs ORDER BY started").fetchall()
        assert runs == [(2, 2 * len(METHODS), ["Gift_Cards"])]  # one flow run registered everything
        best = con.execute("SELECT method, avg(value) FROM metrics WHERE split = 'test' AND metric = 'recall@10' "
                           "GROUP BY method ORDER BY 2 DESC, 1").fetchall()
        assert {m for m, _ in best} == set(METHODS) and all(0 <= v <= 1 for _, v in best)
        assert con.execute("SELECT count(*) FROM metrics").fetchall()[0][0] == 2 * len(METHODS) * 8 + 2 * 4
    model, reason = registry.promoted(wh, "Gift_Cards")
    assert model["method"] == "sasrec" and model["training"]["stopped_by"] == "patience"
    scratch = [r["valid"]["recall@10"] for r in rows if r["method"] == "scratch"]
    same = [r["valid"]["recall@10"] for r in rows if r["method"] == model["method"]]
    assert sum(same) / len(same) >= sum(scratch) / len(scratch)  # never below scratch
    assert f"Promoted `{model['version']}`: {reason}" in report

    with wh.reader() as con:  # the promoted model's top-k per user, joinable with the test split
        rows = con.execute("SELECT count(*), count(DISTINCT user_idx), max(rank), any_value(model_version) "
                           "FROM recommendations WHERE domain = 'Gift_Cards'").fetchone()
        assert rows == (453 * 50, 453, 50, model["version"])
        readme = (Path(__file__).parent.parent / "README.md").read_text()
        query = readme.split("```sql\n")[1].split("```")[0]  # the README's Recall@10 by history length
        buckets = con.execute(query).fetchall()
        assert sum(users for _, users, _ in buckets) == 453 and all(0 <= r <= 1 for *_, r in buckets)
        everyone = sum(users * recall for _, users, recall in buckets) / 453
        from ant_model.evaluate import Evaluation  # the evaluation's ranks bound what any tie-break gives
        ranks = Evaluation.load(tmp_path / "home" / "artifacts" / "adapt" / "Gift_Cards" / model["method"] /
                                model["version"] / "test_ranks.npz")
        assert (ranks.greater + ranks.ties < 10).mean() - 1e-9 <= everyone <= (ranks.greater < 10).mean() + 1e-9

    history = ["B004LLIKVU", "B005DHN6E2"]
    out = ant("recommend", "--config", str(path), "--target", "Gift_Cards", "--history", ",".join(history),
              "-k", "5")
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["rank", "item_id", "score"] and len(lines) == 2 + 5 + 1
    recommended = [line.split()[1] for line in lines[2:7]]
    assert not set(recommended) & set(history)
    bad = ant("recommend", "--config", str(path), "--target", "Gift_Cards", "--history", "NOPE")
    assert bad.returncode == 1 and "unknown item(s) NOPE" in bad.stderr
    listed = ant("models", "list", "--config", str(path), "--target", "Gift_Cards")
    assert listed.returncode == 0 and listed.stdout.count("adapt") == 2 * len(METHODS)
    before = len(registry.models(wh))
    pipeline(str(path))
    assert len(registry.models(wh)) == before  # nothing new registered


def test_an_imported_dataset_is_a_target_of_the_main_job(prefect, pipeline_config, tmp_path):
    """`imports:` in the config: a processed dataset (here Gift_Cards exported with
    `export-atomic`, features included) is adapted to like any Amazon category."""
    from ant_config import load_config
    from flows.pipeline import pipeline
    from services.context import Context
    from services.features import featurize_domain
    from tests.test_ingest import FIXTURES, ingest_files
    from warehouse.atomic import export_atomic
    source = Context.of(load_config(pipeline_config(tmp_path / "source.yaml", home=str(tmp_path / "source"))))
    src = FIXTURES / "amazon-2018"
    ingest_files(source.warehouse, "2018", "Gift_Cards", src / "Gift_Cards_5.json.gz", src / "meta_Gift_Cards.json.gz")
    featurize_domain(source, "Gift_Cards")
    files = {p.name for p in export_atomic(source.warehouse, "Gift_Cards", tmp_path / "atomic", 50)}
    assert {"Gift_Cards.train.inter", "Gift_Cards.text.feat", "Gift_Cards.image.feat"} <= files
    config = pipeline_config(targets=["Gifts"], imports=[{"name": "Gifts", "dir": str(tmp_path / "atomic"), "features": {
        "text": "Gift_Cards.text.feat:16", "image": "Gift_Cards.image.feat:16", "price": "Gift_Cards.price.feat:64"}}])
    report = pipeline(str(config))
    assert "## Gifts" in report and "| relearn" in report
    with Context.of(load_config(config)).warehouse.reader() as con:
        assert con.execute("SELECT release, users FROM domains JOIN domain_stats USING (domain) "
                           "WHERE domain = 'Gifts'").fetchone() == ("atomic", 453)

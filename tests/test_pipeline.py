"""The whole DAG on the fixture mirror over 127.0.0.1: ingest → features → pre-train →
every method on the target → report; a second run trains nothing and reports the same."""
from __future__ import annotations

import json
import time

from ant_model.strategies import METHODS
from tests.tiny_models import tiny_open_clip_dir


def test_pipeline_end_to_end_then_cached(prefect, write_config, tmp_path, server):
    from flows.pipeline import pipeline
    clip = tiny_open_clip_dir(tmp_path / "clip")
    path = write_config(
        auxiliary=["Magazine_Subscriptions"], targets=["Gift_Cards"], seeds=[0],
        features={"text": {"model": clip, "pretrained": None},
                  "image": {"model": clip, "pretrained": None, "workers": 0},
                  "fetch": {"url_rewrite": {"https://images-na.ssl-images-amazon.com/": server.url + "/"},
                            "retries": 0}},
        model={"width": 16, "ffn_width": 16, "n_experts": 2},
        pretrain={"epochs": 1, "batch_size": 256}, adapt={"epochs": 2, "batch_size": 256})
    report = pipeline(str(path))
    assert "## Gift_Cards" in report
    for method in METHODS:
        assert f"| {method} |" in report
    assert report.count("| no |") + report.count("| **yes**") == 4  # one verdict per adapted method
    results = list((tmp_path / "home" / "artifacts" / "adapt" / "Gift_Cards").glob("*/*/result.json"))
    assert len(results) == len(METHODS)
    assert all(json.loads(r.read_text())["target"] == "Gift_Cards" for r in results)

    started = time.monotonic()
    assert pipeline(str(path)) == report
    assert len(list((tmp_path / "home" / "artifacts" / "adapt").glob("*/*/*/result.json"))) == len(METHODS)
    assert time.monotonic() - started < 120


def test_registry_promotion_and_recommend(prefect, write_config, tmp_path, server):
    from flows.pipeline import pipeline
    from tests.test_cli_config import ant
    from warehouse import registry
    from warehouse.store import Warehouse
    clip = tiny_open_clip_dir(tmp_path / "clip")
    path = write_config(
        auxiliary=["Magazine_Subscriptions"], targets=["Gift_Cards"], seeds=[0, 1],
        features={"text": {"model": clip, "pretrained": None}, "image": {"model": clip, "pretrained": None,
                  "workers": 0}, "fetch": {"url_rewrite": {"https://": "http://127.0.0.1:9/"}, "retries": 0}},
        model={"width": 16, "ffn_width": 16, "n_experts": 2},
        pretrain={"epochs": 1, "batch_size": 256}, adapt={"epochs": 2, "batch_size": 256})
    report = pipeline(str(path))
    wh = Warehouse(tmp_path / "home")
    rows = registry.models(wh)
    assert sorted(r["kind"] for r in rows) == ["adapt"] * (2 * len(METHODS)) + ["pretrain"] * 2
    for r in rows:
        assert r["lineage"] and r["path"] and r["flow_run_id"]
        if r["kind"] == "adapt":
            assert r["lineage"]["data"]["Gift_Cards"]["fingerprint"] and r["test"]["recall@10"] >= 0
    model, reason = registry.promoted(wh, "Gift_Cards")
    scratch = [r["valid"]["recall@10"] for r in rows if r["method"] == "scratch"]
    same = [r["valid"]["recall@10"] for r in rows if r["method"] == model["method"]]
    assert sum(same) / len(same) >= sum(scratch) / len(scratch)  # never below scratch
    assert f"promoted `{model['version']}`" in report and reason in report

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

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

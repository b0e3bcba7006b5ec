"""Pre-training and adaptation on the real fixture domains, through the flows and the CLI:
`ant adapt` prints one JSON line of test metrics; versions are reused, not retrained."""
from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from services.context import Context
from services.features import featurize_domain
from tests.test_cli_config import ANT, ant
from tests.test_ingest import FIXTURES, ingest_files
from tests.tiny_models import tiny_open_clip_dir
from warehouse.store import Warehouse

ROOT = Path(__file__).parent.parent


@pytest.fixture()
def trained_home(tmp_path, write_config):
    wh = Warehouse(tmp_path / "home")
    src = FIXTURES / "amazon-2018"
    for cat in ("Gift_Cards", "Magazine_Subscriptions"):
        ingest_files(wh, "2018", cat, src / f"{cat}_5.json.gz", src / f"meta_{cat}.json.gz")
    clip = tiny_open_clip_dir(tmp_path / "clip")
    path = write_config(
        auxiliary=["Magazine_Subscriptions"], targets=["Gift_Cards"],
        features={"text": {"model": clip, "pretrained": None},
                  "image": {"model": clip, "pretrained": None, "workers": 0},
                  "fetch": {"url_rewrite": {"https://": "http://127.0.0.1:9/"}, "retries": 0, "timeout_s": 1}},
        model={"width": 16, "ffn_width": 16, "n_experts": 2},
        pretrain={"epochs": 2, "batch_size": 128}, adapt={"epochs": 3, "batch_size": 128},
        sasrec={"epochs": 3, "batch_size": 128, "width": 16, "ffn_width": 16})
    from ant_config import load_config
    config = load_config(path)
    for domain in ("Gift_Cards", "Magazine_Subscriptions"):
        featurize_domain(Context.of(config), domain)
    return wh, path


def test_pretrain_then_adapt_every_method(prefect, trained_home):
    from flows.train import adapt, pretrain
    wh, path = trained_home
    first = pretrain(str(path))
    assert first["domains"] == ["Magazine_Subscriptions"]
    assert pretrain(str(path))["version"] == first["version"]  # same inputs: nothing retrained
    text_only = pretrain(str(path), text_only=True)
    assert text_only["version"] != first["version"]
    results = {m: adapt("Gift_Cards", m, str(path))[0] for m in
               ("relearn", "finetune", "scratch", "sasrec", "unisrec", "features-sasrec")}
    for method, r in results.items():
        assert 0 <= r["ndcg@10"] <= r["recall@10"] <= r["recall@50"] <= 1, method
    assert results["relearn"]["pretrained"] == first["version"]
    assert results["unisrec"]["pretrained"] == text_only["version"]
    assert results["scratch"]["pretrained"] is None


def test_adapt_cli_prints_one_json_line(trained_home, tmp_path):
    wh, path = trained_home
    own = {"PREFECT_HOME": str(tmp_path / "prefect-home")}  # to see that no server starts
    pre = ant("pretrain", "--config", str(path), "--epochs", "1", env=own)
    assert pre.returncode == 0, pre.stderr[-2000:]
    version = json.loads(pre.stdout.strip().splitlines()[-1])["version"]
    out = ant("adapt", "--config", str(path), "--target", "Gift_Cards", "--method", "relearn",
              "--pretrained", version, "--epochs", "2", "--seed", "1", env=own)
    assert out.returncode == 0, out.stderr[-2000:]
    line = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(line) == {"method", "target", "version", "seed", "recall@10", "ndcg@10", "recall@50", "ndcg@50",
                         "best_epoch", "epochs_run", "stopped_by", "modalities"}
    assert line["method"] == "relearn"
    assert not (tmp_path / "prefect-home" / "ant-server").exists()  # training commands start no Prefect server
    bad = ant("adapt", "--config", str(path), "--target", "Gift_Cards", "--method", "magic")
    assert bad.returncode == 2 and "relearn" in bad.stderr
    missing = ant("adapt", "--config", str(path), "--target", "Nowhere", "--method", "scratch")
    assert missing.returncode == 1 and "not in the warehouse" in missing.stderr


def test_two_adapt_runs_on_one_home_train_side_by_side(trained_home):
    """Training takes no lock on the home: while one run is held in the middle of its training
    (stopped by SIGSTOP after its first epoch), a run on another target trains to its end; then
    the first resumes and finishes, and both are registered. No race decides the outcome: two
    runs merely started together need not overlap on a busy machine."""
    wh, path = trained_home

    def adapt(target: str) -> subprocess.Popen:
        return subprocess.Popen(
            [*ANT, "adapt", "--config", str(path), "--target", target, "--method", "scratch", "--epochs", "25"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)

    first = adapt("Gift_Cards")
    seen = []
    for line in first.stderr:  # until its first epoch is logged: it is training now
        seen.append(line)
        if "Gift_Cards epoch" in line:
            break
    else:
        pytest.fail("the first run never logged an epoch: " + "".join(seen)[-2000:])
    first.send_signal(signal.SIGSTOP)
    try:
        second = adapt("Magazine_Subscriptions")
        out, err = second.communicate(timeout=600)  # a lock on the home would hold it here
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 0, err[-2000:]
    assert "Magazine_Subscriptions epoch" in err
    assert json.loads(out.strip().splitlines()[-1])["target"] == "Magazine_Subscriptions"
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-2000:]
    assert json.loads(out.strip().splitlines()[-1])["target"] == "Gift_Cards"
    from warehouse import registry
    assert {r["target"] for r in registry.models(wh) if r["method"] == "scratch"} == {
        "Gift_Cards", "Magazine_Subscriptions"}

"""The training entry point under torchrun: two CPU processes (gloo) end with identical weights."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_two_ranks_end_with_identical_weights(tmp_path):
    out = tmp_path / "weights"
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "tests.ddp_worker", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=1800,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr[-3000:]
    hashes = [Path(f"{out}.{rank}").read_text() for rank in (0, 1)]
    assert hashes[0] == hashes[1]


NODE = """
import json, logging, sys
logging.basicConfig(level=logging.INFO)
from ant_config import load_config
from services.context import Context
from services.planning import pretrain_plan
from services.training import run_pretrain
ctx = Context.of(load_config(sys.argv[1]))
print(json.dumps(run_pretrain(ctx, pretrain_plan(ctx, ["Scientific"]))))
"""


def test_two_nodes_pretrain_one_model_over_a_rendezvous(tmp_path):
    """`orchestration.pretrain_nodes: 2`: two machines (here two processes on loopback, ranks by
    ANT_NODE_RANK) meet at the rendezvous, train one model together, and register it once."""
    import json
    import socket
    from tests.test_atomic import write_atomic
    from warehouse import registry
    from warehouse.atomic import FeatureFile, import_atomic
    from warehouse.store import Warehouse
    wh = Warehouse(tmp_path / "shared-home")  # on shared storage, as every node must see it
    write_atomic(tmp_path / "sci")
    import_atomic(wh, tmp_path / "sci", "Scientific", [FeatureFile("text", tmp_path / "sci" / "Scientific.feat1CLS", 8)])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({
        "home": str(wh.home), "model": {"width": 16, "ffn_width": 16, "n_experts": 2},
        "pretrain": {"epochs": 2, "batch_size": 8},
        "orchestration": {"pretrain_processes": 1, "pretrain_nodes": 2, "rendezvous_endpoint": f"127.0.0.1:{port}"}}))
    nodes = [subprocess.Popen([sys.executable, "-c", NODE, str(config)], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={**os.environ, "OMP_NUM_THREADS": "1", "ANT_NODE_RANK": str(rank)})
             for rank in (0, 1)]
    results, logs = [], []
    for node in nodes:
        out, err = node.communicate(timeout=1800)
        assert node.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
        logs.append(err)
    assert all("--nnodes 2" in log and f"--rdzv_endpoint 127.0.0.1:{port}" in log for log in logs)
    assert results[0]["version"] == results[1]["version"]
    assert [r["version"] for r in registry.pretrained(wh)] == [results[0]["version"]]  # registered once
    folder = wh.home / "artifacts" / "pretrain" / "ant" / results[0]["version"]
    assert (folder / "fit.json").exists()  # written by global rank 0 of the torchrun job


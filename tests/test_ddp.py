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
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr[-3000:]
    hashes = [Path(f"{out}.{rank}").read_text() for rank in (0, 1)]
    assert hashes[0] == hashes[1]

"""The CUDA path, checked and timed in one go (bench/gpu.sh runs it): prints one Markdown table.

    python bench/gpu_check.py [--device cuda] [--steps 50]

1. bf16 against fp32: a model trained `--steps` steps with bf16 autocast (as `train.amp: bf16`
   runs it); at every step the loss of the batch under bf16 and under fp32, same weights,
   dropout off, must agree within AGREE, and the bf16 run's final loss must be within DRIFT
   of an fp32 run's from the same start.
2. torch.compile (dynamic shapes, as `train.compile: true` runs it): steps/s and its loss.
3. Throughput: examples/s of ANT training (bf16 + compile) on a Scientific-sized target.
4. DDP over NCCL: with 2+ GPUs, a 2-process torchrun step whose ranks end with equal weights.
On a machine without CUDA, `--device cpu` runs the same checks on the CPU (bf16 autocast on CPU),
which is how the script itself is tested.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import ant_config  # noqa: F401 - before torch: it sets OpenMP's wait policy
import torch

from ant_config import ModelConfig, TrainConfig
from ant_model.data import training_batches
from ant_model.model import ANT

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train import DIMS, make_data  # noqa: E402  (a sibling script)

ROOT = Path(__file__).resolve().parent.parent
AGREE = 0.05  # same weights, same batch: bf16 and fp32 losses this close (relative; bf16 keeps ~3 digits
#               of logits up to 1/temperature = 14, measured 2.6% on the CPU)
DRIFT = 0.20  # after training: mean loss over the last 10 steps, against the reference run's (dropout
#               masks differ between eager and compiled kernels, so trajectories part a little)


def train_steps(data, device: torch.device, steps: int, amp: bool, compiled: bool
                ) -> tuple[list[float], float, float]:
    """(training loss per step, seconds per step after the first, largest bf16/fp32 gap at equal
    weights) of `steps` steps."""
    torch.manual_seed(0)
    model = ANT(data.feature_dims, ModelConfig(modalities=list(DIMS)), data.n_items).to(device)
    train = torch.compile(model, dynamic=True) if compiled else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    features = data.tensors(device)
    has_image = torch.from_numpy(data.has["image"]).to(device)
    cfg = TrainConfig()
    batches = training_batches(data.train, cfg.batch_size, model.cfg.max_seq_len, np.random.default_rng(0))
    out, times, worst = [], [], 0.0
    for _, (inputs, targets) in zip(range(steps), batches):
        inputs, targets = inputs.to(device), targets.to(device)
        if amp and not compiled:  # the same weights and batch, deterministic (dropout and gate noise off)
            model.eval()
            with torch.no_grad():
                exact = model(features, has_image, inputs, targets, "full").item()
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    half = model(features, has_image, inputs, targets, "full").item()
            worst = max(worst, abs(half - exact) / abs(exact))
        model.train()
        started = time.monotonic()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = train(features, has_image, inputs, targets, "full")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        out.append(loss.item())  # synchronises
        times.append(time.monotonic() - started)
    return out, float(np.mean(times[1:])) if len(times) > 1 else float("nan"), worst


def drift(a: list[float], b: list[float]) -> float:
    return abs(np.mean(a[-10:]) - np.mean(b[-10:])) / abs(np.mean(a[-10:]))


DDP_STEP = """
import hashlib, os, sys, torch, torch.distributed as dist
from ant_config import ModelConfig, TrainConfig
from ant_model.model import ANT
from ant_model.synthetic import make_benchmark
from ant_model.train import fit
dist.init_process_group("nccl")
torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
_, target = make_benchmark(seed=3, aux_domains=1, aux_users=10, target_users=256)
torch.manual_seed(dist.get_rank())  # different starting weights: DDP must broadcast rank 0's
model = ANT(target.feature_dims, ModelConfig(width=64, ffn_width=64, modalities=["text", "image", "price"]), target.n_items)
fit(model, target, TrainConfig(epochs=1, batch_size=256, device="cuda", amp="bf16"), "full", progress=False)
digest = hashlib.sha256(b"".join(t.detach().cpu().float().numpy().tobytes() for t in model.state_dict().values()))
open(f"{sys.argv[1]}.{dist.get_rank()}", "w").write(digest.hexdigest())
dist.destroy_process_group()
"""


def ddp() -> str:
    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        return "skipped: fewer than 2 GPUs"
    out = Path(tempfile.mkdtemp()) / "weights"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "--no-python", sys.executable, "-c", DDP_STEP, str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    if done.returncode != 0:
        return f"FAILED: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}"
    hashes = {Path(f"{out}.{r}").read_text() for r in (0, 1)}
    return "ok: 2 ranks, equal weights" if len(hashes) == 1 else "FAILED: ranks differ"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=5_000)
    args = parser.parse_args()
    device = torch.device(args.device)
    data = make_data(args.users, args.items, DIMS, np.random.default_rng(0))
    rows = []
    fp32, fp32_s, _ = train_steps(data, device, args.steps, amp=False, compiled=False)
    bf16, bf16_s, worst = train_steps(data, device, args.steps, amp=True, compiled=False)
    rows.append((f"bf16 vs fp32 loss, same weights, {args.steps} steps", f"largest gap {worst:.3%} (tolerance {AGREE:.0%})",
                 "ok" if worst <= AGREE else "FAILED"))
    d = drift(fp32, bf16)
    rows.append((f"bf16 vs fp32 training, last 10 of {args.steps} steps", f"{np.mean(bf16[-10:]):.4f} vs "
                 f"{np.mean(fp32[-10:]):.4f} (gap {d:.2%}, tolerance {DRIFT:.0%})", "ok" if d <= DRIFT else "FAILED"))
    compiled, compiled_s, _ = train_steps(data, device, args.steps, amp=True, compiled=True)
    d = drift(bf16, compiled)
    rows.append(("torch.compile vs eager training (bf16)", f"gap {d:.2%}", "ok" if d <= DRIFT else "FAILED"))
    batch = TrainConfig().batch_size
    for name, seconds in (("fp32 eager", fp32_s), ("bf16 eager", bf16_s), ("bf16 + compile", compiled_s)):
        rows.append((f"training, {name}", f"{seconds * 1000:.1f} ms/step, {batch / seconds:,.0f} examples/s", ""))
    rows.append(("DDP over NCCL", ddp(), ""))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"\n{name}, torch {torch.__version__}, {args.users:,} users × {args.items:,} items, width 256\n")
    print("| check | result | verdict |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if any("FAILED" in (verdict + result) for _, result, verdict in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()

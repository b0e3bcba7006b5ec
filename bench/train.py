"""Training throughput: this project's loop against the prefix-expansion approach, same model.

    python bench/train.py [--users 3000] [--items 1600] [--width 300] [--model sasrec|ant] [--device auto]

The data has the shape of a small Amazon target (~3k users, ~1.6k items, mean sequence ~7,
~11k training prefixes). "expanded" is how common implementations train (RecBole's SASRec):
one row per prefix, each padded to L = 50, loss at the last position only. "ours" trains each
user's sequence once with the loss at every position (the same objective under the causal
mask), pads each batch to its longest sequence and computes the item vectors once per step.
Prints sequences/s and tokens/s (prefix rows and real items per second), epoch time,
evaluation users/s and peak memory, on CPU and on CUDA when present.
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from ant_config import ModelConfig, TrainConfig
from ant_model.data import DomainData, training_batches
from ant_model.evaluate import rank_targets
from ant_model.losses import full_softmax
from ant_model.model import ANT
from ant_model.strategies import method_config
from ant_model.device import pick_device


def make_data(users: int, items: int, dims: dict[str, int], rng: np.random.Generator) -> DomainData:
    lengths = np.clip(rng.geometric(1 / 7, size=users), 5, 200)
    popularity = rng.zipf(1.3, size=items).astype(float)
    p = popularity / popularity.sum()
    seqs = [rng.choice(np.arange(1, items + 1), size=n, replace=False, p=p) for n in lengths]
    features = {m: np.vstack([np.zeros((1, d)), rng.normal(size=(items, d))]).astype(np.float32)
                for m, d in dims.items()}
    has = {m: np.r_[False, np.ones(items, dtype=bool)] for m in dims}
    return DomainData("bench", features, has, [s[:-2] for s in seqs],
                      [(s[:-2], int(s[-2])) for s in seqs], [(s[:-1], int(s[-1])) for s in seqs])


def expanded_batches(data: DomainData, batch_size: int, max_len: int, rng: np.random.Generator):
    """One row per prefix, padded to the full length L, target = the next item."""
    rows = [(s[max(0, t - max_len):t], s[t]) for s in data.train for t in range(1, len(s))]
    order = rng.permutation(len(rows))
    for start in range(0, len(order), batch_size):
        chosen = [rows[i] for i in order[start:start + batch_size]]
        inputs = torch.zeros(len(chosen), max_len, dtype=torch.long)
        for r, (h, _) in enumerate(chosen):
            inputs[r, :len(h)] = torch.from_numpy(h)
        yield inputs, torch.tensor([t for _, t in chosen]), torch.tensor([len(h) for h, _ in chosen])


def epoch_ours(model, features, data, cfg, optimizer, device, rng):
    rows = tokens = 0
    for inputs, targets in training_batches(data.train, cfg.batch_size, model.cfg.max_seq_len, rng):
        inputs, targets = inputs.to(device), targets.to(device)
        loss = model(features, None, inputs, targets, "full")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        real = int((targets != 0).sum())
        rows, tokens = rows + real, tokens + real
    return rows, tokens


def epoch_expanded(model, features, data, cfg, optimizer, device, rng):
    rows = tokens = 0
    n = len(next(iter(features.values())))
    for inputs, targets, lengths in expanded_batches(data, cfg.batch_size, model.cfg.max_seq_len, rng):
        inputs, targets, lengths = inputs.to(device), targets.to(device), lengths.to(device)
        items, _ = model.encode_items(features, torch.arange(n, device=device))
        states = model.states(items, inputs)[torch.arange(len(inputs), device=device), lengths - 1]
        loss = full_softmax(states, targets, items, model.cfg.temperature)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        rows, tokens = rows + len(inputs), tokens + int(lengths.sum())
    return rows, tokens


def run(device: torch.device, args, data: DomainData) -> None:
    base = ModelConfig(width=args.width, ffn_width=args.width, heads=2, layers=2)
    cfg_model = method_config(args.model, base)
    train_cfg = TrainConfig(batch_size=args.batch_size)
    features = data.tensors(device)
    results = {}
    for name, epoch in (("expanded", epoch_expanded), ("ours", epoch_ours)):
        torch.manual_seed(0)
        dims = {m: d for m, d in data.feature_dims.items() if m in cfg_model.modalities}
        model = ANT(dims, cfg_model, data.n_items).to(device).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        epoch(model, features, data, train_cfg, optimizer, device, np.random.default_rng(0))  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.monotonic()
        rows, tokens = epoch(model, features, data, train_cfg, optimizer, device, np.random.default_rng(1))
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.monotonic() - started
        results[name] = seconds
        print(f"[{device}] {name:8s}: epoch {seconds:6.2f}s, {rows / seconds:9,.0f} training sequences "
              f"(prefixes)/s, {tokens / seconds:9,.0f} tokens/s")
    started = time.monotonic()
    rank_targets(model, features, data.test, 1024)
    users_per_s = len(data.test) / (time.monotonic() - started)
    print(f"[{device}] speed-up of ours over expanded: {results['expanded'] / results['ours']:.1f}x; "
          f"evaluation (full ranking over {data.n_items} items): {users_per_s:,.0f} users/s")
    if device.type == "cuda":
        print(f"[{device}] peak GPU memory: {torch.cuda.max_memory_allocated() / 2**20:,.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--items", type=int, default=1600)
    parser.add_argument("--width", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--model", choices=["sasrec", "relearn"], default="sasrec",
                        help="sasrec: item IDs (as RecBole's SASRec); relearn: ANT with features")
    parser.add_argument("--device", default="auto", help="auto = cpu, then cuda too when present")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    data = make_data(args.users, args.items, {"text": 512, "image": 512, "price": 64}, rng)
    prefixes = sum(len(s) - 1 for s in data.train)
    print(f"data: {args.users} users, {args.items} items, {prefixes:,} training prefixes, "
          f"mean training sequence {np.mean([len(s) for s in data.train]):.1f}")
    devices = [args.device] if args.device != "auto" else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        run(pick_device(device), args, data)
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")


if __name__ == "__main__":
    main()

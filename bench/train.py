"""Training throughput and memory.

Small, this project's loop against prefix expansion, same model (SASRec over item IDs, width
300, batch 2048 examples) on data shaped like a small Amazon target (3,000 users, 1,600 items):

    python bench/train.py [--users 3000] [--items 1600] [--model sasrec|relearn] [--device auto]

"expanded" is how common implementations train (RecBole's SASRec): one row per prefix, each
padded to L = 50, loss at the last position only. "ours" trains each user's sequence once with
the loss at every position (the same objective under the causal mask), packs sequences of
similar length into batches of about batch_size targets and computes item vectors once per
step. Prints examples/s, epoch time, evaluation users/s and peak memory.

At paper scale, ANT itself with text, image and price features (512, 512, 64 wide):

    python bench/train.py --items 1000000 --users 1000000 [--steps 20]

times --steps steps of pre-training (in-batch InfoNCE, no item IDs, as the pipeline pre-trains)
and of adaptation, inductive and with item IDs (a catalogue this large trains on sampled
negatives; the full softmax would be chunked by train.max_logits), and prints s/step, steps per
epoch, the s/epoch they imply, and the peak RSS after each.

Time to converge (seconds to the best validation epoch, and the test quality there, per method
and seed) is a quality question, so `bench/quality.py` prints it beside the metrics.
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import ant_config  # noqa: F401 - before torch: it sets OpenMP's wait policy
import torch

from ant_config import AntConfig, ModelConfig, TrainConfig
from ant_model.data import DomainData, training_batches
from ant_model.device import pick_device
from ant_model.evaluate import rank_targets
from ant_model.losses import full_softmax
from ant_model.model import ANT, gather
from ant_model.train import negative_distribution

DIMS = {"text": 512, "image": 512, "price": 64}


def make_data(users: int, items: int, dims: dict[str, int], rng: np.random.Generator) -> DomainData:
    """Long-tailed lengths and Zipf popularity, like Amazon categories; vectorised for millions."""
    lengths = np.clip(rng.geometric(1 / 7, size=users), 5, 200)
    popularity = rng.zipf(1.3, size=items).astype(float)
    drawn = rng.choice(np.arange(1, items + 1), size=int(lengths.sum()), p=popularity / popularity.sum())
    seqs = np.split(drawn, np.cumsum(lengths)[:-1])
    features = {m: np.vstack([np.zeros((1, d), np.float32), rng.standard_normal((items, d), dtype=np.float32)])
                for m, d in dims.items()}
    has = {m: np.r_[False, np.ones(items, dtype=bool)] for m in dims}
    return DomainData("bench", items, features, has, [s[:-2] for s in seqs],
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
    examples = 0
    for inputs, targets in training_batches(data.train, cfg.batch_size, model.cfg.max_seq_len, rng):
        inputs, targets = inputs.to(device), targets.to(device)
        loss = model(features, None, inputs, targets, "full")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        examples += int((targets != 0).sum())
    return examples


def epoch_expanded(model, features, data, cfg, optimizer, device, rng):
    examples = 0
    for inputs, targets, lengths in expanded_batches(data, cfg.batch_size, model.cfg.max_seq_len, rng):
        inputs, targets, lengths = inputs.to(device), targets.to(device), lengths.to(device)
        items = model.all_items(features, device)
        padded = model.sequence.encode_padded(gather(items, inputs), inputs == 0)  # all L positions, as RecBole does
        states = padded[torch.arange(len(inputs), device=device), lengths - 1]
        loss = full_softmax(states, targets, items, model.scores)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        examples += len(inputs)
    return examples


def small(device: torch.device, args, data: DomainData) -> None:
    config = AntConfig(model={"width": args.width, "ffn_width": args.width, "modalities": list(DIMS)})
    cfg_model = config.architecture("sasrec" if args.model == "sasrec" else "relearn")
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
        examples = epoch(model, features, data, train_cfg, optimizer, device, np.random.default_rng(1))
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.monotonic() - started
        results[name] = seconds
        print(f"[{device}] {name:8s}: epoch {seconds:6.2f}s, {examples / seconds:9,.0f} training examples "
              f"(prefix → next item)/s")
    started = time.monotonic()
    rank_targets(model.scorer(features), data.test, 1024, model.cfg.max_seq_len, device)
    users_per_s = len(data.test) / (time.monotonic() - started)
    print(f"[{device}] speed-up of ours over expanded: {results['expanded'] / results['ours']:.1f}x; "
          f"evaluation (full ranking over {data.n_items} items): {users_per_s:,.0f} users/s")
    if device.type == "cuda":
        print(f"[{device}] peak GPU memory: {torch.cuda.max_memory_allocated() / 2**20:,.0f} MB")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def scale(device: torch.device, args, data: DomainData) -> None:
    """Steps of pre-training and adaptation of ANT on a paper-sized catalogue, each model built as
    the pipeline builds it: pre-training never has item IDs; adaptation is timed inductive
    (`model.item_ids: false`) and then with an ID for every item (the default), whose table, its
    gradient and Adam's two moments add 4 × items × width floats. Prints the peak RSS after each."""
    base = ModelConfig(width=args.width, ffn_width=args.width, modalities=list(DIMS))
    train_cfg = TrainConfig(batch_size=args.batch_size)
    features = data.tensors(device)
    has_image = torch.from_numpy(data.has["image"]).to(device)
    q = negative_distribution(data).to(device)
    log_q = q.log()
    steps_per_epoch = sum(1 for _ in training_batches(data.train, train_cfg.batch_size, base.max_seq_len,
                                                      np.random.default_rng(0)))
    objective = "sampled" if data.n_items > train_cfg.sampled_softmax_above else "full"
    phases = (("pre-training", "in_batch", base.for_pretraining()),
              (f"adaptation, inductive ({objective} softmax)", objective, base.model_copy(update={"item_ids": False})),
              (f"adaptation, item IDs ({objective} softmax)", objective, base.model_copy(update={"item_ids": True})))
    for name, kind, cfg_model in phases:
        model = ANT(data.feature_dims, cfg_model, data.n_items).to(device).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        batches = training_batches(data.train, train_cfg.batch_size, cfg_model.max_seq_len, np.random.default_rng(1))
        seconds = []
        for step, (inputs, targets) in zip(range(args.steps + 1), batches):
            started = time.monotonic()
            negatives = torch.multinomial(q, train_cfg.negatives, replacement=True) if kind == "sampled" else None
            loss = model(features, has_image, inputs.to(device), targets.to(device), kind, train_cfg.align_weight,
                         train_cfg.max_logits, negatives, log_q)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if step:  # the first step warms up
                seconds.append(time.monotonic() - started)
        per_step = float(np.mean(seconds))
        print(f"[{device}] {name}: {per_step:.3f} s/step × {steps_per_epoch:,} steps/epoch = "
              f"{per_step * steps_per_epoch / 3600:.2f} h/epoch ({train_cfg.batch_size / per_step:,.0f} examples/s); "
              f"peak RSS so far {peak_rss_mb():,.0f} MB")
        del model, optimizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--items", type=int, default=1600)
    parser.add_argument("--width", type=int, default=None, help="default: 300 small, 256 (the spec's) at scale")
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=20, help="at scale: steps timed per phase")
    parser.add_argument("--model", choices=["sasrec", "relearn"], default="sasrec",
                        help="small comparison: sasrec (item IDs, as RecBole's SASRec) or relearn (ANT with features)")
    parser.add_argument("--device", default="auto", help="auto = cpu, then cuda too when present")
    args = parser.parse_args()
    at_scale = args.items >= 100_000
    args.width = args.width or (256 if at_scale else 300)
    rng = np.random.default_rng(0)
    started = time.monotonic()
    data = make_data(args.users, args.items, DIMS, rng)
    targets = sum(len(s) - 1 for s in data.train)
    print(f"data: {args.users:,} users, {args.items:,} items, {targets:,} training examples, mean training sequence "
          f"{np.mean([len(s) for s in data.train]):.1f} (made in {time.monotonic() - started:.0f}s)")
    devices = [args.device] if args.device != "auto" else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        (scale if at_scale else small)(pick_device(device), args, data)
    print(f"peak RSS: {peak_rss_mb():,.0f} MB")


if __name__ == "__main__":
    main()

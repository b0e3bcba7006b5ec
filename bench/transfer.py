"""Transfer on the synthetic multi-domain benchmark (ant_model/synthetic.py): pre-train once on the
auxiliary domains (ANT, and a text-only model for the UniSRec-style baseline), then train every
method on the sparse target for several seeds; prints the table (mean ± std) and flags
negative transfer (an adapted method below scratch).

    python bench/transfer.py [--seeds 0 1 2] [--pattern cycle|rule] [--shift 1.0]
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ant_config import ModelConfig, TrainConfig
from ant_model.evaluate import rank_targets
from ant_model.strategies import METHODS, adapt, pretrain
from ant_model.synthetic import PATTERNS, make_benchmark

METRICS = ("recall@10", "ndcg@10", "recall@50", "ndcg@50")
ADAPTED = ("relearn", "finetune", "finetune-frozen", "unisrec")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--pretrain-epochs", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--pattern", choices=PATTERNS, default="cycle")
    parser.add_argument("--shift", type=float, default=0.0, help="how much each domain's feature projection differs")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    aux, target = make_benchmark(seed=args.data_seed, pattern=args.pattern, shift=args.shift)
    model_cfg = ModelConfig(width=args.width, ffn_width=args.width, n_experts=4, dropout=0.2, embedding_dropout=0.2)
    pre_cfg = TrainConfig(epochs=args.pretrain_epochs, batch_size=256, lr_gamma=0.995, patience=args.pretrain_epochs)
    tmp = Path(tempfile.mkdtemp(prefix="ant-transfer-"))
    started = time.monotonic()
    pretrain(aux, model_cfg, pre_cfg, tmp / "ant", progress=False)
    pretrain(aux, model_cfg.model_copy(update={"modalities": ["text"]}), pre_cfg, tmp / "text", progress=False)
    print(f"pre-trained on {len(aux)} domains ({sum(len(d.train) for d in aux)} users) "
          f"in {time.monotonic() - started:.0f}s; target: {len(target.train)} users, {target.n_items} items")

    results: dict[str, list[dict]] = {}
    for method in args.methods:
        for seed in args.seeds:
            parent = tmp / ("text" if method == "unisrec" else "ant") / "best"
            cfg = TrainConfig(epochs=args.epochs, batch_size=256, patience=25, seed=seed)
            model, _ = adapt(method, target, model_cfg, cfg, parent, progress=False)
            ev = rank_targets(model, target.tensors(torch.device("cpu")), target.test, 1024)
            results.setdefault(method, []).append(ev.metrics())
    scratch = {m: np.mean([r[m] for r in results["scratch"]]) for m in METRICS} if "scratch" in results else None
    print(f"\n| method | {' | '.join(METRICS)} | negative transfer |")
    print("|---|" + "---|" * (len(METRICS) + 1))
    for method, runs in results.items():
        cells = [f"{np.mean([r[m] for r in runs]):.4f} ± {np.std([r[m] for r in runs]):.4f}" for m in METRICS]
        verdict = ""
        if method in ADAPTED and scratch is not None:
            worse = [m for m in METRICS if np.mean([r[m] for r in runs]) < scratch[m]]
            verdict = f"yes ({', '.join(worse)})" if worse else "no"
        print(f"| {method} | {' | '.join(cells)} | {verdict} |")


if __name__ == "__main__":
    main()

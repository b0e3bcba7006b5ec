"""RecBole's SASRec on an atomic dataset, run by bench/peers.py inside its own virtualenv (it
imports RecBole, not this project). Prints one JSON line: test metrics, best epoch, epochs run,
seconds of training and seconds to the best epoch.

    python recbole_sasrec.py DATA_PATH DATASET SEED WORKDIR

RecBole's defaults for SASRec and training (hidden 64, inner 256, 2 layers and heads, dropout
0.5, CE over the full catalogue, Adam 1e-3, batch 2048, 300 epochs, stopping_step 10), with
the split taken from the files (as UniSRec runs it) and the best epoch picked on validation
Recall@10, as this project picks it. One progress line per epoch goes to stderr.

A run resumes where it was stopped: after every validation it keeps its state (model, optimizer,
early-stopping counter, the random generators and the seconds so far) in WORKDIR/last.pth, so a
killed run started again with the same arguments goes on from its last epoch and draws the same
batches and dropout masks as one that was never stopped. A RecBole run on a real target takes
minutes (Tools) to 2 hours (Office) on a 2-core CPU.
"""
import json
import os
import random
import sys
import time

import numpy as np
import torch

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # RecBole's checkpoints hold its config

from recbole.config import Config  # noqa: E402
from recbole.data import create_dataset, data_preparation  # noqa: E402
from recbole.model.sequential_recommender import SASRec  # noqa: E402
from recbole.trainer import Trainer  # noqa: E402
from recbole.utils import init_seed  # noqa: E402


def best_epoch(validations: list[tuple[float, float]]) -> int:
    """The epoch of the best validation score; RecBole keeps the last of equals."""
    return max(range(len(validations)), key=lambda i: (validations[i][0], i))


def main(data_path: str, dataset: str, seed: int, workdir: str) -> None:
    config = Config(model="SASRec", dataset=dataset, config_dict={
        "data_path": data_path, "benchmark_filename": ["train", "valid", "test"],
        "alias_of_item_id": ["item_id_list"], "load_col": {"inter": ["user_id", "item_id_list", "item_id"]},
        "train_neg_sample_args": None, "topk": [10, 50], "metrics": ["Recall", "NDCG"],
        "valid_metric": "Recall@10", "seed": seed, "reproducibility": True, "show_progress": False,
        "checkpoint_dir": workdir, "state": "ERROR", "device": "cpu", "use_gpu": False})
    init_seed(config["seed"], config["reproducibility"])
    train, valid, test = data_preparation(config, create_dataset(config))
    trainer = Trainer(config, SASRec(config, train.dataset))
    trainer.saved_model_file = os.path.join(workdir, "best.pth")  # a fixed name, found again on resume
    last = os.path.join(workdir, "last.pth")
    validations, elapsed = [], 0.0  # (validation score, seconds since the start) per epoch
    if os.path.exists(last):
        state = torch.load(last, map_location="cpu", weights_only=False)
        trainer.model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.start_epoch, trainer.cur_step = state["epoch"] + 1, state["cur_step"]
        trainer.best_valid_score, trainer.best_valid_result = state["best_valid_score"], state["best_valid_result"]
        torch.set_rng_state(state["torch_rng"])
        train.generator.set_state(state["loader_rng"])
        np.random.set_state(state["numpy_rng"])
        random.setstate(state["python_rng"])
        validations, elapsed = state["validations"], state["validations"][-1][1]
        print(f"resuming after epoch {state['epoch']} ({elapsed:.0f} s so far)", file=sys.stderr, flush=True)
    started = time.monotonic() - elapsed
    validate = trainer._valid_epoch

    def timed_validation(*args, **kwargs):  # the score and the time of every epoch's validation
        out = validate(*args, **kwargs)
        validations.append((out[0], time.monotonic() - started))
        return out

    def keep_state(epoch: int, _score: float) -> None:  # after the best model of this epoch is saved
        state = {"model": trainer.model.state_dict(), "optimizer": trainer.optimizer.state_dict(),
                 "epoch": epoch, "cur_step": trainer.cur_step, "best_valid_score": trainer.best_valid_score,
                 "best_valid_result": trainer.best_valid_result, "torch_rng": torch.get_rng_state(),
                 "loader_rng": train.generator.get_state(), "numpy_rng": np.random.get_state(),
                 "python_rng": random.getstate(), "validations": validations}
        torch.save(state, last + ".tmp")
        os.replace(last + ".tmp", last)  # a kill while saving leaves the previous state whole
        best = best_epoch(validations)
        left = trainer.stopping_step - trainer.cur_step + 1
        print(f"epoch {epoch}: valid recall@10 {validations[-1][0]:.4f} (best {validations[best][0]:.4f} at epoch "
              f"{best}; {f'stops after {left} more without a better one' if left > 0 else 'stopped'}), "
              f"{validations[-1][1] / len(validations):.0f} s/epoch, {validations[-1][1]:.0f} s so far",
              file=sys.stderr, flush=True)

    trainer._valid_epoch = timed_validation
    stopped = validations and (trainer.cur_step > trainer.stopping_step or trainer.start_epoch >= trainer.epochs)
    if not stopped:  # a run killed after its last epoch only needs its test
        trainer.fit(train, valid, saved=True, show_progress=False, callback_fn=keep_state)
    seconds = validations[-1][1]
    test_result = trainer.evaluate(test, load_best_model=True, show_progress=False)
    best = best_epoch(validations)
    print(json.dumps({"test": {k.lower(): float(v) for k, v in test_result.items()}, "best_epoch": best,
                      "epochs_run": len(validations), "seconds": seconds, "seconds_to_best": validations[best][1]}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])

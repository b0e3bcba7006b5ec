"""RecBole's SASRec on an atomic dataset, run by bench/peers.py inside its own virtualenv (it
imports RecBole, not this project). Prints one JSON line: test metrics, best epoch, epochs run,
seconds of training and seconds to the best epoch.

    python recbole_sasrec.py DATA_PATH DATASET SEED WORKDIR

RecBole's defaults for SASRec and training (hidden 64, inner 256, 2 layers and heads, dropout
0.5, CE over the full catalogue, Adam 1e-3, batch 2048, 300 epochs, stopping_step 10), with
the split taken from the files (as UniSRec runs it) and the best epoch picked on validation
Recall@10, as this project picks it.
"""
import json
import os
import sys
import time

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # RecBole's checkpoints hold its config

from recbole.config import Config  # noqa: E402
from recbole.data import create_dataset, data_preparation  # noqa: E402
from recbole.model.sequential_recommender import SASRec  # noqa: E402
from recbole.trainer import Trainer  # noqa: E402
from recbole.utils import init_seed  # noqa: E402


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
    validations, started = [], time.monotonic()
    validate = trainer._valid_epoch

    def timed_validation(*args, **kwargs):  # the score and the time of every epoch's validation
        out = validate(*args, **kwargs)
        validations.append((out[0], time.monotonic() - started))
        return out

    trainer._valid_epoch = timed_validation
    trainer.fit(train, valid, saved=True, show_progress=False)
    seconds = time.monotonic() - started
    test_result = trainer.evaluate(test, load_best_model=True, show_progress=False)
    best = max(range(len(validations)), key=lambda i: (validations[i][0], i))  # RecBole keeps the last of equals
    print(json.dumps({"test": {k.lower(): float(v) for k, v in test_result.items()}, "best_epoch": best,
                      "epochs_run": len(validations), "seconds": seconds, "seconds_to_best": validations[best][1]}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])

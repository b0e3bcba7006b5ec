"""Full-ranking evaluation (ant-method.md, 'Evaluation protocol') and paired comparisons.

Every item of the target catalogue is ranked for every user; the items of the user's input
sequence are excluded; one relevant item per user. Per-user metrics are kept, so that "A beats
B" comes with a paired bootstrap confidence interval over users.

One masking rule serves evaluation and serving (`exclude_seen`, used by `recommend` too): the
items of the history are never recommended, so a target that repeats a history item (repeat
consumption) is a miss, exactly as the `recommendations` table shows it. RecBole masks history
the same way for general recommenders, but for a sequential model it masks nothing (its
FullSortEvalDataLoader passes no history), so a repeat can be a hit there; `exclude` reproduces
that protocol (bench/peers.py). A score that is not finite (NaN, ±inf) ranks last.

Ties are counted as a random tie-break would count them, in expectation: the target sits
uniformly at one of the places `greater + 1 … greater + ties + 1`, and each metric is its mean
over those places. Real catalogues hold many items with identical features (same title, no
image, no price), and a model that cannot tell them apart must not be credited with ranking
the target first among them: constant scores give exactly the metrics of a random ranking.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ant_model.data import history_batch, pad

CUTOFFS = (10, 50)
METRICS = tuple(f"{m}@{k}" for k in CUTOFFS for m in ("recall", "ndcg"))
SELECT_ON = "recall@10"  # the validation metric that picks the best epoch and the served model
# Scores this many float32 steps apart (relative to the target's score) are a tie: identical
# items can differ in the last bits of a matrix product.
TIE_ULPS = 8
# `greater` of a target that can never be recommended (seen, or scored non-finite): past any cutoff
NEVER = np.iinfo(np.int32).max

# histories [B, T] (right-padded item ids) → scores [B, n_items + 1] (column 0 is padding)
Scorer = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Evaluation:
    greater: np.ndarray  # per user: candidates scored above the target
    ties: np.ndarray     # per user: candidates scored the same as the target

    @property
    def ranks(self) -> np.ndarray:
        """Expected 1-based rank of each user's target under a random tie-break."""
        return 1 + self.greater + self.ties / 2

    def per_user(self, metric: str) -> np.ndarray:
        """The metric of each user, averaged over the places a random tie-break gives."""
        name, k = metric.split("@")
        k = int(k)
        places = self.ties + 1.0  # the target could be at any of these
        if name == "recall":
            return np.clip(k - self.greater, 0, places) / places
        if name == "ndcg":
            gain = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))])  # gain[r] = Σ_{1..r}
            last = np.minimum(self.greater + places, k).astype(int)
            first = np.minimum(self.greater, k).astype(int)
            return (gain[last] - gain[first]) / places
        raise ValueError(f"unknown metric {metric!r}")

    def metrics(self) -> dict[str, float]:
        return {m: float(self.per_user(m).mean()) if len(self.greater) else 0.0 for m in METRICS}

    def save(self, path) -> None:
        np.savez(path, greater=self.greater, ties=self.ties)

    @classmethod
    def load(cls, path) -> "Evaluation":
        with np.load(path) as data:
            return cls(data["greater"], data["ties"])


def exclude_seen(scores: torch.Tensor, seen: list[np.ndarray]) -> torch.Tensor:
    """`scores` [B, n_items + 1] with every non-finite score, the padding column 0 and each
    row's `seen` items set to -inf, in place: what may never be recommended, and what no model
    may win with (NaN compares as neither greater nor smaller, which would rank it first)."""
    scores.masked_fill_(~torch.isfinite(scores), float("-inf"))
    scores.scatter_(1, pad([np.append(s, 0) for s in seen]).to(scores.device), float("-inf"))
    return scores


@torch.inference_mode()
def rank_targets(score: Scorer, examples: list[tuple[np.ndarray, int]], batch_size: int,
                 max_len: int, device: torch.device | str = "cpu",
                 exclude: list[np.ndarray] | None = None) -> Evaluation:
    """Where each example's target falls among all items, the whole history excluded.

    `score` sees the last `max_len` history items; the exclusion covers all of them (or, to
    reproduce another tool's protocol, the items of `exclude`, one array per example)."""
    greater, ties = [], []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        masked = exclude[start:start + batch_size] if exclude is not None else [h for h, _ in chunk]
        scores = exclude_seen(score(history_batch([h for h, _ in chunk], max_len).to(device)).float(), masked)
        targets = torch.tensor([t for _, t in chunk], device=scores.device)
        target_scores = scores.gather(1, targets[:, None])
        scores.scatter_(1, targets[:, None], float("-inf"))  # the target is not its own competitor
        missed = torch.isneginf(target_scores[:, 0])  # masked (seen) or not finite: never recommended
        target_scores = torch.where(missed[:, None], 0.0, target_scores)
        tolerance = target_scores.abs().clamp(min=1.0) * torch.finfo(scores.dtype).eps * TIE_ULPS
        distance = scores - target_scores
        greater.append(torch.where(missed, NEVER, (distance > tolerance).sum(dim=1)).cpu().numpy())
        ties.append(torch.where(missed, 0, (distance.abs() <= tolerance).sum(dim=1)).cpu().numpy())
    if not greater:
        return Evaluation(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    return Evaluation(np.concatenate(greater), np.concatenate(ties))


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_resamples: int = 1000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float, float]:
    """(mean of a - b, low, high): a confidence interval over users for a per-user metric."""
    diff = np.asarray(a, float) - np.asarray(b, float)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(n_resamples, len(diff)))].mean(axis=1)
    tail = (1 - level) / 2
    return float(diff.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))

"""Training data of one domain (or several merged) as arrays and padded batches.

Built from plain arrays (the warehouse loads them), so this module needs neither DuckDB
nor files. Item 0 is padding in every table; features of a missing modality are zeros.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class DomainData:
    name: str
    n_items: int                     # item ids are 1 … n_items; 0 is padding
    features: dict[str, np.ndarray]  # modality → [n_items + 1, dim] float32, row 0 zeros
    has: dict[str, np.ndarray]       # modality → [n_items + 1] bool
    train: list[np.ndarray]          # each user's training sequence (item ids, 1-based)
    valid: list[tuple[np.ndarray, int]] = field(default_factory=list)  # (history, target)
    test: list[tuple[np.ndarray, int]] = field(default_factory=list)

    @property
    def feature_dims(self) -> dict[str, int]:
        return {m: f.shape[1] for m, f in self.features.items()}

    def tensors(self, device: torch.device) -> dict[str, torch.Tensor]:
        return {m: torch.from_numpy(f).to(device) for m, f in self.features.items()}


def merge(domains: list[DomainData], name: str = "pretrain") -> DomainData:
    """Several domains as one catalogue: item ids offset per domain, training splits only
    (plus valid, to monitor), features stacked. Every domain must have the same modalities."""
    modalities = set(domains[0].features)
    for d in domains:
        if set(d.features) != modalities or d.feature_dims != domains[0].feature_dims:
            raise ValueError(f"domain {d.name} has features {d.feature_dims}, "
                             f"{domains[0].name} has {domains[0].feature_dims}: encode both alike")
    offsets = np.cumsum([0] + [d.n_items for d in domains])

    def shift(seq: np.ndarray, k: int) -> np.ndarray:
        return np.where(seq > 0, seq + offsets[k], 0)

    return DomainData(
        name, int(offsets[-1]),
        {m: np.concatenate([domains[0].features[m][:1]] + [d.features[m][1:] for d in domains])
         for m in modalities},
        {m: np.concatenate([domains[0].has[m][:1]] + [d.has[m][1:] for d in domains]) for m in modalities},
        [shift(s, k) for k, d in enumerate(domains) for s in d.train],
        [(shift(h, k), int(t + offsets[k])) for k, d in enumerate(domains) for h, t in d.valid],
    )


def windows(sequence: np.ndarray, max_len: int) -> list[np.ndarray]:
    """Cut a training sequence into pieces of at most L + 1 items (L inputs, L targets), so
    that every item after the first is a target exactly once."""
    if len(sequence) <= max_len + 1:
        return [sequence]
    starts = range(0, len(sequence) - 1, max_len)
    return [sequence[s:s + max_len + 1] for s in starts if len(sequence[s:s + max_len + 1]) > 1]


def pad(rows: list[np.ndarray]) -> torch.Tensor:
    """Right-padded [B, longest] int64 tensor."""
    out = np.zeros((len(rows), max(len(r) for r in rows)), dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return torch.from_numpy(out)


def training_batches(sequences: list[np.ndarray], batch_size: int, max_len: int,
                     rng: np.random.Generator, shard: tuple[int, int] = (0, 1)
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, targets) [B, T] batches in random order, each holding about `batch_size`
    target positions, i.e. (prefix → next item) examples, as RecBole and UniSRec count a batch.

    Sequences are packed by length (ties in random order), so each batch is padded only to its
    own longest: lengths are long-tailed, and a random batch would almost always hold one long
    sequence and pad every other to it. A batch closes once its targets reach `batch_size`
    (at most L - 1 over it). `shard = (rank, world)` gives a process its share (same batch
    count on every rank)."""
    pieces = [w for s in sequences if len(s) > 1 for w in windows(s, max_len)]
    if not pieces:
        return
    lengths = np.array([len(p) for p in pieces])
    by_length = np.lexsort((rng.random(len(pieces)), lengths))
    targets = lengths[by_length] - 1
    batch_of = (np.cumsum(targets) - targets) // batch_size  # the batch each piece falls in
    bounds = np.flatnonzero(np.diff(batch_of)) + 1
    batches = np.split(by_length, bounds)
    rank, world = shard
    if world > 1:
        per_rank = len(batches) // world
        batches = [b for n, b in enumerate(batches[:per_rank * world]) if n % world == rank]
    for n in rng.permutation(len(batches)):
        batch = pad([pieces[i] for i in batches[n]])
        yield batch[:, :-1], batch[:, 1:]


def history_batch(histories: list[np.ndarray], max_len: int) -> torch.Tensor:
    """The last L items of each history, right-padded (an empty history becomes [pad])."""
    return pad([h[-max_len:] if len(h) else np.zeros(1, dtype=np.int64) for h in histories])

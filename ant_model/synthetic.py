"""A synthetic multi-domain benchmark with sequential structure shared across domains.

Items belong to latent types; an item's text, image and price features are noisy images of
its type's latent vector under projections shared by all domains (each domain distorts them
by `shift` and adds its own offset, as real domains differ). Every domain's users follow one
of two patterns, with probability `p_rule` per step (otherwise a random type):

- "cycle": each user cycles through a few types of their own (period 2 to 4), so the next
  item is of the type that followed the last item's type earlier in the sequence. The
  pattern is domain-agnostic (it holds in any item space), which is what re-learning
  assumes: the pre-trained Transformer applies it through freshly learned adaptors.
- "rule": one fixed type-transition table, next = (a * current + b * previous + c) mod K.
  It is tied to the type identities, so it transfers only through the pre-trained item
  space (fine-tuning), not through re-learned adaptors.

Auxiliary domains are large; the target is sparse, so a model trained from scratch on the
target must learn the pattern from a few users.
"""
from __future__ import annotations

import numpy as np

from ant_model.data import DomainData


PATTERNS = ("cycle", "rule")
PERIODS = (2, 4)
RULE = (1, 2, 3)


def _type_sequence(pattern: str, rng: np.random.Generator, n: int, k: int, p_rule: float) -> list[int]:
    """The latent types of one user's n items."""
    if pattern == "cycle":
        cycle = rng.choice(k, size=int(rng.integers(PERIODS[0], PERIODS[1] + 1)), replace=False)
        return [int(cycle[j % len(cycle)]) if rng.random() < p_rule else int(rng.integers(0, k)) for j in range(n)]
    if pattern != "rule":
        raise ValueError(f"unknown pattern {pattern!r}; one of {PATTERNS}")
    a, b, c = RULE
    types = [int(t) for t in rng.integers(0, k, size=2)]
    while len(types) < n:
        follow = rng.random() < p_rule
        types.append((a * types[-1] + b * types[-2] + c) % k if follow else int(rng.integers(0, k)))
    return types


def _domain(name: str, rng: np.random.Generator, latent: np.ndarray, projections: dict[str, np.ndarray],
            users: int, items_per_type: int, length: tuple[int, int], p_rule: float,
            noise: float, shift: float, pattern: str) -> DomainData:
    k = len(latent)
    item_type = np.repeat(np.arange(k), items_per_type)  # item i + 1 has type item_type[i]
    n_items = len(item_type)
    features, has = {}, {}
    for m, shared in projections.items():
        # Each domain sees the latent types through its own distortion of the shared projection.
        proj = shared + rng.normal(scale=shift / np.sqrt(shared.shape[1]), size=shared.shape)
        offset = rng.normal(scale=0.3, size=proj.shape[0])
        vectors = latent[item_type] @ proj.T + offset + rng.normal(scale=noise, size=(n_items, proj.shape[0]))
        features[m] = np.vstack([np.zeros((1, proj.shape[0])), vectors]).astype(np.float32)
        has[m] = np.r_[False, np.ones(n_items, dtype=bool)]
    by_type = [np.flatnonzero(item_type == t) + 1 for t in range(k)]
    train, valid, test = [], [], []
    for _ in range(users):
        types = _type_sequence(pattern, rng, int(rng.integers(length[0], length[1] + 1)), k, p_rule)
        seq, seen = [], set()
        for t in types:  # a user never repeats an item (as after the ingest's de-duplication)
            choices = [i for i in by_type[t] if i not in seen] or list(by_type[t])
            item = int(rng.choice(choices))
            seen.add(item)
            seq.append(item)
        seq = np.array(seq, dtype=np.int64)
        train.append(seq[:-2])
        valid.append((seq[:-2], int(seq[-2])))
        test.append((seq[:-1], int(seq[-1])))
    return DomainData(name, n_items, features, has, train, valid, test)


def make_benchmark(seed: int = 0, n_types: int = 24, latent_dim: int = 16, aux_domains: int = 3,
                   aux_users: int = 1500, target_users: int = 150, items_per_type: int = 6,
                   dims: dict[str, int] | None = None, length: tuple[int, int] = (6, 12),
                   p_rule: float = 0.9, noise: float = 0.2, shift: float = 0.0, pattern: str = "cycle"
                   ) -> tuple[list[DomainData], DomainData]:
    """(auxiliary domains, sparse target domain); the same seed gives the same data."""
    rng = np.random.default_rng(seed)
    dims = dims or {"text": 32, "image": 32, "price": 8}
    latent = rng.normal(size=(n_types, latent_dim))
    projections = {m: rng.normal(size=(d, latent_dim)) / np.sqrt(latent_dim) for m, d in dims.items()}
    aux = [_domain(f"aux{i}", rng, latent, projections, aux_users, items_per_type, length, p_rule, noise,
                   shift, pattern) for i in range(aux_domains)]
    target = _domain("target", rng, latent, projections, target_users, items_per_type, length, p_rule,
                     noise, shift, pattern)
    return aux, target

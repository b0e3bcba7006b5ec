"""A synthetic multi-domain benchmark with sequential structure shared across domains.

Items belong to latent types; an item's text, image and price features are noisy images of
its type's latent vector under projections shared by all domains (plus a per-domain offset,
as real domains differ). Users move between types by one second-order rule shared by every
domain: next = (a * current + b * previous + c) mod K, with probability `p_rule`. Auxiliary
domains are large; the target is sparse. A model that learned the rule on the auxiliary
domains should need little target data to apply it there; one trained from scratch on the
target must learn the rule from a few users.
"""
from __future__ import annotations

import numpy as np

from ant_model.data import DomainData


def _domain(name: str, rng: np.random.Generator, latent: np.ndarray, projections: dict[str, np.ndarray],
            users: int, items_per_type: int, length: tuple[int, int], p_rule: float,
            rule: tuple[int, int, int], noise: float, shift: float) -> DomainData:
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
    a, b, c = rule
    train, valid, test = [], [], []
    for _ in range(users):
        n = rng.integers(length[0], length[1] + 1)
        types = list(rng.integers(0, k, size=2))
        while len(types) < n:
            follow = rng.random() < p_rule
            types.append((a * types[-1] + b * types[-2] + c) % k if follow else rng.integers(0, k))
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
    return DomainData(name, features, has, train, valid, test)


def make_benchmark(seed: int = 0, n_types: int = 24, latent_dim: int = 16, aux_domains: int = 3,
                   aux_users: int = 1500, target_users: int = 150, items_per_type: int = 6,
                   dims: dict[str, int] | None = None, length: tuple[int, int] = (6, 12),
                   p_rule: float = 0.9, noise: float = 0.2, shift: float = 0.0
                   ) -> tuple[list[DomainData], DomainData]:
    """(auxiliary domains, sparse target domain); the same seed gives the same data."""
    rng = np.random.default_rng(seed)
    dims = dims or {"text": 32, "image": 32, "price": 8}
    latent = rng.normal(size=(n_types, latent_dim))
    projections = {m: rng.normal(size=(d, latent_dim)) / np.sqrt(latent_dim) for m, d in dims.items()}
    rule = (1, 2, 3)
    aux = [_domain(f"aux{i}", rng, latent, projections, aux_users, items_per_type, length, p_rule, rule, noise,
                   shift) for i in range(aux_domains)]
    target = _domain("target", rng, latent, projections, target_users, items_per_type, length, p_rule,
                     rule, noise, shift)
    return aux, target

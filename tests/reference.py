"""An independent, plain-Python version of the ingest filter, to check the SQL against."""
from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

KEYS = {"2018": ("reviewerID", "asin", "overall", "unixReviewTime", 1, "asin"),
        "2023": ("user_id", "parent_asin", "rating", "timestamp", 1000, "parent_asin")}


def _records(path: Path):
    with gzip.open(path, "rt") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                yield rec


def reference_sequences(reviews: Path, meta: Path, release: str, k: int) -> dict[str, list[str]]:
    """user id → item ids in time order, after meta filter, de-duplication and k-core."""
    user_key, item_key, rating_key, ts_key, per_second, meta_key = KEYS[release]
    known = {r[meta_key] for r in _records(meta) if r.get(meta_key)}
    earliest: dict[tuple[str, str], int] = {}
    for r in _records(reviews):
        user, item, ts = r.get(user_key), r.get(item_key), r.get(ts_key)
        try:
            float(r.get(rating_key))
        except (TypeError, ValueError):
            continue
        if not user or not item or ts is None or item not in known:
            continue
        ts = int(ts)  # the release's own precision orders a history (2023: milliseconds)
        earliest[(user, item)] = min(ts, earliest.get((user, item), ts))
    pairs = dict(earliest)
    while True:
        users = Counter(u for u, _ in pairs)
        items = Counter(i for _, i in pairs)
        kept = {p: t for p, t in pairs.items() if users[p[0]] >= k and items[p[1]] >= k}
        if len(kept) == len(pairs):
            break
        pairs = kept
    sequences: dict[str, list[tuple[int, str]]] = {}
    for (user, item), ts in pairs.items():
        sequences.setdefault(user, []).append((ts, item))
    return {u: [i for _, i in sorted(v)] for u, v in sequences.items()}


def warehouse_sequences(con, domain: str) -> dict[str, list[str]]:
    """The same mapping, read back from the warehouse tables."""
    items = dict(con.execute("SELECT item_idx, item_id FROM item_index WHERE domain = ?", [domain]).fetchall())
    users = dict(con.execute("SELECT user_idx, user_id FROM user_index WHERE domain = ?", [domain]).fetchall())
    rows = con.execute("SELECT user_idx, item_idxs FROM sequences WHERE domain = ?", [domain]).fetchall()
    return {users[u]: [items[i] for i in seq] for u, seq in rows}

"""Frozen item features for one domain: text, image and price vectors into the warehouse.

`featurize_domain` is plain Python (tests call it directly); the Prefect task wraps it.
For each modality the input of every item is hashed; items whose hash and encoder id match
the stored row keep their vector, only the rest are encoded. The task is cached on the
domain's data fingerprint and the features config, and runs again while some image fetches
failed transiently (they may succeed now).
"""
from __future__ import annotations

import functools
import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from prefect import task

from ant_config import AntConfig, ImageEncoderConfig, TextEncoderConfig
from encoders.image import ImageEncoder
from encoders.price import PriceEncoder
from encoders.text import TextEncoder
from tasks.caching import keyed
from warehouse import features as store
from warehouse.images import fetch_images, image_path, pending_retries
from warehouse.training import fingerprint
from warehouse.store import Warehouse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureSummary:
    domain: str
    modality: str
    encoder_id: str
    items: int
    encoded: int
    reused: int
    with_feature: int
    seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


@functools.lru_cache(maxsize=2)
def text_encoder(cfg: TextEncoderConfig, device: str) -> TextEncoder:
    return TextEncoder(cfg, device)


@functools.lru_cache(maxsize=2)
def image_encoder(cfg: ImageEncoderConfig, device: str) -> ImageEncoder:
    return ImageEncoder(cfg, device)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _update(wh: Warehouse, domain: str, modality: str, encoder_id: str, dim: int,
            item_ids: list[str], hashes: list[str], has: np.ndarray,
            encode: Callable[[np.ndarray], np.ndarray]):
    """(new file or None when nothing changed, summary). `encode(indices)` gives the vectors
    of the items at `indices` (only items with `has` are asked for)."""
    started = time.monotonic()
    vectors = np.zeros((len(item_ids), dim), dtype=np.float32)
    reuse = np.zeros(len(item_ids), dtype=bool)
    previous = store.stored(wh, domain, modality)
    if previous is not None:
        rows, table = previous
        old_enc, old_hash = table.column("encoder_id").to_pylist(), table.column("content_hash").to_pylist()
        old_vectors = store.vectors_of(table)
        for i, (item, h) in enumerate(zip(item_ids, hashes)):
            r = rows.get(item)
            if r is not None and old_enc[r] == encoder_id and old_hash[r] == h:
                reuse[i] = True
                vectors[i] = old_vectors[r]
        if reuse.all() and len(rows) == len(item_ids):
            return None, FeatureSummary(domain, modality, encoder_id, len(item_ids), 0, len(item_ids),
                                        int(has.sum()), time.monotonic() - started)
    todo = np.flatnonzero(~reuse & has)
    if len(todo):
        vectors[todo] = encode(todo)
    path = store.write(wh, domain, modality, item_ids, encoder_id, hashes, has, vectors)
    summary = FeatureSummary(domain, modality, encoder_id, len(item_ids), len(todo),
                             int(reuse.sum()), int(has.sum()), time.monotonic() - started)
    log.info("%s %s: %d encoded, %d reused, %d of %d items have one", domain, modality,
             summary.encoded, summary.reused, summary.with_feature, summary.items)
    return path, summary


def featurize_domain(config: AntConfig, domain: str) -> list[FeatureSummary]:
    wh = Warehouse(config.home)
    cfg = config.features
    items = store.catalogue(wh, domain)
    item_ids = items.column("item_id").to_pylist()
    files, summaries = {}, []

    texts = items.column("text").to_pylist()
    text = text_encoder(cfg.text, cfg.device)
    path, s = _update(wh, domain, "text", text.id, text.dim, item_ids, [_sha(t) for t in texts],
                      np.array([bool(t) for t in texts], dtype=bool),
                      lambda idx: text.encode([texts[i] for i in idx]))
    files["text_features"], summaries = path, [s]

    urls = items.column("image_urls").to_pylist()
    fetched = fetch_images(wh, [u for us in urls for u in us], cfg.fetch)
    shas = [[fetched[u].sha256 for u in us if fetched[u].sha256] for us in urls]
    image = image_encoder(cfg.image, cfg.device)
    path, s = _update(wh, domain, "image", image.id, image.dim, item_ids,
                      [_sha("|".join(s)) for s in shas], np.array([bool(s) for s in shas], dtype=bool),
                      lambda idx: image.encode_items([[image_path(wh, h) for h in shas[i]] for i in idx])[0])
    files["image_features"] = path
    summaries.append(s)

    prices = np.array([np.nan if p is None else p for p in items.column("price").to_pylist()], dtype=float)
    price = PriceEncoder(cfg.price).fit(prices)
    encoded, has_price = price.encode(prices)
    path, s = _update(wh, domain, "price", price.id, price.dim, item_ids, [repr(p) for p in prices],
                      has_price, lambda idx: encoded[idx])
    files["price_features"] = path
    summaries.append(s)

    changed = {table: p for table, p in files.items() if p is not None}
    if changed:
        wh.publish(domain, changed, {"price_encoders": store.price_encoder_row(domain, price.id, price.state())})
    return summaries


def _domain_content(parameters: dict) -> list:
    config, domain = parameters["config"], parameters["domain"]
    wh = Warehouse(config.home)
    retry = uuid.uuid4().hex if pending_retries(wh, domain) else None  # never a cache hit
    return [domain, fingerprint(wh, domain), config.features.model_dump(), retry]


@task(name="features", task_run_name="features {domain}", cache_key_fn=keyed("features", _domain_content))
def featurize(config: AntConfig, domain: str) -> list[dict]:
    return [s.as_dict() for s in featurize_domain(config, domain)]

"""Frozen item features for one domain: text, image and price vectors into the warehouse.

For each modality the input of every item is hashed; items whose hash and encoder id match
the stored row keep their vector, only the rest are encoded.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from ant_config import ImageEncoderConfig, TextEncoderConfig
from encoders.image import ImageEncoder
from encoders.price import PriceEncoder
from encoders.text import TextEncoder
from services.context import Context
from warehouse import features as store
from warehouse.images import fetch_images, image_path
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


def featurize_domain(ctx: Context, domain: str) -> list[FeatureSummary]:
    wh = ctx.warehouse
    cfg = ctx.config.features
    items = store.catalogue(wh, domain)
    item_ids = items.column("item_id").to_pylist()
    files, summaries = {}, []

    rows = {}
    if "text" in cfg.modalities:
        texts = items.column("text").to_pylist()
        text = text_encoder(cfg.text, cfg.device)
        files["text_features"], s = _update(wh, domain, "text", text.id, text.dim, item_ids, [_sha(t) for t in texts],
                                            np.array([bool(t) for t in texts], dtype=bool),
                                            lambda idx: text.encode([texts[i] for i in idx]))
        summaries.append(s)
    if "image" in cfg.modalities:
        urls = items.column("image_urls").to_pylist()
        fetched = fetch_images(wh, [u for us in urls for u in us], cfg.fetch)
        shas = [[fetched[u].sha256 for u in us if fetched[u].sha256] for us in urls]
        image = image_encoder(cfg.image, cfg.device)
        files["image_features"], s = _update(
            wh, domain, "image", image.id, image.dim, item_ids,
            [_sha("|".join(s)) for s in shas], np.array([bool(s) for s in shas], dtype=bool),
            lambda idx: image.encode_items([[image_path(wh, h) for h in shas[i]] for i in idx])[0])
        summaries.append(s)
    if "price" in cfg.modalities:
        prices = np.array([np.nan if p is None else p for p in items.column("price").to_pylist()], dtype=float)
        price = PriceEncoder(cfg.price).fit(prices)
        encoded, has_price = price.encode(prices)
        files["price_features"], s = _update(wh, domain, "price", price.id, price.dim, item_ids,
                                             [repr(p) for p in prices], has_price, lambda idx: encoded[idx])
        summaries.append(s)
        rows["price_encoders"] = store.price_encoder_row(domain, price.id, price.state())

    changed = {table: p for table, p in files.items() if p is not None}
    if changed:
        wh.publish(domain, changed, rows)
    return summaries

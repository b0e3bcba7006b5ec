"""Frozen item features for one domain: text, image and price vectors into the warehouse.

For each modality the input of every item is hashed; items whose hash and encoder id match
the stored row keep their vector, only the rest are encoded. The work streams in chunks of
`features.chunk_items`, so memory does not grow with the domain. Imported datasets are encoded
like categories (their `items.text` is the text input), except a modality whose vectors came
with the import: those are kept unless `features.replace_imported` is set.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ant_config.errors import UserError
from services.context import Context
from warehouse import features as store
from warehouse.images import fetch_images, image_path

if TYPE_CHECKING:  # the encoders import torch or scikit-learn: only once something is encoded
    from ant_config import ImageEncoderConfig, TextEncoderConfig
    from encoders.image import ImageEncoder
    from encoders.text import TextEncoder

log = logging.getLogger(__name__)


class FeatureError(UserError, ValueError):
    """An encoder produced what no model may train on."""

# What each modality's input is, for "nothing to encode: no item has ..."
INPUT_NAMES = {"text": "text", "image": "a fetched image", "price": "a price"}


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
    status: str  # encoded | unchanged | kept from the import | nothing to encode: <why>

    def as_dict(self) -> dict:
        return asdict(self)


@functools.lru_cache(maxsize=2)
def text_encoder(cfg: TextEncoderConfig, device: str) -> TextEncoder:
    from encoders.text import TextEncoder
    return TextEncoder(cfg, device)


@functools.lru_cache(maxsize=2)
def image_encoder(cfg: ImageEncoderConfig, device: str) -> ImageEncoder:
    from encoders.image import ImageEncoder
    return ImageEncoder(cfg, device)


def _update(ctx: Context, domain: str, modality: str, encoder_id: str, dim: int,
            encode: Callable[[pa.RecordBatch, np.ndarray], np.ndarray], inputs: Path, damaged: dict[str, str]):
    """(new file or None when nothing changed, summary), streamed in `features.chunk_items`
    chunks: stored vectors whose encoder and input hash still match are kept (unless their file
    is `damaged`), `encode(batch, rows)` gives the vectors of the batch's other rows that have
    an input."""
    wh, started = ctx.warehouse, time.monotonic()
    old = store.stored(wh, domain, modality, damaged)
    total = pq.ParquetFile(inputs).metadata.num_rows
    if old is not None and store.reusable(wh, inputs, old, encoder_id) == (total, total):
        with_feature = pq.read_table(inputs, columns=["has"]).column("has").to_numpy(zero_copy_only=False).sum()
        return None, FeatureSummary(domain, modality, encoder_id, total, 0, total, int(with_feature),
                                    time.monotonic() - started, _status(0, int(with_feature), modality))
    encoded = reused = with_feature = 0
    with store.FeatureWriter(wh, domain, modality) as writer:
        for batch in store.input_batches(inputs, ctx.config.features.chunk_items):
            ids, hashes = batch.column("item_id").to_pylist(), batch.column("content_hash").to_pylist()
            has = batch.column("has").to_numpy(zero_copy_only=False)
            previous = store.previous_vectors(wh, old, batch, encoder_id) if old is not None else {}
            vectors = np.zeros((len(ids), dim), dtype=np.float32)
            keep = np.array([previous.get(item, ("",))[0] == h for item, h in zip(ids, hashes)], dtype=bool)
            for row in np.flatnonzero(keep):
                vectors[row] = previous[ids[row]][1]
            todo = np.flatnonzero(~keep & has)
            if len(todo):
                vectors[todo] = encode(batch, todo)
                finite = np.isfinite(vectors[todo]).all(axis=1)
                if not finite.all():
                    row = todo[np.flatnonzero(~finite)[0]]
                    raise FeatureError(f"{domain} {modality}: the encoder {encoder_id} gave a non-finite vector "
                                       f"(NaN or inf) for item {ids[row]}; nothing was stored. Check the encoder's "
                                       f"weights and its input for that item")
            writer.write(ids, encoder_id, hashes, has, vectors)
            encoded, reused, with_feature = encoded + len(todo), reused + int(keep.sum()), with_feature + int(has.sum())
            log.info("%s %s: %d/%d items (%d encoded, %d reused)", domain, modality, encoded + reused, total,
                     encoded, reused)
    summary = FeatureSummary(domain, modality, encoder_id, total, encoded, reused, with_feature,
                             time.monotonic() - started, _status(encoded, with_feature, modality))
    return writer.path, summary


def _status(encoded: int, with_feature: int, modality: str) -> str:
    if not with_feature:
        return f"nothing to encode: no item has {INPUT_NAMES[modality]}"
    return "encoded" if encoded else "unchanged"


def _rows(column: pa.Array, idx: np.ndarray) -> list:
    """The values of `column` at `idx`, as Python objects."""
    return column.take(pa.array(idx)).to_pylist()


@contextlib.contextmanager
def _staged(wh, domain: str, modality: str) -> Iterator[Path]:
    """The staged inputs of one modality, deleted afterwards."""
    path = store.stage_inputs(wh, domain, modality)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def featurize_domain(ctx: Context, domain: str) -> list[FeatureSummary]:
    """Encode what changed in `domain` for every configured modality, then publish the new files
    of the domain together."""
    wh, cfg = ctx.warehouse, ctx.config.features
    log.info("%s: encoding %s", domain, ", ".join(cfg.modalities))
    damaged = wh.heal_views(domain)
    files, rows, summaries = {}, {}, []
    if "image" in cfg.modalities:  # fetch first: the image inputs are the fetched files
        fetch_images(wh, store.image_urls(wh, domain), cfg.fetch)
    for modality in cfg.modalities:
        kept = None if cfg.replace_imported else store.imported(wh, domain, modality)
        if kept is not None:
            encoder_id, items, with_feature = kept
            summaries.append(FeatureSummary(domain, modality, encoder_id, items, 0, items, with_feature, 0.0,
                                            "kept from the import"))
            continue
        with _staged(wh, domain, modality) as inputs:
            if modality == "text":
                text = text_encoder(cfg.text, cfg.device)
                encoder_id, dim = text.id, text.dim
                encode = lambda batch, idx, text=text: text.encode(  # noqa: E731
                    _rows(batch.column("input"), idx))
            elif modality == "image":
                image = image_encoder(cfg.image, cfg.device)
                encoder_id, dim = image.id, image.dim
                encode = lambda batch, idx, image=image: image.encode_items(  # noqa: E731
                    [[image_path(wh, h) for h in shas] for shas in _rows(batch.column("input"), idx)])[0]
            else:
                from encoders.price import PriceEncoder
                price = PriceEncoder(cfg.price).fit(store.prices(inputs))
                encoder_id, dim = price.id, price.dim
                encode = lambda batch, idx, price=price: price.encode(  # noqa: E731
                    batch.column("input").to_numpy(zero_copy_only=False).astype(float)[idx])[0]
                rows["price_encoders"] = store.price_encoder_row(domain, price.id, price.state())
            path, summary = _update(ctx, domain, modality, encoder_id, dim, encode, inputs, damaged)
        summaries.append(summary)
        if path is not None:
            files[f"{modality}_features"] = path
    if files:
        wh.publish(domain, files, rows)
    return summaries

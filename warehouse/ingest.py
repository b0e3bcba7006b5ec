"""One domain from its two raw files to published warehouse tables.

parse (reviews + metadata) → filter + k-core → indices → sequences → splits, each table
written as a new Parquet file and published together, so a failure anywhere leaves the
domain's previous tables untouched. A domain whose raw files and filtering config are
unchanged (same fingerprint) is skipped.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import datetime, timezone
from dataclasses import asdict, dataclass
from pathlib import Path

from ant_config import Filtering, Ingest
from ant_config.releases import domain_name
from warehouse import parse, sequences
from warehouse.download import CorruptRawFile, DownloadRecord, invalidate
from warehouse.store import Warehouse, WarehouseError, sha256_of

log = logging.getLogger(__name__)

# Bump when the parsing or filtering SQL changes what it produces: every domain re-ingests.
INGEST_VERSION = 4  # 4: markup stripped before unescaping; 2023 histories ordered by milliseconds


class DomainShrinks(WarehouseError):
    """A new version of a domain that is empty, or much smaller than the published one."""


@dataclass(frozen=True)
class DomainSummary:
    domain: str
    status: str  # "ingested" | "unchanged"
    users: int
    items: int
    interactions: int
    raw_reviews: int
    rejected: int
    duplicate_meta_rows: int
    seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


def fingerprint(reviews: DownloadRecord, meta: DownloadRecord, filtering: Filtering) -> str:
    """Hash of the raw files' content and everything that shapes the tables built from them."""
    payload = {"reviews": reviews.sha256, "meta": meta.sha256, "filtering": filtering.model_dump(),
               "ingest_version": INGEST_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def published_fingerprint(wh: Warehouse, domain: str) -> str | None:
    published = published_state(wh, domain)
    return published[0] if published else None


def published_state(wh: Warehouse, domain: str) -> tuple[str, dict] | None:
    if not wh.db_path.exists():
        return None
    with wh.reader() as con:
        row = con.execute("SELECT d.fingerprint, d.raw_reviews, d.rejected, d.duplicate_meta_rows, "
                          "s.users, s.items, s.interactions FROM domains d "
                          "LEFT JOIN domain_stats s USING (domain) WHERE d.domain = ?", [domain]).fetchone()
    if row is None:
        return None
    keys = ("raw_reviews", "rejected", "duplicate_meta_rows", "users", "items", "interactions")
    return row[0], {k: v or 0 for k, v in zip(keys, row[1:])}


def refuse_shrinking(domain: str, interactions: int, users: int, published: tuple[str, dict] | None,
                      settings: Ingest, counts: dict, top: tuple | None) -> None:
    """Never publish an empty domain, nor one that lost more than `ingest.max_shrink` of its
    interactions, unless `ingest.allow_shrink` (`ant ingest --allow-shrink`)."""
    if settings.allow_shrink:
        return
    if interactions == 0 or users == 0:
        why = (f"; {top[1]} of them: {top[0]!r}, the first at {top[2]} line {top[3]}" if top else "")
        raise DomainShrinks(
            f"{domain}: the new data is empty after filtering ({counts['raw_reviews']} review lines, "
            f"{counts['rejected']} rejected{why}): nothing was published. Check the raw files (see the "
            f"rejects table), or pass --allow-shrink to publish it anyway")
    before = published[1]["interactions"] if published else 0
    if before and interactions < (1 - settings.max_shrink) * before:
        raise DomainShrinks(
            f"{domain}: the new data has {interactions} interactions, {1 - interactions / before:.0%} fewer "
            f"than the published {before} (more than ingest.max_shrink = {settings.max_shrink:.0%}): nothing "
            f"was published. If the source really shrank, pass --allow-shrink")


def ingest_domain(wh: Warehouse, release: str, category: str, reviews: DownloadRecord,
                  meta: DownloadRecord, filtering: Filtering, settings: Ingest) -> DomainSummary:
    domain = domain_name(release, category)
    started = time.monotonic()
    damaged = wh.heal_views(domain)
    fp = fingerprint(reviews, meta, filtering)
    published = published_state(wh, domain)
    if published is not None and published[0] == fp:
        if not damaged:
            log.info("%s: raw files and config unchanged, nothing to do", domain)
            return DomainSummary(domain, "unchanged", seconds=time.monotonic() - started, **published[1])
        log.warning("%s: repairing %d damaged files (%s)", domain, len(damaged), "; ".join(damaged))

    for record in (reviews, meta):  # the bytes verified at download, still
        if sha256_of(wh.home / record.path).hexdigest() != record.sha256:
            aside = invalidate(wh, record.url, wh.home / record.path)
            raise CorruptRawFile(aside, "its sha256 differs from the one recorded at download: the file "
                                        "changed on disk")
    staged: dict[str, Path] = {}
    con = wh.scratch(settings.threads_per_domain(), settings.duckdb_memory_limit)
    try:
        def stage(table: str, sql: str) -> str:
            path = wh.new_parquet_path(table, domain)
            staged[table] = path
            con.execute(f"COPY ({sql}) TO '{path}' (FORMAT parquet, COMPRESSION zstd)")
            return str(path)

        parse.prepare(con, text_max_chars=filtering.text_max_chars, price_max=filtering.price_max)
        try:
            parse.parse_reviews(con, release, wh.home / reviews.path, max_line_bytes=settings.max_line_bytes,
                                rating_range=(filtering.rating_min, filtering.rating_max), scratch=wh.tmp_dir)
            parse.parse_meta(con, release, wh.home / meta.path, max_line_bytes=settings.max_line_bytes,
                             max_images=filtering.max_images, scratch=wh.tmp_dir)
        except CorruptRawFile as exc:
            bad = reviews if exc.path == wh.home / reviews.path else meta
            invalidate(wh, bad.url, exc.path)
            raise
        counts = parse.parse_counts(con)
        log.info("%s: parsed %d reviews and %d metadata rows (%d rejected)", domain,
                 counts["raw_reviews"], counts["raw_items"], counts["rejected"])

        stage("interactions", parse.interactions_sql(domain))
        stage("items", parse.items_sql(domain))
        stage("rejects", parse.rejects_sql(domain, reviews.path, meta.path))
        rounds = sequences.filter_interactions(con, filtering.k_core)
        sequences.build_indices(con, domain)
        stage("item_index", sequences.item_index_sql())
        stage("user_index", sequences.user_index_sql())
        seqs = stage("sequences", sequences.sequences_sql(domain))
        stage("splits", sequences.splits_sql(seqs))
        users, items_kept, kept = con.execute("SELECT count(DISTINCT u), count(DISTINCT i), count(*) "
                                              "FROM kept").fetchone()
        refuse_shrinking(domain, kept, users, published, settings, counts, parse.dominant_reject(con))
    except BaseException:
        for path in staged.values():
            path.unlink(missing_ok=True)
        raise
    finally:
        con.close()

    wh.publish(domain, staged, {"domains": {
        "domain": domain, "release": release, "category": category, "fingerprint": fp,
        "ingested_at": datetime.now(timezone.utc), **counts}})
    seconds = time.monotonic() - started
    log.info("%s: %d users, %d items, %d interactions after %d-core (%d rounds) in %.1fs",
             domain, users, items_kept, kept, filtering.k_core, rounds, seconds)
    return DomainSummary(domain, "ingested", users, items_kept, kept, counts["raw_reviews"],
                         counts["rejected"], counts["duplicate_meta_rows"], seconds)

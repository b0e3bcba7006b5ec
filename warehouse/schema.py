"""The warehouse schema: Parquet-backed tables, native registry tables, views and migrations.

Large per-domain tables live in Parquet files (one file per table and domain, swapped
atomically by `Warehouse.publish`); DuckDB holds a manifest of the current files, views over
them, and small native tables (downloads, domains). `SCHEMA_VERSION` and `MIGRATIONS` keep
an existing `warehouse.duckdb` in step with the code.
"""
from __future__ import annotations

# Columns of each Parquet-backed table. A view with these columns exists even before the
# first file is published, so ad hoc queries never fail on an empty warehouse.
PARQUET_TABLES: dict[str, dict[str, str]] = {
    "interactions": {
        "domain": "VARCHAR", "user_id": "VARCHAR", "item_id": "VARCHAR",
        "rating": "DOUBLE", "ts": "BIGINT",
    },
    "items": {
        "domain": "VARCHAR", "item_id": "VARCHAR", "title": "VARCHAR", "brand": "VARCHAR",
        "categories": "VARCHAR[]", "price_raw": "VARCHAR", "price": "DOUBLE",
        "image_urls": "VARCHAR[]", "text": "VARCHAR",
    },
    "rejects": {
        "domain": "VARCHAR", "file": "VARCHAR", "line": "BIGINT", "reason": "VARCHAR",
        "snippet": "VARCHAR",
    },
    "item_index": {"domain": "VARCHAR", "item_id": "VARCHAR", "item_idx": "INTEGER"},
    "user_index": {"domain": "VARCHAR", "user_id": "VARCHAR", "user_idx": "INTEGER"},
    "sequences": {
        "domain": "VARCHAR", "user_idx": "INTEGER", "item_idxs": "INTEGER[]",
        "timestamps": "BIGINT[]", "length": "INTEGER",
    },
    "splits": {
        "domain": "VARCHAR", "user_idx": "INTEGER", "split": "VARCHAR",
        "history": "INTEGER[]", "target": "INTEGER",
    },
}

# Top-k items per user from a target's promoted model (`ant recommend --all`).
PARQUET_TABLES["recommendations"] = {
    "domain": "VARCHAR", "user_idx": "INTEGER", "user_id": "VARCHAR", "rank": "INTEGER", "item_idx": "INTEGER",
    "item_id": "VARCHAR", "score": "FLOAT", "model_version": "VARCHAR", "input": "VARCHAR",
}

# Frozen item features, one table per modality; `vector` is read back as FLOAT[d].
FEATURE_TABLES = {"text": "text_features", "image": "image_features", "price": "price_features"}
for _modality, _table in FEATURE_TABLES.items():
    PARQUET_TABLES[_table] = {
        "domain": "VARCHAR", "item_id": "VARCHAR", "encoder_id": "VARCHAR",
        "content_hash": "VARCHAR", f"has_{_modality}": "BOOLEAN", "vector": "FLOAT[]",
    }

SCHEMA_VERSION = 7

# Migration N brings a database from version N-1 to N. Append, never edit.
MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE schema_version (version INTEGER NOT NULL)""",
        """CREATE TABLE parquet_files (
            table_name VARCHAR NOT NULL, domain VARCHAR NOT NULL, path VARCHAR NOT NULL,
            rows BIGINT NOT NULL, published_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            PRIMARY KEY (table_name, domain))""",
        """CREATE TABLE downloads (
            url VARCHAR PRIMARY KEY, path VARCHAR NOT NULL, sha256 VARCHAR NOT NULL,
            size BIGINT NOT NULL, etag VARCHAR, last_modified VARCHAR,
            downloaded_at TIMESTAMPTZ NOT NULL, checked_at TIMESTAMPTZ NOT NULL)""",
        """CREATE TABLE domains (
            domain VARCHAR PRIMARY KEY, release VARCHAR NOT NULL, category VARCHAR NOT NULL,
            fingerprint VARCHAR NOT NULL, raw_reviews BIGINT, raw_items BIGINT,
            rejected BIGINT, duplicate_meta_rows BIGINT, ingested_at TIMESTAMPTZ NOT NULL)""",
    ],
    2: [
        # One row per image URL ever tried: its content hash (files live in ANT_HOME/images)
        # or why it failed. `transient` failures are tried again on the next run.
        """CREATE TABLE image_fetches (
            url VARCHAR PRIMARY KEY, sha256 VARCHAR, bytes BIGINT, reason VARCHAR,
            transient BOOLEAN NOT NULL, fetched_at TIMESTAMPTZ NOT NULL DEFAULT now())""",
        # The fitted price encoding of each domain, to re-apply it later.
        """CREATE TABLE price_encoders (
            domain VARCHAR PRIMARY KEY, encoder_id VARCHAR NOT NULL, state JSON NOT NULL)""",
    ],
    3: [
        # Every trained model: a content-hash version, never overwritten.
        """CREATE TABLE models (
            version VARCHAR PRIMARY KEY, kind VARCHAR NOT NULL, target VARCHAR, method VARCHAR,
            seed INTEGER, path VARCHAR NOT NULL, parent VARCHAR, lineage JSON NOT NULL,
            valid JSON, test JSON, flow_run_id VARCHAR, created_at TIMESTAMPTZ NOT NULL DEFAULT now())""",
        # The model that serves each target, and why it was chosen.
        """CREATE TABLE promotions (
            target VARCHAR PRIMARY KEY, version VARCHAR NOT NULL, reason VARCHAR NOT NULL,
            promoted_at TIMESTAMPTZ NOT NULL DEFAULT now())""",
    ],
    4: [
        # A random id per warehouse file: task caches key on it, so a new or re-created
        # warehouse never reuses results computed against another one.
        """CREATE TABLE identity (id VARCHAR NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT now())""",
        """INSERT INTO identity (id) SELECT uuid()::VARCHAR""",
    ],
    5: [],  # the `metrics` and `runs` views over the registry (created with every migration)
    6: [
        # How each model's training ended: best_epoch, epochs_run, stopped_by (patience | cap).
        """ALTER TABLE models ADD COLUMN training JSON""",
        # Small facts about this file, e.g. the home its views were written for (views_home).
        """CREATE TABLE settings (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)""",
    ],
    7: [
        # The sha256 of each published file, taken at publish, so `ant doctor` finds a file
        # changed since (a flipped bit a Parquet reader would not notice). NULL for files
        # published before this version: hashing them now would bless whatever they hold.
        """ALTER TABLE parquet_files ADD COLUMN sha256 VARCHAR""",
    ],
}

# Views over the tables above; rebuilt with the Parquet views on every publish.
DERIVED_VIEWS: dict[str, str] = {
    "item_features": """
        SELECT x.domain, x.item_id, x.item_idx,
               coalesce(t.has_text, false) AS has_text, coalesce(i.has_image, false) AS has_image,
               coalesce(p.has_price, false) AS has_price,
               t.vector AS text, i.vector AS image, p.vector AS price,
               t.encoder_id AS text_encoder, i.encoder_id AS image_encoder, p.encoder_id AS price_encoder
        FROM item_index x
        LEFT JOIN text_features t USING (domain, item_id)
        LEFT JOIN image_features i USING (domain, item_id)
        LEFT JOIN price_features p USING (domain, item_id)""",
    "image_failures": """
        SELECT x.domain, x.item_id, u.url, f.reason
        FROM item_index x JOIN items it USING (domain, item_id),
             unnest(it.image_urls) AS u(url)
        JOIN image_fetches f ON f.url = u.url
        WHERE f.sha256 IS NULL""",
    "domain_stats": """
        WITH seq AS (
            SELECT domain, count(*) AS users, sum(length) AS interactions, avg(length) AS mean_seq_len
            FROM sequences GROUP BY domain),
        cat AS (
            SELECT x.domain, count(*) AS items,
                   avg((coalesce(i.text, '') <> '')::INT) AS text_coverage,
                   avg((i.price IS NOT NULL)::INT) AS price_coverage,
                   avg((len(coalesce(i.image_urls, [])) > 0)::INT) AS image_coverage
            FROM item_index x LEFT JOIN items i USING (domain, item_id) GROUP BY x.domain)
        SELECT seq.domain, users, items, interactions,
               interactions / (users * items)::DOUBLE AS density,
               mean_seq_len, text_coverage, price_coverage, image_coverage
        FROM seq JOIN cat USING (domain) ORDER BY seq.domain""",
    # The registry's metrics in long form: one row per model, split and metric.
    "metrics": """
        SELECT m.version, m.kind, m.target, m.method, m.seed, s.split, e.key AS metric,
               e.value::DOUBLE AS value
        FROM models m, (VALUES ('valid'), ('test')) s(split),
             json_each(CASE s.split WHEN 'valid' THEN m.valid ELSE m.test END) e""",
    # What each Prefect flow run registered.
    "runs": """
        SELECT flow_run_id, min(created_at) AS started, max(created_at) AS finished,
               count(*) FILTER (WHERE kind = 'pretrain') AS pretrained,
               count(*) FILTER (WHERE kind = 'adapt') AS adapted,
               list(DISTINCT target ORDER BY target) FILTER (WHERE target IS NOT NULL) AS targets
        FROM models GROUP BY flow_run_id ORDER BY started""",
}

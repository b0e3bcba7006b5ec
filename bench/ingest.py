"""Ingest throughput: parse + filter + sequences on a synthetic category in the real 2018 format.

    python bench/ingest.py --reviews 5000000 [--categories 2] [--workdir DIR]

Generates (once, cached in --workdir) gzip JSON-lines review and metadata files shaped like
the public 2018 files (same keys, review text and summaries included), then times
`warehouse.ingest.ingest_domain` from the raw files to published tables, several categories
side by side when --categories > 1 (as the ingest flow does). Prints reviews/s, peak RSS and,
for reference, a bare DuckDB `read_json` scan of the same files.
"""
from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb

from ant_config import AntConfig
from warehouse.download import DownloadRecord
from warehouse.ingest import ingest_domain
from ant_config.releases import CATEGORIES
from warehouse.sources import source_files
from warehouse.store import Warehouse, sha256_of


def generate(dest: Path, category: str, reviews: int, seed: int) -> None:
    """Write `<cat>_5.json.gz` and `meta_<cat>.json.gz` with DuckDB (seconds, not minutes)."""
    items = max(reviews // 12, 10)
    users = max(reviews // 6, 10)
    files = {sf.kind: dest / sf.path for sf in source_files("2018", category)}
    for f in files.values():
        f.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"SELECT setseed({seed / 1000})")
    # Skewed popularity, like real data: a few heavy users and items, a long tail.
    con.execute(f"""COPY (
        SELECT 1.0 + floor(random() * 5) AS overall, true AS verified, '06 17, 2018' AS reviewTime,
               printf('A%013d', floor(pow(random(), 2) * {users})::BIGINT) AS reviewerID,
               printf('B%09d', floor(pow(random(), 1.5) * {items})::BIGINT) AS asin,
               'Reviewer ' || (i % 1000) AS reviewerName,
               repeat('This product is fine and arrived on time. ', 1 + (i % 8)::INT) AS reviewText,
               'Five stars' AS summary,
               1300000000 + floor(random() * 250000000)::BIGINT AS unixReviewTime,
               {{'Format:': ' Paperback'}} AS style
        FROM range({reviews}) t(i)) TO '{files["reviews"]}' (FORMAT json, COMPRESSION gzip)""")
    con.execute(f"""COPY (
        SELECT printf('B%09d', i) AS asin, 'Product &amp; thing number ' || i AS title,
               'Brand ' || (i % 500) AS brand, ['{category}', 'Sub ' || (i % 20)] AS category,
               CASE WHEN i % 3 = 0 THEN '' ELSE printf('$%d.%02d', 1 + i % 300, i % 100) END AS price,
               [printf('https://images-na.ssl-images-amazon.com/images/I/%dX._SX38_SY50_CR,0,0,38,50_.jpg', i)] AS imageURL,
               [printf('https://images-na.ssl-images-amazon.com/images/I/%dX.jpg', i)] AS imageURLHighRes
        FROM range({items}) t(i)) TO '{files["meta"]}' (FORMAT json, COMPRESSION gzip)""")
    con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reviews", type=int, default=5_000_000, help="reviews in total")
    parser.add_argument("--categories", type=int, default=1, help="split the reviews over N categories")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "ant-bench-ingest")
    parser.add_argument("--threads", type=int, default=None,
                        help="DuckDB threads per category (default: cores / categories)")
    args = parser.parse_args()

    categories = list(CATEGORIES["2018"][: args.categories])
    per_category = args.reviews // args.categories
    raw = args.workdir / f"raw-{args.reviews}-{args.categories}"
    if not raw.exists():
        started = time.monotonic()
        for seed, cat in enumerate(categories):
            generate(raw / "2018", cat, per_category, seed)
        print(f"generated {args.reviews:,} reviews in {time.monotonic() - started:.1f}s under {raw}")

    home = args.workdir / "home"
    shutil.rmtree(home, ignore_errors=True)
    wh = Warehouse(home)
    shutil.copytree(raw, wh.raw_dir)
    config = AntConfig.model_validate({"ingest": {"duckdb_threads": args.threads,
                                                  "parallel_domains": len(categories)}})

    def records(cat: str) -> dict[str, DownloadRecord]:
        out = {}
        for sf in source_files("2018", cat):
            path = wh.raw_dir / "2018" / sf.path
            out[sf.kind] = DownloadRecord(f"bench:{sf.path}", str(path.relative_to(wh.home)),
                                          sha256_of(path).hexdigest(), path.stat().st_size)
        return out

    recs = {cat: records(cat) for cat in categories}
    reviews_files = [str(wh.home / recs[c]["reviews"].path) for c in categories]
    started = time.monotonic()
    con = duckdb.connect()
    con.execute(f"SELECT count(*) FROM read_json({reviews_files}, format='newline_delimited', "
                f"columns={{reviewerID: 'VARCHAR', asin: 'VARCHAR', overall: 'DOUBLE', "
                f"unixReviewTime: 'BIGINT'}})").fetchone()
    bare = time.monotonic() - started
    con.close()

    def run(cat: str):
        return ingest_domain(wh, "2018", cat, recs[cat]["reviews"], recs[cat]["meta"],
                             config.filtering, config.ingest)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(categories)) as pool:
        summaries = list(pool.map(run, categories))
    seconds = time.monotonic() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kept = sum(s.interactions for s in summaries)
    print(f"bare read_json scan : {args.reviews / bare:,.0f} reviews/s ({bare:.1f}s)")
    print(f"ingest (parse+filter+sequences, {len(categories)} categor{'y' if len(categories) == 1 else 'ies'} side by side): "
          f"{args.reviews / seconds:,.0f} reviews/s ({seconds:.1f}s), {kept:,} interactions kept")
    print(f"peak RSS            : {peak_mb:,.0f} MB")


if __name__ == "__main__":
    main()

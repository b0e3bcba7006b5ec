"""Raw Amazon JSON lines (2018 or 2023) → the release-independent `interactions`, `items` and
`rejects` tables, streamed by DuckDB (a file is never held in memory whole).

Each raw line is read as text with its line number, then parsed with DuckDB's JSON
functions. A line that is not JSON, lacks a key, or has a value of the wrong type becomes a
`rejects` row (file, line, reason, first 200 characters) instead of failing the run.
"""
from __future__ import annotations

import ast
import gzip
import html
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb
from duckdb import sqltypes
import pyarrow as pa

from warehouse.download import CorruptRawFile
from warehouse.sql import literal

SNIPPET_CHARS = 200


@dataclass(frozen=True)
class ReviewFields:
    user: str
    item: str
    rating: str
    ts: str
    ts_per_second: int  # 1 for seconds, 1000 for milliseconds


REVIEW_FIELDS = {
    "2014": ReviewFields("reviewerID", "asin", "overall", "unixReviewTime", 1),
    "2018": ReviewFields("reviewerID", "asin", "overall", "unixReviewTime", 1),
    "2023": ReviewFields("user_id", "parent_asin", "rating", "timestamp", 1000),
}


def _unescape_entities(values: pa.Array) -> pa.Array:
    return pa.array([None if v is None else html.unescape(v) for v in values.to_pylist()],
                    type=pa.string())


def prepare(con: duckdb.DuckDBPyConnection, *, text_max_chars: int, price_max: float) -> None:
    """Register the cleaning functions this module's SQL uses on a scratch connection."""
    con.create_function("unescape_entities", _unescape_entities, [sqltypes.VARCHAR], sqltypes.VARCHAR,
                        type="arrow")
    # One field at a time: tags stripped (an unclosed tag ends at its field's end, never eating
    # the next field), then entities unescaped (in this order, so that escaped text such as
    # "&lt;Holiday Edition&gt;" is kept as "<Holiday Edition>", not taken for a tag), then
    # whitespace folded.
    con.execute("CREATE OR REPLACE TEMP MACRO strip_tags(s) AS regexp_replace(s, '</?[A-Za-z][^<>]*(>|$)', ' ', 'g')")
    con.execute(f"""
        CREATE OR REPLACE TEMP MACRO clean_text(s) AS
            left(trim(regexp_replace(
                 CASE WHEN contains(s, '&') THEN unescape_entities(strip_tags(s)) ELSE strip_tags(s) END,
                 '\\s+', ' ', 'g')), {int(text_max_chars)})""")
    # The item text: title (else the first description sentences), categories, brand.
    con.execute(f"""
        CREATE OR REPLACE TEMP MACRO item_text(title, categories, brand, description) AS
            left(trim(concat_ws(' ',
                 CASE WHEN coalesce(title, '') <> '' THEN title
                      ELSE coalesce(nullif(regexp_extract(description, '^(.*[.!?])(\\s|$)', 1), ''), description) END,
                 array_to_string(list_filter(categories, lambda c: c <> ''), ' '), brand)),
                 {int(text_max_chars)})""")
    # "$1,299.00" → 1299; "$5 - $9" → 7; numbers and numeric strings as they are; junk → NULL.
    con.execute(f"""
        CREATE OR REPLACE TEMP MACRO parse_price(s) AS (
            WITH m AS (SELECT regexp_extract(s,
                '^\\s*\\$?\\s*([0-9][0-9,]*(?:\\.[0-9]+)?)\\s*(?:-\\s*\\$?\\s*([0-9][0-9,]*(?:\\.[0-9]+)?))?\\s*$',
                ['lo', 'hi']) AS g),
            v AS (SELECT CASE WHEN g.hi <> '' THEN (replace(g.lo, ',', '')::DOUBLE + replace(g.hi, ',', '')::DOUBLE) / 2
                              WHEN g.lo <> '' THEN replace(g.lo, ',', '')::DOUBLE END AS p FROM m)
            SELECT CASE WHEN p > 0 AND p <= {float(price_max)} THEN p END FROM v)""")


READ_CHUNK = 8 << 20  # decompressed bytes scanned at once when looking for unreadable lines


def _open_raw(path: Path):
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def _extend(pending: bytes, overlong: bool, piece: bytes, limit: int) -> tuple[bytes, bool]:
    """The current line with `piece` appended; past `limit` only its start is kept."""
    if overlong:
        return pending, True
    pending += piece
    return (pending[:SNIPPET_CHARS], True) if len(pending) > limit else (pending, False)


def _judge(bad: dict, line: int, text: bytes, overlong: bool, limit: int) -> None:
    snippet = text[:SNIPPET_CHARS].decode("utf-8", "replace")
    if overlong:
        bad[line] = (f"line longer than ingest.max_line_bytes ({limit} bytes)", snippet)
        return
    try:
        text.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad[line] = (f"not UTF-8 ({exc.reason} at byte {exc.start})", snippet)


def _all_readable(lines: list[bytes], limit: int) -> bool:
    try:
        b"\n".join(lines).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return max(map(len, lines), default=0) <= limit


def unreadable_lines(path: Path, max_line_bytes: int) -> dict[int, tuple[str, str]]:
    """{line: (reason, snippet)} of the lines no text reader can take: invalid UTF-8, or longer
    than `max_line_bytes`. Streamed in bounded memory (an over-long line is never held whole);
    lines are looked at one by one only in chunks that hold such a line."""
    bad: dict[int, tuple[str, str]] = {}
    line, pending, overlong = 1, b"", False  # the current line: its number, start, and whether too long
    with _open_raw(path) as f:
        while chunk := f.read(READ_CHUNK):
            head, *body = chunk.split(b"\n")
            pending, overlong = _extend(pending, overlong, head, max_line_bytes)
            if not body:
                continue  # the current line goes on in the next chunk
            _judge(bad, line, pending, overlong, max_line_bytes)
            complete, tail = body[:-1], body[-1]
            if not _all_readable(complete, max_line_bytes):
                for n, text in enumerate(complete, line + 1):
                    _judge(bad, n, text, len(text) > max_line_bytes, max_line_bytes)
            line += 1 + len(complete)
            pending, overlong = _extend(b"", False, tail, max_line_bytes)
    if pending or overlong:  # a last line without a newline
        _judge(bad, line, pending, overlong, max_line_bytes)
    return bad


PLACEHOLDER = b"{}"  # stands in for an unreadable line: readable, and a line of its own


def readable_copy(path: Path, bad: dict[int, tuple[str, str]], folder: Path) -> Path:
    """An uncompressed copy of `path` with each unreadable line replaced by a placeholder, so
    line numbers stay those of the original."""
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / f"{path.name}.{uuid.uuid4().hex}.readable"
    line, placed = 1, 0
    with _open_raw(path) as f, open(copy, "wb") as out:
        while chunk := f.read(READ_CHUNK):
            for k, piece in enumerate(chunk.split(b"\n")):
                if k:  # a newline ended the line before this piece
                    out.write(b"\n")
                    line += 1
                if line not in bad:
                    out.write(piece)
                elif placed != line:  # a long bad line spans chunks: one placeholder
                    out.write(PLACEHOLDER)
                    placed = line
    return copy


def _lines(path: Path, max_line_bytes: int) -> str:
    """SQL for (line, raw): the file's lines, numbered from 1 in file order."""
    return (f"SELECT row_number() OVER () AS line, raw FROM read_csv({literal(str(path))}, "
            f"columns = {{'raw': 'VARCHAR'}}, delim = '\\x01', quote = '', escape = '', "
            f"header = false, auto_detect = false, max_line_size = {int(max_line_bytes) + 1})")


def _fields_fast(path: Path, fields: list[str], sql_type: str, max_line_bytes: int,
                 numbered: bool) -> str:
    """Top-level `fields` via DuckDB's JSON reader; fails on any malformed or unreadable line.

    Numbering the rows serialises the scan, so it is done only where row order matters."""
    columns = ", ".join(f"{literal(f)}: {literal(sql_type)}" for f in fields)
    names = ", ".join(f'"{f}"' for f in fields)
    line = "row_number() OVER ()" if numbered else "NULL::BIGINT"
    return (f"SELECT {line} AS line, NULL::VARCHAR AS raw, NULL::VARCHAR AS unreadable, false AS malformed, "
            f"{names} FROM read_json({literal(str(path))}, format = 'newline_delimited', "
            f"columns = {{{columns}}}, maximum_object_size = {int(max_line_bytes)})")


def _fields_by_line(path: Path, fields: list[str], sql_type: str, max_line_bytes: int) -> str:
    """The same columns, line by line: malformed lines become `malformed` rows, unreadable ones
    (the `unreadable` temp table) keep their reason; each with its line number."""
    extract = "json_extract_string" if sql_type == "VARCHAR" else "json_extract"
    paths = ", ".join(literal(f"$.{f}") for f in fields)
    names = ", ".join(f'v[{i + 1}] AS "{f}"' for i, f in enumerate(fields))
    return (f"SELECT line, coalesce(u.snippet, raw) AS raw, u.reason AS unreadable, v IS NULL AS malformed, {names} "
            f"FROM (SELECT line, raw, try({extract}(raw, [{paths}])) AS v FROM ({_lines(path, max_line_bytes)})) "
            f"LEFT JOIN unreadable u USING (line)")


def _parse(con, table: str, path: Path, fields: list[str], sql_type: str, select: str,
           max_line_bytes: int, numbered: bool, scratch: Path) -> None:
    """Create temp `table` from `select` (which reads `src`) over the file's fields.

    Real files are almost always clean, so the fast JSON reader goes first; only a file with
    malformed lines or rejected rows is read again line by line, to name each bad line. Lines
    no text reader takes (invalid UTF-8, over-long) are found first and read as empty lines."""
    fast = _fields_fast(path, fields, sql_type, max_line_bytes, numbered)
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS WITH src AS ({fast}) {select}")
        if con.execute(f"SELECT count(reason) FROM {table}").fetchone()[0] == 0:
            return
    except duckdb.Error:
        pass
    bad = unreadable_lines(path, max_line_bytes)
    con.execute("CREATE OR REPLACE TEMP TABLE unreadable (line BIGINT, reason VARCHAR, snippet VARCHAR)")
    if bad:
        con.executemany("INSERT INTO unreadable VALUES (?, ?, ?)", [[n, r, t] for n, (r, t) in bad.items()])
    source = readable_copy(path, bad, scratch) if bad else path
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS WITH src AS "
                    f"({_fields_by_line(source, fields, sql_type, max_line_bytes)}) {select}")
    except (duckdb.IOException, duckdb.InvalidInputException) as exc:
        raise CorruptRawFile(path, exc) from exc
    finally:
        if source != path:
            source.unlink(missing_ok=True)


def parse_reviews(con, release: str, path: Path, *, max_line_bytes: int, rating_range: tuple[float, float],
                  scratch: Path) -> None:
    """Create temp table `parsed_reviews(line, user_id, item_id, rating, ts, time, reason, snippet)`:
    `ts` in seconds, `time` at the release's own precision (2023: milliseconds), which orders
    a user's history as the release's own leave-last-out script does.

    Ids must be non-empty JSON strings without NUL characters, the rating a number within
    `rating_range`, the time a non-negative integer; any other line is a reject with its reason."""
    f = REVIEW_FIELDS[release]
    low, high = (float(v) for v in rating_range)

    def identifier(name: str, column: str) -> str:
        return (f"WHEN {column}_raw IS NULL OR json_type({column}_raw) = 'NULL' OR {column} = '' THEN 'missing {name}' "
                f"WHEN json_type({column}_raw) <> 'VARCHAR' THEN '{name} is not a string' "
                f"WHEN contains({column}, chr(0)) THEN '{name} contains a NUL character' ")
    select = f"""
        SELECT line, user_id, item_id, rating, time // {f.ts_per_second} AS ts, time,
               CASE WHEN unreadable IS NOT NULL THEN unreadable
                    WHEN malformed THEN 'malformed JSON'
                    {identifier(f.user, "user_id")}
                    {identifier(f.item, "item_id")}
                    WHEN rating_raw IS NULL THEN 'missing {f.rating}'
                    WHEN rating IS NULL THEN '{f.rating} is not a number'
                    WHEN NOT rating BETWEEN {low} AND {high} THEN '{f.rating} is outside [{low:g}, {high:g}]'
                    WHEN ts_raw IS NULL THEN 'missing {f.ts}'
                    WHEN time IS NULL OR time < 0 THEN '{f.ts} is not a non-negative integer'
               END AS reason,
               CASE WHEN reason IS NOT NULL THEN left(raw, {SNIPPET_CHARS}) END AS snippet
        FROM (SELECT line, raw, unreadable, malformed,
                     "{f.user}" AS user_id_raw, "{f.user}" ->> '$' AS user_id,
                     "{f.item}" AS item_id_raw, "{f.item}" ->> '$' AS item_id,
                     "{f.rating}" AS rating_raw, try_cast("{f.rating}" ->> '$' AS DOUBLE) AS rating,
                     "{f.ts}" AS ts_raw, try_cast("{f.ts}" ->> '$' AS BIGINT) AS time
              FROM src)"""
    _parse(con, "parsed_reviews", path, [f.user, f.item, f.rating, f.ts], "JSON", select,
           max_line_bytes, numbered=False, scratch=scratch)


@dataclass(frozen=True)
class MetaFields:
    fields: list[str]
    item_id: str
    brand: str       # SQL over the fields
    categories: str
    price: str
    image_urls: str  # SQL giving the list of full-size URLs, best first
    description: str = "array_to_string(try_cast(description AS VARCHAR[]), ' ')"
    line_format: str = "JSON"  # what a line is; "Python dict literal": converted first (python_literal_lines)


META_FIELDS = {
    # One Python dict literal per line; categories is a list of category paths (the first is
    # used, as 2018's one path), one image URL, a numeric price, a description string.
    "2014": MetaFields(
        ["asin", "title", "brand", "categories", "price", "imUrl", "description"], "asin",
        brand="brand ->> '$'", categories="try_cast(categories AS VARCHAR[][])[1]", price="price ->> '$'",
        image_urls="list_filter([imUrl ->> '$'], lambda u: u IS NOT NULL)", description="description ->> '$'",
        line_format="Python dict literal"),
    "2018": MetaFields(
        ["asin", "title", "brand", "category", "price", "imageURL", "imageURLHighRes", "description"], "asin",
        brand="brand ->> '$'", categories="category", price="price ->> '$'",
        # Full-size URLs, else thumbnails without their size token (._SX38_SY50_CR,0,0,38,50_).
        image_urls="""CASE WHEN len(coalesce(try_cast("imageURLHighRes" AS VARCHAR[]), [])) > 0
                           THEN try_cast("imageURLHighRes" AS VARCHAR[])
                           ELSE list_transform(try_cast("imageURL" AS VARCHAR[]),
                                lambda u: regexp_replace(u, '\\._[^/]*_(\\.[A-Za-z]+)$', '\\1')) END"""),
    "2023": MetaFields(
        ["parent_asin", "title", "details", "store", "categories", "price", "images", "description"], "parent_asin",
        brand="coalesce(details ->> '$.Brand', store ->> '$')", categories="categories",
        price="nullif(price ->> '$', 'None')",
        # MAIN image first, then the others; hi_res where present, else large.
        image_urls="""list_filter(list_transform(list_concat(
                          list_filter(imgs, lambda x: x.variant = 'MAIN'),
                          list_filter(imgs, lambda x: coalesce(x.variant, '') <> 'MAIN')),
                          lambda x: coalesce(x.hi_res, x.large)), lambda u: u IS NOT NULL)"""),
}


def parse_meta(con, release: str, path: Path, *, max_line_bytes: int, max_images: int, scratch: Path) -> None:
    """Create temp table `parsed_items(line, item_id, title, ..., text, reason, snippet)`.

    Needs `prepare` first. Repeated item ids are kept here; `items_sql` keeps the first."""
    m = META_FIELDS[release]
    images = ("coalesce(try(json_transform(images, "
              "'[{\"variant\": \"VARCHAR\", \"large\": \"VARCHAR\", \"hi_res\": \"VARCHAR\"}]')), [])"
              if release == "2023" else "NULL")
    select = f"""
        SELECT line, item_id, title, brand, categories, price_raw, parse_price(price_raw) AS price,
               list_slice(coalesce(image_urls, []), 1, {int(max_images)}) AS image_urls,
               item_text(title, categories, brand, description) AS text,
               reason, snippet
        FROM (
        SELECT line, item_id, clean_text(title_raw) AS title, clean_text(brand_raw) AS brand,
               list_transform(coalesce(categories_raw, []), lambda c: clean_text(c)) AS categories,
               price_raw, image_urls,
               clean_text(description_raw) AS description,
               CASE WHEN unreadable IS NOT NULL THEN unreadable
                    WHEN malformed THEN 'malformed {m.line_format}'
                    WHEN item_id IS NULL OR item_id = '' THEN 'missing {m.item_id}'
                    WHEN json_type(item_id_raw) <> 'VARCHAR' THEN '{m.item_id} is not a string'
                    WHEN contains(item_id, chr(0)) THEN '{m.item_id} contains a NUL character' END AS reason,
               CASE WHEN reason IS NOT NULL THEN left(raw, {SNIPPET_CHARS}) END AS snippet
        FROM (SELECT line, raw, unreadable, malformed, "{m.item_id}" AS item_id_raw,
                     "{m.item_id}" ->> '$' AS item_id, title ->> '$' AS title_raw,
                     {m.brand} AS brand_raw, try_cast({m.categories} AS VARCHAR[]) AS categories_raw,
                     {m.price} AS price_raw, {m.image_urls} AS image_urls, {m.description} AS description_raw
              FROM (SELECT *, {images} AS imgs FROM src)))"""
    if m.line_format == "JSON":
        _parse(con, "parsed_items", path, m.fields, "JSON", select, max_line_bytes, numbered=True, scratch=scratch)
        return
    converted = python_literal_lines(path, scratch, max_line_bytes)
    try:
        _parse(con, "parsed_items", converted, m.fields, "JSON", select, max_line_bytes, numbered=True,
               scratch=scratch)
    except CorruptRawFile as exc:
        raise CorruptRawFile(path, exc.reason) from exc
    finally:
        converted.unlink(missing_ok=True)


def python_literal_lines(path: Path, folder: Path, max_line_bytes: int) -> Path:
    """An uncompressed copy of `path` (one Python dict literal per line, as the 2014 metadata and
    early 2018 mirrors publish it) with each line as JSON, line for line, so line numbers stay
    the original's. Lines are parsed by `ast.literal_eval` (never `eval`: literals only, no
    code runs), one at a time (bounded memory); a line that is not a dict literal, or too long,
    is copied as it is and becomes a `malformed` reject with its snippet."""
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / f"{path.name}.{uuid.uuid4().hex}.jsonl"
    with _open_raw(path) as f, open(copy, "wb") as out:
        while raw := f.readline(max_line_bytes + 1):
            line = raw.rstrip(b"\r\n")
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                while (rest := f.readline(READ_CHUNK)) and not rest.endswith(b"\n"):
                    pass  # skip the rest of an over-long line
                line = line[:SNIPPET_CHARS]
            out.write(_literal_as_json(line) + b"\n")
    return copy


def _literal_as_json(line: bytes) -> bytes:
    """`line` (a Python dict literal, or JSON) as a JSON object, or as it was when it is neither."""
    try:
        value = ast.literal_eval(line.decode("utf-8"))
        if isinstance(value, dict):
            return json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError, UnicodeDecodeError):
        pass  # not a literal of plain data: the JSON reader names it
    return line


def interactions_sql(domain: str) -> str:
    return (f"SELECT {literal(domain)} AS domain, user_id, item_id, rating, ts "
            f"FROM parsed_reviews WHERE reason IS NULL")


def items_sql(domain: str) -> str:
    """The catalogue: one row per item id, the first metadata row wins."""
    return (f"SELECT {literal(domain)} AS domain, item_id, title, brand, categories, price_raw, price, "
            f"image_urls, text FROM parsed_items WHERE reason IS NULL "
            f"QUALIFY row_number() OVER (PARTITION BY item_id ORDER BY line) = 1 ORDER BY item_id")


def rejects_sql(domain: str, review_file: str, meta_file: str) -> str:
    return (f"SELECT {literal(domain)} AS domain, {literal(review_file)} AS file, line, reason, snippet "
            f"FROM parsed_reviews WHERE reason IS NOT NULL UNION ALL "
            f"SELECT {literal(domain)}, {literal(meta_file)}, line, reason, snippet "
            f"FROM parsed_items WHERE reason IS NOT NULL ORDER BY file, line")


def parse_counts(con) -> dict[str, int]:
    """Lines read, rejects and repeated metadata rows of the last parse."""
    reviews, bad_reviews = con.execute("SELECT count(*), count(reason) FROM parsed_reviews").fetchone()
    items, bad_items, distinct = con.execute(
        "SELECT count(*), count(reason), count(DISTINCT item_id) FILTER (WHERE reason IS NULL) "
        "FROM parsed_items").fetchone()
    return {"raw_reviews": reviews, "raw_items": items, "rejected": bad_reviews + bad_items,
            "duplicate_meta_rows": items - bad_items - distinct}


def dominant_reject(con) -> tuple[str, int, str, int] | None:
    """The most frequent reject reason of the last parse: (reason, count, file kind, first line)."""
    top = con.execute("""
        SELECT reason, count(*), arg_min(file, line), min(line) FROM (
            SELECT 'reviews' AS file, line, reason FROM parsed_reviews WHERE reason IS NOT NULL
            UNION ALL SELECT 'metadata', line, reason FROM parsed_items WHERE reason IS NOT NULL)
        GROUP BY reason ORDER BY 2 DESC, 1 LIMIT 1""").fetchone()
    return tuple(top) if top else None

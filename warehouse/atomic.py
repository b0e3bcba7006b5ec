"""Import a processed dataset in RecBole atomic format (as UniSRec, ANT and MISSRec publish).

Files in DIR, for a dataset prefix D: `D.train.inter`, `D.valid.inter`, `D.test.inter`
(tab-separated, header `user_id:token  item_id_list:token_seq  item_id:token`; one train row
per target, histories cut to the last 50), optional `D.item2index` / `D.user2index`
(`raw_id <tab> index`, 0-based) and `D.text` (`raw item id <tab> text`; the item index
where there is no item2index), and raw float32
feature matrices whose row i belongs to item index i. The import keeps the split exactly:
the full training sequence is rebuilt from the train rows, and the valid and test rows are
checked against it. Item index i becomes warehouse `item_idx` i + 1 (0 is padding).
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ant_config import Ingest
from ant_config.errors import UserError
from warehouse import features as feature_store
from warehouse.ingest import published_state, refuse_shrinking
from warehouse.schema import FEATURE_TABLES
from warehouse.store import Warehouse, sha256_of

log = logging.getLogger(__name__)

HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token\n"


class AtomicFormatError(UserError, ValueError):
    """The dataset does not match the atomic format; the message names file and line."""


@dataclass(frozen=True)
class FeatureFile:
    modality: str  # text | image | price
    path: Path
    dim: int


@dataclass(frozen=True)
class AtomicSummary:
    domain: str
    users: int
    items: int
    interactions: int
    features: dict[str, int]
    status: str = "imported"  # or "unchanged"
    rejected: int = 0  # .text lines naming no item of the dataset
    short_users: int = 0  # users without a training item, left out
    kept_features: list[str] = field(default_factory=list)     # stored vectors kept: same item ids
    dropped_features: list[str] = field(default_factory=list)  # stored vectors dropped: the items changed


def _prefix(directory: Path, domain: str) -> str:
    if (directory / f"{domain}.train.inter").exists():
        return domain
    found = sorted(p.name[: -len(".train.inter")] for p in directory.glob("*.train.inter"))
    if len(found) != 1:
        raise AtomicFormatError(f"{directory}: expected one <D>.train.inter (or {domain}.train.inter), "
                                f"found {found or 'none'}")
    return found[0]


def _names_file(read: Callable) -> Callable:
    """A reader whose unexpected failures become one AtomicFormatError naming its file (the
    first argument, or its `.path`); the cause stays chained for `-v`."""
    @functools.wraps(read)
    def wrapper(source, *args, **kwargs):
        try:
            return read(source, *args, **kwargs)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - any other failure, named once
            path = getattr(source, "path", source)
            raise AtomicFormatError(f"{path}: cannot be read ({type(exc).__name__}: {exc}); "
                                    f"run `ant -v import-atomic ...` for the traceback") from exc
    return wrapper


def _regular(path: Path, what: str = "") -> Path:
    """`path` when it is a regular file (after symlinks): never a device such as /dev/zero, a
    FIFO or a directory, which would hang the import or fail deep inside it."""
    if path.exists() and not path.is_file():
        raise AtomicFormatError(f"{path}: not a regular file{what}; give the dataset's own files")
    return path


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its end) of a UTF-8 text file (LF or CRLF)."""
    with open(_regular(path), "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise AtomicFormatError(
                    f"{path}:{n}: not UTF-8 ({exc.reason} at byte {exc.start}); the atomic format is UTF-8: "
                    f"convert the file, e.g. `iconv -f GBK -t UTF-8` (or -f CP1252)") from exc
            yield n, line.removeprefix("\ufeff").rstrip("\r\n") if n == 1 else line.rstrip("\r\n")


def is_index(token: str) -> bool:
    """An index token: ASCII digits only (`str.isdigit` also accepts '¹' and other scripts' digits)."""
    return token.isascii() and token.isdigit()


@_names_file
def _read_inter(path: Path) -> list[tuple[int, str, list[str], str]]:
    """(line, user token, history tokens, target token) of an .inter file."""
    if not path.exists():
        raise AtomicFormatError(f"{path}: missing")
    rows = []
    for n, line in _lines(path):
        parts = line.split("\t")
        if n == 1:
            if [h.split(":")[0] for h in parts] != ["user_id", "item_id_list", "item_id"]:
                raise AtomicFormatError(f"{path}:1: header {parts} is not "
                                        f"user_id:token, item_id_list:token_seq, item_id:token")
            continue
        if len(parts) != 3:
            raise AtomicFormatError(f"{path}:{n}: expected 3 tab-separated fields, got {len(parts)}")
        if not parts[0] or "\0" in parts[0]:
            raise AtomicFormatError(f"{path}:{n}: the user token is empty or contains NUL")
        rows.append((n, parts[0], parts[1].split(), parts[2]))
    if not rows and path.stat().st_size == 0:
        raise AtomicFormatError(f"{path}: empty (not even a header)")
    return rows


@_names_file
def _read_map(path: Path) -> dict[str, int] | None:
    """raw id → 0-based index, from `raw <tab> index` lines: ids unique, non-empty and without
    NUL (as ingest requires), indices exactly 0…n-1; None when there is no such file."""
    if not path.exists():
        return None
    out, seen = {}, set()
    for n, line in _lines(path):
        parts = line.split("\t")
        if len(parts) != 2 or not is_index(parts[1]):
            raise AtomicFormatError(f"{path}:{n}: expected `raw_id <tab> index`")
        raw, index = parts[0], int(parts[1])
        if not raw or "\0" in raw:
            raise AtomicFormatError(f"{path}:{n}: the raw id is empty or contains NUL")
        if raw in out or index in seen:
            raise AtomicFormatError(f"{path}:{n}: {'raw id ' + repr(raw) if raw in out else 'index ' + str(index)} "
                                    f"appears twice")
        out[raw] = index
        seen.add(index)
    if not out:
        raise AtomicFormatError(f"{path}: empty; remove it (tokens are then the indices) or write the id map")
    if max(seen) != len(seen) - 1:
        raise AtomicFormatError(f"{path}: indices must be 0…{len(seen) - 1} (one per line), the largest is "
                                f"{max(seen)}")
    return out


@_names_file
def _read_text(path: Path, index_of) -> tuple[dict[int, str], int]:
    """(item index → text, rejected lines) of a `.text` file. UniSRec keys it by raw item id,
    so `index_of(key)` resolves a key (through `.item2index`, or as an index where there is
    none); a key it cannot resolve is a rejected line, the first one named in a warning."""
    if not path.exists():
        return {}, 0
    out, rejected = {}, 0
    for n, line in _lines(path):
        parts = line.split("\t", 1)
        if n == 1 and ":token" in parts[0]:
            continue  # a RecBole header
        if (index := index_of(parts[0])) is None:
            if not rejected:
                log.warning("%s:%d: item %r is not an item of the dataset; its text is skipped "
                            "(further such lines are counted, not named)", path, n, parts[0])
            rejected += 1
            continue
        out[index] = parts[1] if len(parts) == 2 else ""
    return out, rejected


def _one_row_per_user(path: Path) -> dict[str, tuple[int, list[str], str]]:
    """user token → (line, history, target) of a valid or test file, one row per user."""
    out = {}
    for n, user, history, target in _read_inter(path):
        if user in out:
            raise AtomicFormatError(f"{path}:{n}: a second row for user {user!r} (the first is line {out[user][0]})")
        out[user] = (n, history, target)
    return out


def _sequences(prefix: Path, item_of) -> tuple[dict[str, tuple[list[int], int, int]], list[str]]:
    """(user token → (training sequence, valid target, test target) as item indices; where each
    user with no training item is, e.g. `4 <tab><tab> 3` as UniSRec's `--user_k 2` writes).
    Such users are left out: a leave-one-out split needs a training item."""
    train: dict[str, list[tuple[list[str], str]]] = {}
    for _, user, history, target in _read_inter(Path(f"{prefix}.train.inter")):
        train.setdefault(user, []).append((history, target))
    valid, test = (_one_row_per_user(Path(f"{prefix}.{split}.inter")) for split in ("valid", "test"))
    out, short = {}, []
    for user, (line, valid_history, valid_target) in valid.items():
        # One row per training target, written last target first; histories are cut to the
        # last 50, so length alone cannot order them: a stable sort of the reversed rows does.
        rows = sorted(reversed(train.get(user, [])), key=lambda r: len(r[0]))
        seq = [rows[0][0][0], *(t for _, t in rows)] if rows else list(valid_history)
        where = f"{prefix}.valid.inter:{line}"
        if valid_history != (seq[-len(valid_history):] if valid_history else []):
            raise AtomicFormatError(f"{where}: history of user {user} is not the end of its training sequence")
        if user not in test:
            raise AtomicFormatError(f"{prefix}.test.inter: no row for user {user}")
        t_line, test_history, test_target = test[user]
        if test_history != (seq + [valid_target])[-len(test_history):]:
            raise AtomicFormatError(f"{prefix}.test.inter:{t_line}: history of user {user} is not "
                                    f"training sequence + valid item")
        if not seq:
            short.append(where)
            continue
        out[user] = ([item_of(t, where) for t in seq], item_of(valid_target, where),
                     item_of(test_target, f"{prefix}.test.inter:{t_line}"))
    return out, short


@_names_file
def _load_feature(f: FeatureFile, n_items: int) -> np.ndarray:
    """The [n_items, dim] float32 matrix of a feature file: its size checked before it is read,
    every value finite (a NaN would score as a perfect model)."""
    if not f.path.exists():
        raise AtomicFormatError(f"{f.path}: missing ({f.modality} feature)")
    _regular(f.path, f" ({f.modality} feature)")
    if f.dim < 1:
        raise AtomicFormatError(f"{f.path}: dimension {f.dim}; give the width of a row, e.g. "
                                f"--feature {f.modality}=FILE:768")
    size = f.path.stat().st_size
    if size % (4 * f.dim):
        raise AtomicFormatError(f"{f.path}: {size} bytes is not a whole number of float32 rows of "
                                f"dimension {f.dim}; check the DIM in --feature {f.modality}=FILE:DIM")
    if size // (4 * f.dim) != n_items:
        raise AtomicFormatError(f"{f.path}: {size // (4 * f.dim)} rows of dimension {f.dim}, but the dataset "
                                f"has {n_items} items (row i must belong to item index i)")
    matrix = np.fromfile(f.path, dtype=np.float32).reshape(-1, f.dim)
    bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
    if len(bad):
        raise AtomicFormatError(f"{f.path}: row {bad[0]} (item index {bad[0]}) holds a non-finite value "
                                f"(NaN or inf), {len(bad)} rows in all; fix the feature file")
    return matrix


def _file_hash(path: Path) -> str:
    return sha256_of(path).hexdigest()


def fingerprint(directory: Path, domain: str, features: list[FeatureFile]) -> str:
    """Hash of every file the import reads (and which modality each feature file is)."""
    prefix = Path(directory) / _prefix(Path(directory), domain)
    digest = hashlib.sha256()
    for f in features:
        if not f.path.exists():
            raise AtomicFormatError(f"{f.path}: missing ({f.modality} feature)")
        digest.update(f"{f.modality}:{f.dim}:{_file_hash(_regular(f.path))}".encode())
    for suffix in ("train.inter", "valid.inter", "test.inter", "item2index", "user2index", "text"):
        path = Path(f"{prefix}.{suffix}")
        digest.update(f"{suffix}:{_file_hash(_regular(path)) if path.exists() else '-'}".encode())
    return digest.hexdigest()


def _unchanged(wh: Warehouse, domain: str, fp: str, features: list[FeatureFile],
               damaged: dict[str, str]) -> AtomicSummary | None:
    """The published import of `domain`, if it was made from the same files and none of its
    published files is `damaged` ({path: problem})."""
    if not wh.db_path.exists():
        return None
    with wh.reader() as con:
        row = con.execute("SELECT s.users, s.items, s.interactions FROM domains d JOIN domain_stats s USING (domain) "
                          "WHERE d.domain = ? AND d.fingerprint = ?", [domain, fp]).fetchone()
    if row and damaged:
        log.warning("%s: repairing %d damaged files (%s)", domain, len(damaged), "; ".join(damaged))
        return None
    return AtomicSummary(domain, *row, {f.modality: f.dim for f in features}, "unchanged") if row else None


def _guard(wh: Warehouse, domain: str, interactions: int, users: int, settings: Ingest,
           replace_category: bool) -> None:
    """An import replaces a published domain only as an ingest would (no empty or much smaller
    domain without `allow_shrink`), and a downloaded category only when asked."""
    published = published_state(wh, domain)
    if published is None:
        return
    with wh.reader() as con:
        release = con.execute("SELECT release FROM domains WHERE domain = ?", [domain]).fetchone()[0]
    if release != "atomic" and not replace_category:
        raise AtomicFormatError(f"{domain} is the downloaded Amazon {release} category in {wh.home}: an import "
                                f"would replace it. Import under another --domain name, or pass --replace-category")
    refuse_shrinking(domain, interactions, users, published, settings, {"raw_reviews": interactions, "rejected": 0},
                     None)


def _stale_features(wh: Warehouse, domain: str, item_ids: list[str], given: set[str]) -> tuple[list[str], list[str]]:
    """(kept, dropped) modalities among the stored features of `domain` that this import does not
    bring: kept when they are stored for exactly the new item ids, else dropped."""
    kept, dropped = [], []
    if not wh.db_path.exists():
        return kept, dropped
    with wh.reader() as con:
        con.register("new_ids", pa.table({"item_id": item_ids}))
        for modality, table in FEATURE_TABLES.items():
            if modality in given:
                continue
            stored, matching = con.execute(
                f"SELECT count(*), count(*) FILTER (WHERE item_id IN (SELECT item_id FROM new_ids)) "
                f"FROM {table} WHERE domain = ?", [domain]).fetchone()
            if stored:
                (kept if stored == matching == len(item_ids) else dropped).append(modality)
    return kept, dropped


def import_atomic(wh: Warehouse, directory: Path, domain: str, features: list[FeatureFile],
                  settings: Ingest | None = None, replace_category: bool = False) -> AtomicSummary:
    """Import the dataset in `directory` as `domain` (see the module's docstring). Re-importing
    a domain follows the ingest's guards (`settings`: max_shrink, allow_shrink) and replaces a
    downloaded category only with `replace_category`; vectors stored for the domain that this
    import does not bring are kept when their item ids are exactly the new ones, else dropped."""
    settings = settings or Ingest()
    directory = Path(directory)
    damaged = wh.heal_views(domain)
    prefix = directory / _prefix(directory, domain)
    fp = fingerprint(directory, domain, features)
    if (done := _unchanged(wh, domain, fp, features, damaged)) is not None:
        return done
    item2index = _read_map(Path(f"{prefix}.item2index"))
    user2index = _read_map(Path(f"{prefix}.user2index"))
    raw_item = {i: raw for raw, i in item2index.items()} if item2index else None

    def item_of(token: str, where: str) -> int:
        if not is_index(token) or (raw_item is not None and int(token) not in raw_item):
            raise AtomicFormatError(f"{where}: unknown item token {token!r}"
                                    f"{' (not in ' + prefix.name + '.item2index)' if raw_item else ''}")
        return int(token)

    seqs, short = _sequences(prefix, item_of)
    if short:
        log.warning("%s: %d users have no training item (fewer than 3 items) and are left out, the first at %s",
                    prefix.name, len(short), short[0])
    if not seqs:
        raise AtomicFormatError(f"{prefix}.valid.inter: no user with a training item, valid and test item: "
                                f"nothing to import")
    if item2index:
        n_items = len(item2index)
    else:  # the tokens are the indices of a catalogue they cover (not a sparse id space)
        used = {i for s, v, t in seqs.values() for i in (*s, v, t)}
        n_items = 1 + max(used)
        if n_items > 2 * len(used):
            raise AtomicFormatError(
                f"{prefix}.*.inter: item tokens reach {n_items - 1} but only {len(used)} distinct items occur; "
                f"without {prefix.name}.item2index the tokens must be the indices 0…n-1 of the items: add one")
    item_ids = [raw_item[i] if raw_item else str(i) for i in range(n_items)]
    raw_user = {str(i): raw for raw, i in user2index.items()} if user2index else {}
    # index tokens in index order; any other token makes them all plain strings, sorted as such
    numeric = all(is_index(u) for u in seqs)
    users = sorted(seqs, key=int) if numeric else sorted(seqs)
    if item2index:
        index_of = item2index.get
    else:
        index_of = lambda key: int(key) if is_index(key) and int(key) < n_items else None  # noqa: E731
    texts, text_rejected = _read_text(Path(f"{prefix}.text"), index_of)

    full = {u: [i + 1 for i in s] + [v + 1, t + 1] for u, (s, v, t) in seqs.items()}
    user_rows = [(raw_user.get(u, u), n + 1, full[u]) for n, u in enumerate(users)]
    tables = {
        "item_index": pa.table({"domain": [domain] * n_items, "item_id": item_ids,
                                "item_idx": pa.array(range(1, n_items + 1), pa.int32())}),
        "user_index": pa.table({"domain": [domain] * len(users), "user_id": [r[0] for r in user_rows],
                                "user_idx": pa.array([r[1] for r in user_rows], pa.int32())}),
        "sequences": pa.table({
            "domain": [domain] * len(users), "user_idx": pa.array([r[1] for r in user_rows], pa.int32()),
            "item_idxs": pa.array([r[2] for r in user_rows], pa.list_(pa.int32())),
            "timestamps": pa.array([None] * len(users), pa.list_(pa.int64())),
            "length": pa.array([len(r[2]) for r in user_rows], pa.int32())}),
        "splits": pa.table({
            "domain": [domain] * (3 * len(users)),
            "user_idx": pa.array([r[1] for r in user_rows for _ in range(3)], pa.int32()),
            "split": [s for _ in user_rows for s in ("test", "train", "valid")],
            "history": pa.array([h for r in user_rows for h in (r[2][:-1], r[2][:-3], r[2][:-2])],
                                pa.list_(pa.int32())),
            "target": pa.array([t for r in user_rows for t in (r[2][-1], r[2][-3], r[2][-2])], pa.int32())}),
        "items": pa.table({
            "domain": [domain] * n_items, "item_id": item_ids,
            "title": pa.array([None] * n_items, pa.string()), "brand": pa.array([None] * n_items, pa.string()),
            "categories": pa.array([[]] * n_items, pa.list_(pa.string())),
            "price_raw": pa.array([None] * n_items, pa.string()), "price": pa.array([None] * n_items, pa.float64()),
            "image_urls": pa.array([[]] * n_items, pa.list_(pa.string())),
            "text": [texts.get(i) for i in range(n_items)]}),
        "interactions": pa.table({
            "domain": [domain] * sum(len(r[2]) for r in user_rows),
            "user_id": [r[0] for r in user_rows for _ in r[2]],
            "item_id": [item_ids[i - 1] for r in user_rows for i in r[2]],
            "rating": pa.array([None] * sum(len(r[2]) for r in user_rows), pa.float64()),
            "ts": pa.array([None] * sum(len(r[2]) for r in user_rows), pa.int64())}),
    }
    interactions = sum(len(r[2]) for r in user_rows)
    _guard(wh, domain, interactions, len(users), settings, replace_category)
    kept, dropped = _stale_features(wh, domain, item_ids, {f.modality for f in features})
    files: dict[str, Path] = {}
    try:
        for table, data in tables.items():
            path = wh.new_parquet_path(table, domain)
            pq.write_table(data, path, compression="zstd")
            files[table] = path
        for f in features:
            matrix = _load_feature(f, n_items)
            file_hash = _file_hash(f.path)
            files[f"{f.modality}_features"] = feature_store.write(
                wh, domain, f.modality, item_ids, f"{feature_store.IMPORTED_PREFIX}{f.path.name}@{file_hash[:16]}",
                [file_hash] * n_items, np.ones(n_items, dtype=bool), matrix)
    except BaseException:
        for path in files.values():
            path.unlink(missing_ok=True)
        raise
    wh.publish(domain, files, {"domains": {
        "domain": domain, "release": "atomic", "category": prefix.name, "fingerprint": fp,
        "raw_reviews": interactions, "raw_items": n_items, "rejected": text_rejected, "duplicate_meta_rows": 0,
        "ingested_at": datetime.now(timezone.utc)}}, drop=[FEATURE_TABLES[m] for m in dropped])
    if dropped:
        log.info("%s: stored %s vectors dropped (the items changed); `ant features` encodes them anew",
                 domain, ", ".join(dropped))
    return AtomicSummary(domain, len(users), n_items, interactions, {f.modality: f.dim for f in features},
                         rejected=text_rejected, short_users=len(short), kept_features=kept, dropped_features=dropped)


def export_atomic(wh: Warehouse, domain: str, directory: Path, max_len: int, force: bool = False) -> list[Path]:
    """`_write_export` into `directory`, atomically: the files are written into a temporary
    folder beside it, which then takes its place, so a full disk or a crash leaves the old
    folder (or none), never a partial export. A non-empty `directory` is replaced only with
    `force`."""
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())) and not force:
        raise AtomicFormatError(f"{directory} is not an empty folder: export into a new one, or pass --force "
                                f"to replace it")
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.export-", dir=directory.parent))
    aside = staging.with_name(staging.name + ".old")
    try:
        written = _write_export(wh, domain, staging, max_len)
        if directory.exists():
            os.replace(directory, aside)
        os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if aside.exists() and not directory.exists():
            os.replace(aside, directory)  # put the old export back
        raise
    shutil.rmtree(aside, ignore_errors=True)
    return [directory / path.name for path in written]


def _write_export(wh: Warehouse, domain: str, directory: Path, max_len: int) -> list[Path]:
    """Write `domain` as UniSRec writes a processed dataset: `<D>.{train,valid,test}.inter`
    (one train row per training target, last target first, histories cut to the last
    `max_len`), `<D>.item2index`, `<D>.user2index` (0-based), `<D>.text` (keyed by raw item id, as
    UniSRec writes it), and one raw float32
    file per feature modality (`<D>.<modality>.feat`, rows in item-index order). The exact
    split, so a peer implementation trains and is evaluated on the same data;
    `import_atomic` reads it back unchanged."""
    with wh.reader() as con:
        if not con.execute("SELECT count(*) FROM splits WHERE domain = ?", [domain]).fetchall()[0][0]:
            raise AtomicFormatError(f"domain {domain!r} has no split in {wh.home}: ingest or import it first")
        splits = con.execute("SELECT user_idx, split, history, target FROM splits WHERE domain = ? "
                             "ORDER BY user_idx", [domain]).fetchall()
        users = con.execute("SELECT user_id, user_idx FROM user_index WHERE domain = ? ORDER BY user_idx",
                            [domain]).fetchall()
        items = con.execute("SELECT x.item_id, x.item_idx, coalesce(i.text, '') FROM item_index x "
                            "LEFT JOIN items i USING (domain, item_id) WHERE x.domain = ? ORDER BY x.item_idx",
                            [domain]).fetchall()
        vectors = {m: con.sql(f"SELECT x.item_idx, f.vector FROM item_index x JOIN {table} f USING (domain, item_id) "
                              f"WHERE x.domain = ? ORDER BY x.item_idx", params=[domain]).to_arrow_table()
                   for m, table in FEATURE_TABLES.items()}
    by_user: dict[int, dict[str, tuple[list[int], int]]] = {}
    for user, split, history, target in splits:
        by_user.setdefault(user, {})[split] = ([i - 1 for i in history], target - 1)

    def row(user: int, history: list[int], target: int) -> str:
        return f"{user - 1}\t{' '.join(map(str, history[-max_len:]))}\t{target}\n"

    files = {name: [HEADER] for name in ("train", "valid", "test")}
    for user, parts in by_user.items():
        history, target = parts["train"]
        sequence = history + [target]
        files["train"] += [row(user, sequence[:t], sequence[t]) for t in range(len(sequence) - 1, 0, -1)]
        files["valid"].append(row(user, sequence, parts["valid"][1]))
        files["test"].append(row(user, sequence + [parts["valid"][1]], parts["test"][1]))
    written = []
    for name, lines in files.items():
        written.append(directory / f"{domain}.{name}.inter")
        written[-1].write_text("".join(lines))
    written.append(directory / f"{domain}.item2index")
    written[-1].write_text("".join(f"{item}\t{idx - 1}\n" for item, idx, _ in items))
    written.append(directory / f"{domain}.user2index")
    written[-1].write_text("".join(f"{user}\t{idx - 1}\n" for user, idx in users))
    written.append(directory / f"{domain}.text")
    written[-1].write_text("item_id:token\ttext:token_seq\n" + "".join(
        f"{item}\t{' '.join(text.split())}\n" for item, _, text in items))
    for modality, table in vectors.items():
        if table.num_rows:
            vectors = feature_store.vectors_of(table)
            matrix = np.zeros((len(items), vectors.shape[1]), dtype=np.float32)
            matrix[table.column("item_idx").to_numpy() - 1] = vectors
            written.append(directory / f"{domain}.{modality}.feat")
            matrix.tofile(written[-1])
    return written

"""The warehouse on disk: `ANT_HOME` layout, DuckDB connections, atomic Parquet publishing.

DuckDB lets one process write a database file, and a writing process locks readers out.
So heavy work runs on in-memory *scratch* connections that read raw files and write new
Parquet files; only `publish` opens `warehouse.duckdb` for writing, for one short
transaction that points the manifest and the views at the new files. A crash before that
commit leaves the old tables in place; readers see either the old or the new files, never
a mix, and can open the database read-only whenever no publish is in flight.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar

import duckdb
from filelock import FileLock, Timeout

from ant_config.errors import UserError
from ant_config.releases import check_name
from warehouse.sql import string_list
from warehouse.schema import DERIVED_VIEWS, FEATURE_TABLES, MIGRATIONS, PARQUET_TABLES, SCHEMA_VERSION

log = logging.getLogger(__name__)
T = TypeVar("T")

LOCK_RETRY_S = 0.2
# Every connection: extensions never install or load on their own (that would be a network
# fetch at run time); json and parquet are built in.
NO_EXTENSIONS = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}

# DuckDB keeps one database instance per file and process: threads of one process (Prefect
# tasks) must take turns with the file, and never hold read-only and read-write at once.
_FILE_LOCKS: dict[Path, threading.RLock] = {}
_FILE_LOCKS_GUARD = threading.Lock()


def _file_lock(path: Path) -> threading.RLock:
    with _FILE_LOCKS_GUARD:
        return _FILE_LOCKS.setdefault(path, threading.RLock())


# The write lock is held by a process, not a thread or a flow: a stage takes it and the
# functions it calls may take it again, so each path has one re-entrant lock.
_WRITE_LOCKS: dict[Path, FileLock] = {}
# An unpublished Parquet file younger than this may belong to a run still writing it.
STAGED_GRACE_S = 6 * 3600


def _write_lock(path: Path) -> FileLock:
    with _FILE_LOCKS_GUARD:
        return _WRITE_LOCKS.setdefault(path, FileLock(str(path), thread_local=False))


class WarehouseError(UserError, RuntimeError):
    """A warehouse problem the user can act on; the message says what to do."""


HASH_BLOCK = 1 << 20  # bytes read at a time while hashing a file


def sha256_of(path: Path, prefix: hashlib._Hash | None = None) -> hashlib._Hash:
    """The sha256 of a file's bytes (continuing `prefix` if given), read in bounded memory."""
    digest = prefix or hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            digest.update(block)
    return digest


def file_problem(path: Path, rows: int | None = None, sha256: str | None = None) -> str | None:
    """What is wrong with a published Parquet file, or None: missing, an unreadable footer, with
    `rows` another number of rows (the footer is read once), with `sha256` other bytes than those
    recorded at publish (reads the file whole: a flipped bit the footer does not show)."""
    if not path.is_file():
        return "missing"
    import pyarrow.parquet as pq  # only publishing and checking need it
    try:
        found = pq.read_metadata(path).num_rows
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds for a damaged file
        return f"unreadable ({type(exc).__name__}: {exc})"
    if rows is not None and found != rows:
        return f"{found} rows, the manifest records {rows}"
    if sha256 is not None and sha256_of(path).hexdigest() != sha256:
        return "its sha256 differs from the one recorded at publish: changed or damaged since"
    return None


def under(root: Path, *parts: str) -> Path:
    """`root / parts...`, refused unless it stays inside `root` (no '..', no absolute part, no
    symlink out): every path built from a name goes through here."""
    path = Path(root).joinpath(*parts)
    if not path.resolve().is_relative_to(Path(root).resolve()) or path.resolve() == Path(root).resolve():
        raise WarehouseError(f"{'/'.join(parts)!r} would leave {root}: refused")
    return path


class WarehouseLocked(WarehouseError):
    """Another process holds the warehouse."""


def _is_lock_error(exc: duckdb.Error) -> bool:
    """DuckDB's word for a file another process holds (not any message with "lock" in it: a
    checksum error names a "block")."""
    message = str(exc).lower()
    return "could not set lock on file" in message or "conflicting lock" in message


def upsert(con: duckdb.DuckDBPyConnection, table: str, row: Mapping) -> None:
    names = list(row)
    con.execute(f"INSERT OR REPLACE INTO {table} ({', '.join(names)}) "
                f"VALUES ({', '.join('?' * len(names))})", list(row.values()))


def upsert_many(con: duckdb.DuckDBPyConnection, table: str, rows: list[Mapping]) -> None:
    """`upsert` of many rows (all with the same columns, no key twice) in one statement: row by
    row, DuckDB spends about a millisecond per statement."""
    if not rows:
        return
    import pyarrow as pa  # here, not at the top: `ant sql` imports this module and must start fast
    batch = pa.Table.from_pylist(list(rows))
    names = ", ".join(batch.column_names)
    con.register("upsert_batch", batch)
    try:
        con.execute(f"INSERT OR REPLACE INTO {table} ({names}) SELECT {names} FROM upsert_batch")
    finally:
        con.unregister("upsert_batch")


class Warehouse:
    """Paths under one `ANT_HOME` and the ways to open its database."""

    def __init__(self, home: str | Path, lock_timeout_s: float = 120.0):
        self.home = Path(home).resolve()
        self.raw_dir = self.home / "raw"
        self.parquet_dir = self.home / "parquet"
        self.tmp_dir = self.home / "tmp"
        self.db_path = self.home / "warehouse.duckdb"
        self.lock_timeout_s = lock_timeout_s

    def relative(self, path: str | Path) -> str:
        """`path` as stored in the warehouse: relative to the home when inside it."""
        path = Path(path)
        try:
            return str(path.resolve().relative_to(self.home))
        except ValueError:
            return str(path)

    def absolute(self, stored: str | Path) -> Path:
        """A stored path back as an absolute one (relative paths are under the home)."""
        return self.home / stored

    # -- connections -------------------------------------------------------------------------
    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            try:
                con = duckdb.connect(str(self.db_path), read_only=read_only, config=NO_EXTENSIONS)
                break
            except duckdb.Error as exc:
                if not _is_lock_error(exc):
                    raise self._damaged(exc) from exc
                if time.monotonic() > deadline:
                    raise WarehouseLocked(f"{self.db_path} is held by another process for more than "
                                          f"{self.lock_timeout_s:.0f}s: {exc}") from exc
                time.sleep(LOCK_RETRY_S)
        return con

    def _checked(self, con: duckdb.DuckDBPyConnection, read: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """`read(con)` of the file's own tables, the first reads of a connection: a damaged file
        fails there, and is named as damaged instead of a DuckDB traceback."""
        try:
            return read(con)
        except duckdb.Error as exc:
            con.close()
            raise self._damaged(exc) from exc
        except BaseException:
            con.close()
            raise

    def _damaged(self, exc: duckdb.Error) -> WarehouseError:
        return WarehouseError(
            f"{self.db_path} cannot be opened, it looks damaged ({type(exc).__name__}: {str(exc).splitlines()[0]}). "
            f"The Parquet files under {self.parquet_dir} are intact: move the damaged file aside and run "
            f"`ant ingest` (and `ant import-atomic`) again to rebuild the domains (the model registry in it "
            f"is lost; the models stay under artifacts/)")

    @contextlib.contextmanager
    def reader(self, write: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection (waits while a publish holds the file). An older file, or a
        moved or copied home, is migrated and its views re-pointed first; with `write=False`
        (ant sql) the file is never written: a moved or copied home (read-only too) is read
        through temporary views of this connection."""
        if not self.db_path.exists():
            raise WarehouseError(f"no warehouse at {self.db_path}: run `ant ingest` first "
                                 f"(or set ANT_HOME to an existing one)")
        with _file_lock(self.db_path):
            con = self._connect(read_only=True)
            version, views_home = self._checked(con, lambda c: (self._version(c), self._views_home(c)))
            if not write and (version < SCHEMA_VERSION or views_home != str(self.home)):
                if version < SCHEMA_VERSION:
                    con.close()
                    raise WarehouseError(f"{self.db_path} has schema version {version}, older than {SCHEMA_VERSION}: "
                                         f"run `ant ingest` once to migrate it (a read-only command never writes)")
                self._checked(con, lambda c: self._create_views(c, temporary=True))
            elif version < SCHEMA_VERSION or views_home != str(self.home):
                # an older file, or a moved or copied home: migrate and point the views here, then read
                con.close()
                with self.writer():
                    pass
                con = self._connect(read_only=True)
            try:
                yield con
            finally:
                con.close()

    def ensure_home(self) -> None:
        """Create the home (a clear error when it cannot be: a read-only or virtual file system)."""
        if self.db_path.exists():
            return
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            probe = self.home / f".probe-{uuid.uuid4().hex}"
            probe.touch()
            probe.unlink()
        except OSError as exc:
            raise WarehouseError(f"cannot write to ANT_HOME {self.home} ({exc.strerror or exc}): "
                                 f"set ANT_HOME (or `home:` in the config) to a writable directory") from exc

    @contextlib.contextmanager
    def writer(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short write connection, schema migrated; keep the work inside it small."""
        self.ensure_home()
        with _file_lock(self.db_path):
            con = self._connect(read_only=False)
            moved = self._checked(con, lambda c: self._migrate(c) or self._views_home(c) != str(self.home))
            try:
                if moved:
                    log.info("%s moved or copied: its views now read the Parquet files under it", self.home)
                    con.begin()
                    self._create_views(con)
                    con.commit()
                yield con
            finally:
                con.close()

    def scratch(self, threads: int = 2, memory_limit: str = "2GB") -> duckdb.DuckDBPyConnection:
        """An in-memory connection for heavy work; spills to `ANT_HOME/tmp`."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        return duckdb.connect(config={
            "threads": threads, "memory_limit": memory_limit,
            "temp_directory": str(self.tmp_dir), "preserve_insertion_order": True, **NO_EXTENSIONS,
        })

    @contextlib.contextmanager
    def write_lock(self, timeout_s: float | None = None) -> Iterator[None]:
        """Exclusion between the stages that rewrite data tables (ingest, features, import):
        a second one on the same ANT_HOME waits up to `timeout_s` (default: the warehouse's
        lock timeout), then refuses. Training and the registry need no such lock: runs train
        their own version folders, and registry writes are short transactions. Re-entrant
        within a process."""
        self.ensure_home()
        lock = _write_lock(self.home / ".write.lock")
        timeout_s = self.lock_timeout_s if timeout_s is None else timeout_s
        if not lock.is_locked:
            log.info("taking the run lock %s (waits up to %.0fs for another run)", lock.lock_file, timeout_s)
        try:
            lock.acquire(timeout=timeout_s)
        except Timeout as exc:
            raise WarehouseLocked(
                f"another run is writing to {self.home} (lock {lock.lock_file}); waited "
                f"{timeout_s:.0f}s. Wait for it to finish, or use another ANT_HOME.") from exc
        try:
            yield
        finally:
            lock.release()

    def identity(self) -> str:
        """This warehouse file's random id (a re-created warehouse gets a new one)."""
        if not self.db_path.exists():
            with self.writer():  # creates it
                pass
        with self.reader() as con:
            return con.execute("SELECT id FROM identity").fetchall()[0][0]

    # -- schema --------------------------------------------------------------------------------
    @staticmethod
    def _version(con: duckdb.DuckDBPyConnection) -> int:
        # fetchall, not fetchone: an unfinished result would block the caller's next con.sql()
        has_version = con.execute("SELECT count(*) FROM information_schema.tables "
                                  "WHERE table_name = 'schema_version'").fetchall()[0][0]
        if not has_version:
            return 0
        return con.execute("SELECT max(version) FROM schema_version").fetchall()[0][0] or 0

    def _migrate(self, con: duckdb.DuckDBPyConnection) -> None:
        current = self._version(con)
        if current > SCHEMA_VERSION:
            raise WarehouseError(f"{self.db_path} has schema version {current}, newer than this "
                                 f"code's {SCHEMA_VERSION}: upgrade the pipeline")
        if current == SCHEMA_VERSION:
            return
        con.begin()
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version]:
                con.execute(statement)
            log.info("warehouse %s migrated to schema version %d", self.db_path, version)
        con.execute("DELETE FROM schema_version")
        con.execute("INSERT INTO schema_version VALUES (?)", [SCHEMA_VERSION])
        self._create_views(con)
        con.commit()

    @staticmethod
    def _views_home(con: duckdb.DuckDBPyConnection) -> str | None:
        """The home the views' (absolute) Parquet paths were written for."""
        rows = con.execute("SELECT value FROM settings WHERE key = 'views_home'").fetchall()
        return rows[0][0] if rows else None

    def _create_views(self, con: duckdb.DuckDBPyConnection, temporary: bool = False) -> None:
        """Views over the published Parquet files, by absolute path (so any DuckDB client can
        read them); re-created when the home moves. `temporary`: this connection's own views
        (which come first in name resolution), the file untouched."""
        if not temporary:
            upsert(con, "settings", {"key": "views_home", "value": str(self.home)})
        for table, columns in PARQUET_TABLES.items():
            paths = [str(self.home / p) for (p,) in con.execute(
                "SELECT path FROM parquet_files WHERE table_name = ? ORDER BY domain", [table]).fetchall()]
            paths = [p for p in paths if self._healthy(table, p)]
            if paths:
                cols = [f"{c}::{t} AS {c}" for c, t in columns.items()]
                if table in FEATURE_TABLES.values():
                    cols[-1] = f"vector::{self._vector_type(paths)} AS vector"
                body = f"SELECT {', '.join(cols)} FROM read_parquet({string_list(paths)})"
            else:
                body = ("SELECT " + ", ".join(f"NULL::{t} AS {c}" for c, t in columns.items())
                        + " WHERE false")
            con.execute(f"CREATE OR REPLACE {'TEMP ' if temporary else ''}VIEW {table} AS {body}")
        for name, body in DERIVED_VIEWS.items():
            con.execute(f"CREATE OR REPLACE {'TEMP ' if temporary else ''}VIEW {name} AS {body}")

    @staticmethod
    def _healthy(table: str, path: str) -> bool:
        """Whether a published file can go into its view; a damaged one is left out with a
        warning, so that one domain's damage never blocks publishing or reading the others."""
        if (problem := file_problem(Path(path))) is None:
            return True
        log.warning("%s: %s, left out of the %s view; `ant doctor` lists what to re-ingest or re-import",
                    path, problem, table)
        return False

    @staticmethod
    def _vector_type(paths: list[str]) -> str:
        """FLOAT[d] when every file has one width (so array_cosine_similarity works), else FLOAT[].
        Read from the files' schemas, not their data."""
        import pyarrow.parquet as pq  # only publishing needs it: `ant sql` starts without pyarrow
        dims = {pq.read_schema(p).field("vector").type.list_size for p in paths}
        if len(dims) == 1:
            return f"FLOAT[{dims.pop()}]"
        log.info("feature vectors of several widths %s (domains differ): exposed as FLOAT[]", sorted(dims))
        return "FLOAT[]"

    # -- Parquet tables ------------------------------------------------------------------------
    def new_parquet_path(self, table: str, domain: str) -> Path:
        """A fresh, never-used file name for a table's next version of `domain`."""
        if table not in PARQUET_TABLES:
            raise KeyError(f"unknown warehouse table {table!r}")
        folder = under(self.parquet_dir / table, check_name(domain))
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{uuid.uuid4().hex}.parquet"

    def publish(self, domain: str, files: Mapping[str, Path],
                rows: Mapping[str, Mapping] | None = None, drop: Iterable[str] = ()) -> None:
        """Point the tables at freshly written files for `domain`, take the `drop` tables' files
        of `domain` out of them, and upsert `rows` ({native table: row}), all in one transaction."""
        checksums = {table: sha256_of(path).hexdigest() for table, path in files.items()}  # before the transaction: it reads each file whole
        with self.writer() as con:
            con.begin()
            for table in drop:
                con.execute("DELETE FROM parquet_files WHERE table_name = ? AND domain = ?", [table, domain])
            for table, path in files.items():
                count = con.execute("SELECT count(*) FROM read_parquet(?)", [str(path)]).fetchone()[0]
                con.execute("INSERT OR REPLACE INTO parquet_files (table_name, domain, path, rows, sha256) "
                            "VALUES (?, ?, ?, ?, ?)",
                            [table, domain, str(Path(path).relative_to(self.home)), count, checksums[table]])
            for table, row in (rows or {}).items():
                upsert(con, table, row)
            self._create_views(con)
            con.commit()

    def check_files(self, checksums: bool | str = False) -> list[tuple[str, str, str, str]]:
        """(table, domain, path, problem) of each published Parquet file that is missing, has an
        unreadable footer, or holds other than the rows the manifest recorded. `checksums`: also
        compare the bytes with the sha256 recorded at publish, for every file (True) or one
        domain's (its name); files published before schema 7 have none to compare."""
        with self.reader() as con:
            files = con.execute("SELECT table_name, domain, path, rows, sha256 FROM parquet_files "
                                "ORDER BY domain, table_name").fetchall()
        return [(table, owner, str(self.home / path), problem) for table, owner, path, rows, sha256 in files
                if (problem := file_problem(self.home / path, rows,
                                            sha256 if checksums in (True, owner) else None)) is not None]

    def heal_views(self, domain: str) -> dict[str, str]:
        """Re-create the views without the damaged files (`check_files`), so that a write stage
        of `domain` never fails on another domain's damage; {path: problem} of `domain`'s own
        damaged files, checked by checksum too (the stage repairs them, reading them from here
        rather than checking again)."""
        if not self.db_path.exists():
            return {}
        problems = self.check_files(checksums=domain)
        if problems:
            with self.writer() as con:
                con.begin()
                self._create_views(con)
                con.commit()
        return {path: problem for _, owner, path, problem in problems if owner == domain}

    def collect_garbage(self) -> int:
        """Delete Parquet files no table points at (left by crashes or replaced versions).

        Call under `write_lock`, before a run stages new files. Files younger than
        `STAGED_GRACE_S` are kept: a command outside the lock (`ant recommend --all`) may be
        about to publish them."""
        if not self.db_path.exists():
            return 0
        with self.reader() as con:
            live = {self.home / p for (p,) in con.sql("SELECT path FROM parquet_files").fetchall()}
        removed, cutoff = 0, time.time() - STAGED_GRACE_S
        for path in self.parquet_dir.glob("*/*/*.parquet"):
            if path not in live and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        if removed:
            log.info("removed %d unreferenced Parquet files", removed)
        return removed

"""The warehouse under concurrency: readers in other processes, a publish that waits for them,
two runs on one ANT_HOME, schema versions."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from tests.test_ingest import FIXTURES, ingest_files
from warehouse.schema import SCHEMA_VERSION
from warehouse.store import STAGED_GRACE_S, Warehouse, WarehouseError, WarehouseLocked

HOLD_READER = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
print(con.execute("SELECT count(*) FROM sequences").fetchone()[0], flush=True)
time.sleep(float(sys.argv[2]))
"""


@pytest.fixture()
def wh(tmp_path):
    wh = Warehouse(tmp_path / "home", lock_timeout_s=30)
    src = FIXTURES / "amazon-2018"
    ingest_files(wh, "2018", "Gift_Cards", src / "Gift_Cards_5.json.gz", src / "meta_Gift_Cards.json.gz")
    return wh


def test_publish_waits_for_a_reader_in_another_process(wh):
    reader = subprocess.Popen([sys.executable, "-c", HOLD_READER, str(wh.db_path), "2"],
                              stdout=subprocess.PIPE, text=True)
    assert reader.stdout.readline().strip() == "453"  # the reader is in
    started = time.monotonic()
    src = FIXTURES / "amazon-2018"
    ingest_files(wh, "2018", "Magazine_Subscriptions", src / "Magazine_Subscriptions_5.json.gz",
                 src / "meta_Magazine_Subscriptions.json.gz")
    assert reader.wait(timeout=30) == 0
    assert time.monotonic() - started >= 1.0  # it waited for the reader, then published
    with wh.reader() as con:
        assert con.execute("SELECT count(*) FROM domain_stats").fetchone()[0] == 2


def test_a_writer_that_never_frees_the_file_is_a_clear_error(wh):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_READER, str(wh.db_path), "30"],
                              stdout=subprocess.PIPE, text=True)
    try:
        holder.stdout.readline()
        impatient = Warehouse(wh.home, lock_timeout_s=0.5)
        with pytest.raises(WarehouseLocked, match="held by another process"):
            with impatient.writer():
                pass
    finally:
        holder.kill()


HOLD_RUN_LOCK = """
import sys
from warehouse.store import STAGED_GRACE_S, Warehouse
with Warehouse(sys.argv[1]).write_lock():
    print("holding", flush=True)
    sys.stdin.readline()
"""


def test_second_run_on_the_same_home_is_refused_clearly(wh):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_RUN_LOCK, str(wh.home)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent)
    assert holder.stdout.readline().strip() == "holding"
    with pytest.raises(WarehouseLocked, match="another run is writing.*Wait for it"):
        with wh.write_lock(timeout_s=0.2):
            pass
    holder.communicate("done\n", timeout=30)
    with wh.write_lock(timeout_s=0.2):  # free again once the first run ends
        with wh.write_lock():  # and re-entrant within a process (the pipeline's flows nest)
            pass


def test_garbage_collection_keeps_exactly_the_published_files(wh):
    stray = wh.new_parquet_path("sequences", "Gift_Cards")
    stray.write_bytes(b"left by a crashed run")
    staged = wh.new_parquet_path("recommendations", "Gift_Cards")
    staged.write_bytes(b"written a moment ago by a run that has not published yet")
    old = time.time() - STAGED_GRACE_S - 60
    os.utime(stray, (old, old))
    assert wh.collect_garbage() == 1 and not stray.exists() and staged.exists()
    with wh.reader() as con:
        assert con.execute("SELECT count(*) FROM sequences").fetchone()[0] == 453


def test_newer_schema_is_refused(wh):
    con = duckdb.connect(str(wh.db_path))
    con.execute("UPDATE schema_version SET version = ?", [SCHEMA_VERSION + 1])
    con.close()
    with pytest.raises(WarehouseError, match="newer than this code"):
        with wh.writer():
            pass


def test_empty_warehouse_views_exist(tmp_path):
    wh = Warehouse(tmp_path / "fresh")
    with wh.writer():
        pass
    with wh.reader() as con:
        assert con.execute("SELECT count(*) FROM domain_stats").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM items").fetchone()[0] == 0


def test_a_moved_or_copied_home_reads_its_own_files(wh, tmp_path):
    import shutil
    with wh.reader() as con:
        expected = con.execute("SELECT * FROM sequences ORDER BY ALL").fetchall()
    moved = tmp_path / "moved"
    shutil.move(wh.home, moved)
    with Warehouse(moved).reader() as con:  # before: "No files found" at the old absolute paths
        assert con.execute("SELECT * FROM sequences ORDER BY ALL").fetchall() == expected
    copy = tmp_path / "copy"
    shutil.copytree(moved, copy)
    shutil.rmtree(moved / "parquet")  # before: the copy silently read the original's files
    with Warehouse(copy).reader() as con:
        assert con.execute("SELECT * FROM sequences ORDER BY ALL").fetchall() == expected
    # and a plain DuckDB client sees the copy's own files too
    con = duckdb.connect(str(copy / "warehouse.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM sequences").fetchone()[0] == len(expected)
    con.close()

"""The command-line contract and the config: `ant sql` is read-only and prints tables or CSV,
bad names and bad configs fail fast with a message that says what to do."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ant_config import ConfigError, load_config
from tests.test_ingest import FIXTURES, ingest_files
from warehouse.store import Warehouse

ANT = [sys.executable, "-m", "flows.cli"]


def ant(*args, env=None, timeout=600, **kw):
    """`ant ARGS` in a subprocess. The timeout only keeps a hung command from hanging the suite:
    it is far above what any command needs, since a busy CI machine is slow, not broken."""
    return subprocess.run([*ANT, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=Path(__file__).parent.parent, **kw)


@pytest.fixture()
def home(tmp_path):
    wh = Warehouse(tmp_path / "home")
    src = FIXTURES / "amazon-2018"
    ingest_files(wh, "2018", "Gift_Cards", src / "Gift_Cards_5.json.gz", src / "meta_Gift_Cards.json.gz")
    return wh.home


def test_sql_prints_a_table_and_csv(home):
    env = {"ANT_HOME": str(home)}
    out = ant("sql", "SELECT domain, users, items, interactions FROM domain_stats", env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].split() == ["domain", "users", "items", "interactions"]
    assert out.stdout.splitlines()[2].split() == ["Gift_Cards", "453", "147", "2941"]
    csv = ant("sql", "SELECT item_id, title FROM items ORDER BY item_id LIMIT 2", "--csv", env=env)
    assert csv.stdout.splitlines() == ["item_id,title", "B001BKEWF2,Serendipity 3 $100.00 Gift Card",
                                       "B001GXRQW0,Amazon.com Gift Cards"]


def test_sql_is_read_only(home):
    out = ant("sql", "DELETE FROM downloads", env={"ANT_HOME": str(home)})
    assert out.returncode == 1 and "read-only" in out.stderr.lower()


def test_sql_cannot_write_fetch_or_escape(home, tmp_path):
    """Every way a query wrote or reached out before: refused with one error line, nothing changed."""
    live = next((home / "parquet" / "items").glob("*/*.parquet"))
    before = live.read_bytes()
    (home / "notes.txt").write_text("outside the Parquet folder")
    attacks = {
        f"COPY (SELECT 1 AS x) TO '{live}'": "COPY",
        f"COPY (SELECT 1) TO '{tmp_path / 'out.csv'}'": "COPY",
        f"ATTACH '{tmp_path / 'other.duckdb'}' (READ_WRITE)": "ATTACH",
        f"ATTACH '{tmp_path / 'other.duckdb'}'; CREATE TABLE other.t AS SELECT 1": "exactly one statement",
        "CREATE TEMP TABLE t AS SELECT 1": "CREATE",
        "INSTALL vss": "LOAD",
        "LOAD vss": "LOAD",
        "CHECKPOINT": "CALL",
        "SET threads = 1": "SET",
        "PRAGMA version": "PRAGMA",
        "SELECT 1; SELECT 2": "exactly one statement",
        f"EXPLAIN ANALYZE COPY (SELECT 1) TO '{live}'": "EXPLAIN",
        "SELECT * FROM read_csv('/etc/passwd')": "read_csv is refused",
        f"SELECT * FROM read_text('{home}/parquet/../notes.txt')": "read_text is refused",
        "SELECT * FROM read_parquet('/etc/passwd')": "Permission",  # the directory allow-list still holds
        f"SELECT * FROM read_parquet('{home}/parquet/../warehouse.duckdb')": "No magic bytes",  # not Parquet: nothing read
    }
    for query, message in attacks.items():
        out = ant("sql", query, env={"ANT_HOME": str(home)})
        assert out.returncode == 1 and message in out.stderr, (query, out.stderr)
        assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1, (query, out.stderr)
    assert live.read_bytes() == before and not (tmp_path / "out.csv").exists()
    assert not (tmp_path / "other.duckdb").exists()
    for query in ("DESCRIBE items", "SHOW TABLES", "SUMMARIZE SELECT price FROM items", "EXPLAIN SELECT 1",
                  "WITH a AS (SELECT 1 AS x) SELECT x FROM a", "FROM items LIMIT 1",
                  "SELECT count(*) FROM item_features"):
        out = ant("sql", query, env={"ANT_HOME": str(home)})
        assert out.returncode == 0, (query, out.stderr)


def test_warehouse_opens_in_the_duckdb_client_and_has_feature_friendly_views(home):
    import duckdb
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM splits WHERE split = 'test'").fetchone()[0] == 453
    con.close()


def test_sql_without_a_warehouse_says_what_to_do(tmp_path):
    out = ant("sql", "SELECT 1", env={"ANT_HOME": str(tmp_path / "empty")})
    assert out.returncode == 1 and "run `ant ingest` first" in out.stderr


def test_unknown_category_fails_fast_listing_valid_names(tmp_path):
    out = ant("ingest", "--domain", "Gift_Card", "--release", "2023",
              env={"ANT_HOME": str(tmp_path), "PREFECT_HOME": str(tmp_path / "prefect-home")})
    assert out.returncode == 1
    assert "unknown Amazon 2023 category 'Gift_Card'" in out.stderr and "Subscription_Boxes" in out.stderr
    assert not (tmp_path / "raw").exists()  # no download
    assert not (tmp_path / "prefect-home" / "ant-server").exists()  # no Prefect server started


def test_config_precedence_env_over_file_over_defaults(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text("home: from-file\nrelease: '2023'\ntargets: [Baby_Products]\n"
                    "sources: {amazon_2023_url: 'http://file.example/'}\nfiltering: {k_core: 3}\n")
    monkeypatch.setenv("ANT_AMAZON_2023_URL", "file:///mirror/2023")
    cfg = load_config(path)
    assert (cfg.release, cfg.filtering.k_core, str(cfg.home)) == ("2023", 3, "from-file")
    assert cfg.sources.base_url("2023") == "file:///mirror/2023"
    monkeypatch.setenv("ANT_HOME", str(tmp_path / "env-home"))
    assert load_config(path).home == tmp_path / "env-home"
    assert load_config(None).filtering.k_core == 5 and load_config(None).model.max_seq_len == 50


@pytest.mark.parametrize("text, message", [
    ("release: '2019'\n", "release"),
    ("targets: [Prime_Pantry]\nrelease: '2023'\n", "Prime_Pantry"),
    ("filtering: {k_core: 0}\n", "k_core"),
    ("filtering: {kcore: 3}\n", "kcore"),
    ("- not a mapping\n", "mapping"),
    ("ingest: {duckdb_memory_limit: lots}\n", "duckdb_memory_limit"),
    ("orchestration: {pretrain_nodes: 2}\n", "rendezvous_endpoint"),
    ("features: {fetch: {max_bytes: 2000, inflight_bytes: 1000}}\n", "inflight_bytes"),
])
def test_invalid_config_names_the_file_and_the_field(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_release_may_be_an_integer_and_an_unwritable_home_is_one_error_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("release: 2018\n")
    assert load_config(path).release == "2018"
    out = ant("ingest", "--domain", "Gift_Cards", env={"ANT_HOME": "/proc/ant"})
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert out.stderr.startswith("error: cannot write to ANT_HOME /proc/ant")


@pytest.mark.parametrize("reader", ["read_blob", "read_text", "read_csv", "read_json_auto", "glob"])
def test_sql_cannot_read_the_database_file_or_other_files(home, reader):
    """DuckDB lets a connection read its own database file with read_blob and friends."""
    out = ant("sql", f"SELECT * FROM {reader}('{home / 'warehouse.duckdb'}')", env={"ANT_HOME": str(home)})
    assert out.returncode == 1 and f"{reader} is refused" in out.stderr, out.stderr


def test_sql_streams_a_bounded_number_of_rows(home):
    env = {"ANT_HOME": str(home)}
    big = ant("sql", "SELECT * FROM range(300000000)", env=env)  # once held 4.7 GB before failing
    assert big.returncode == 0 and "(10000 rows)" in big.stdout and "--limit N for more" in big.stderr
    few = ant("sql", "SELECT * FROM range(300000000)", "--limit", "5", env=env)
    assert few.stdout.splitlines()[-1] == "(5 rows)"
    piped = ant("sql", "SELECT * FROM range(25000)", "--csv", env=env)  # CSV into a pipe: every row
    assert len(piped.stdout.splitlines()) == 25001 and not piped.stderr.strip()


def test_sql_on_a_copied_home_never_writes_it(home, tmp_path):
    import hashlib
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(home, copy)
    before = hashlib.sha256((copy / "warehouse.duckdb").read_bytes()).hexdigest()
    out = ant("sql", "SELECT count(*) FROM sequences", env={"ANT_HOME": str(copy)})
    assert out.returncode == 0 and out.stdout.splitlines()[2].strip() == "453", out.stderr
    shutil.rmtree(home / "parquet")  # the copy reads its own files, not the original's
    again = ant("sql", "SELECT count(*) FROM sequences", env={"ANT_HOME": str(copy)})
    assert again.returncode == 0 and again.stdout.splitlines()[2].strip() == "453", again.stderr
    assert hashlib.sha256((copy / "warehouse.duckdb").read_bytes()).hexdigest() == before


def test_the_real_data_config_loads_and_names_weights_every_machine_has():
    from ant_config import load_config
    from encoders.weights import resolve
    config = load_config(Path(__file__).parent.parent / "configs" / "real-text.yaml")
    assert config.auxiliary_domains == ["Games_text", "Toys_text", "Sports_text", "Electronics_text"]
    assert config.target_domains == ["Tools_text", "Office_text", "CDs_text"]
    assert config.features.modalities == ["text"]
    assert Path(resolve(config.features.text.model), "config.json").is_file()  # the offline MiniLM package


def test_help_and_sql_load_only_what_they_need(home):
    """`ant --help` builds no pydantic model and loads neither rich nor torch; `ant sql` loads
    the config but no torch, pyarrow or Prefect (what keeps both under the 0.5 s of bench/cli.py)."""
    probe = ("import sys, runpy; sys.argv = ['ant'] + sys.argv[1:]\n"
             "try:\n    runpy.run_module('flows.cli', run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "print(sorted(m for m in ('ant_config.config', 'pydantic', 'rich', 'torch', 'pyarrow', 'prefect') "
             "if m in sys.modules), file=sys.stderr)")
    for args, loaded in ((["--help"], "[]"), (["sql", "SELECT count(*) FROM sequences"], "['ant_config.config', 'pydantic']")):
        run = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True,
                             cwd=Path(__file__).parent.parent, timeout=600, env={**os.environ, "ANT_HOME": str(home)})
        assert ("Commands:" if args == ["--help"] else "453") in run.stdout, run.stderr
        assert run.stderr.strip().splitlines()[-1] == loaded, run.stderr
    from ant_config import AntConfig  # the package's names still resolve (on first use)
    assert AntConfig().home

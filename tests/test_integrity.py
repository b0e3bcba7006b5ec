"""Data integrity against broken and hostile input: corrupt gzip files are caught before
anything is parsed, a domain never shrinks or empties silently, mirrors never mix, and every
bad line is a named reject."""
from __future__ import annotations

import gzip
import json

import pytest

from ant_config import Filtering, Ingest
from tests.test_ingest import FIXTURES, ingest_files, meta, review, write_gz
from warehouse.download import CorruptRawFile, DownloadError, fetch, lookup, raw_path
from warehouse.ingest import DomainShrinks, ingest_domain
from warehouse.store import Warehouse

GIFT = FIXTURES / "amazon-2018" / "Gift_Cards_5.json.gz"
GIFT_META = FIXTURES / "amazon-2018" / "meta_Gift_Cards.json.gz"


def flip_a_bit(path, at: float) -> None:
    """Flip the lowest bit of the byte `at` (a fraction) of the way into a file: inside a Parquet
    file's data pages its footer and row count stay as they were."""
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x01
    path.write_bytes(bytes(data))


def tables(wh: Warehouse):
    with wh.reader() as con:
        return (con.execute("SELECT * FROM parquet_files ORDER BY ALL").fetchall(),
                con.execute("SELECT * FROM domain_stats ORDER BY ALL").fetchall())


@pytest.fixture()
def published(tmp_path):
    wh = Warehouse(tmp_path / "home")
    ingest_files(wh, "2018", "Gift_Cards", GIFT, GIFT_META)
    return wh


def test_every_single_bit_flip_is_caught_before_parsing(published, tmp_path):
    """Of 60 flips DuckDB read 58 without complaint (different line counts, once an empty
    domain); every one must fail the download, keep nothing and leave the tables as they were."""
    before = tables(published)
    data = GIFT.read_bytes()
    body = data.index(b"\0", 10) + 1  # after the header's file name, which no checksum covers
    for n, offset in enumerate(range(body, len(data), (len(data) - body) // 60)):
        flipped = bytearray(data)
        flipped[offset] ^= 1 << (n % 8)
        source = tmp_path / f"flip{n}" / "Gift_Cards_5.json.gz"
        source.parent.mkdir()
        source.write_bytes(bytes(flipped))
        with pytest.raises(CorruptRawFile, match="truncated or corrupt"):
            ingest_files(published, "2018", "Gift_Cards", source, GIFT_META)
        assert lookup(published, str(source)) is None
        assert not raw_path(published, "2018", "reviews/Gift_Cards_5.json.gz", str(source.parent)).exists()
    assert n >= 59
    assert tables(published) == before


def test_a_raw_file_changed_after_download_is_refused(published, tmp_path):
    before = tables(published)
    record = fetch(published, str(GIFT), raw_path(published, "2018", "reviews/Gift_Cards_5.json.gz",
                                                  str(GIFT.parent)), progress=False).record
    meta_record = lookup(published, str(GIFT_META))
    path = published.home / record.path
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:1000]))  # valid gzip, other content
    with pytest.raises(CorruptRawFile, match="sha256 differs from the one recorded at download"):
        ingest_domain(published, "2018", "Gift_Cards", record, meta_record, Filtering(k_core=4), Ingest())
    assert lookup(published, str(GIFT)) is None and not path.exists()  # forgotten: the next run downloads it
    assert tables(published) == before


def test_a_shrinking_or_empty_domain_is_not_published_without_allow_shrink(published, tmp_path):
    before = tables(published)
    lines = gzip.decompress(GIFT.read_bytes()).decode().splitlines()
    fewer = write_gz(tmp_path / "few" / "Gift_Cards_5.json.gz", lines[: len(lines) // 5])
    with pytest.raises(DomainShrinks, match="fewer than the published 2941.*--allow-shrink"):
        ingest_files(published, "2018", "Gift_Cards", fewer, GIFT_META, k_core=2)
    assert tables(published) == before
    assert not [p for p in published.parquet_dir.glob("*/*/*.parquet")
                if str(p.relative_to(published.home)) not in {r[2] for r in before[0]}]  # nothing staged left
    rec = {kind: fetch(published, str(src), raw_path(published, "2018", f"{kind}/{src.name}", str(src.parent)),
                       progress=False).record for kind, src in (("reviews", fewer), ("meta", GIFT_META))}
    summary = ingest_domain(published, "2018", "Gift_Cards", rec["reviews"], rec["meta"], Filtering(k_core=2),
                            Ingest(allow_shrink=True))
    assert summary.status == "ingested" and 0 < summary.interactions < 2941 // 2

    # valid lines whose 5-core is empty: refused even for a new domain
    sparse = write_gz(tmp_path / "sparse" / "Software_5.json.gz", [review(f"u{n}", f"I{n}", n) for n in range(50)])
    metas = write_gz(tmp_path / "sparse" / "meta_Software.json.gz", [meta(f"I{n}") for n in range(50)])
    with pytest.raises(DomainShrinks, match="empty after filtering.*50 review lines"):
        ingest_files(published, "2018", "Software", sparse, metas)
    with published.reader() as con:
        assert con.execute("SELECT count(*) FROM domains WHERE domain = 'Software'").fetchone()[0] == 0


def test_bad_lines_of_every_kind_are_named_rejects(tmp_path):
    good = [review(f"u{u}", item, u * 10 + n) for u in range(3) for n, item in enumerate("ABC")]
    lines = [line.encode() for line in good] + [
        b'{"reviewerID": "u\xff\xfe", "asin": "A", "overall": 5, "unixReviewTime": 1}',          # not UTF-8
        json.dumps({"reviewerID": {"id": 7}, "asin": "A", "overall": 5, "unixReviewTime": 1}).encode(),
        json.dumps({"reviewerID": "u\u0000x", "asin": "A", "overall": 5, "unixReviewTime": 1}).encode(),
        json.dumps({"reviewerID": "u9", "asin": "A", "overall": 1e308, "unixReviewTime": 1}).encode(),
        json.dumps({"reviewerID": "u9", "asin": "A", "overall": -3, "unixReviewTime": 1}).encode(),
        json.dumps({"reviewerID": "u9", "asin": ["A"], "overall": 4, "unixReviewTime": 1}).encode(),
        b'{"reviewerID": "' + b"x" * 5000 + b'", "asin": "A", "overall": 5, "unixReviewTime": 1}',  # too long
    ]
    reviews = tmp_path / "src" / "Software_5.json.gz"
    reviews.parent.mkdir()
    # the last line is an over-long one without a newline, as a cut-off file would end
    reviews.write_bytes(gzip.compress(b"\n".join(lines) + b'\n{"reviewerID": "' + b"y" * 5000))
    metas = write_gz(tmp_path / "src" / "meta_Software.json.gz",
                     [meta(i) for i in "ABC"] + [json.dumps({"asin": {"x": 1}, "title": "object id"})])
    wh = Warehouse(tmp_path / "home")
    rec = {kind: fetch(wh, str(src), raw_path(wh, "2018", f"{kind}/{src.name}", str(src.parent)),
                       progress=False).record for kind, src in (("reviews", reviews), ("meta", metas))}
    summary = ingest_domain(wh, "2018", "Software", rec["reviews"], rec["meta"], Filtering(k_core=1),
                            Ingest(max_line_bytes=1000))
    assert summary.users == 3 and summary.interactions == 9
    with wh.reader() as con:
        rejects = con.execute("SELECT line, reason FROM rejects WHERE file LIKE '%Software_5%' ORDER BY line").fetchall()
        meta_rejects = con.execute("SELECT line, reason FROM rejects WHERE file LIKE '%meta_%'").fetchall()
    assert rejects == [
        (10, "not UTF-8 (invalid start byte at byte 17)"), (11, "reviewerID is not a string"),
        (12, "reviewerID contains a NUL character"), (13, "overall is outside [1, 5]"),
        (14, "overall is outside [1, 5]"), (15, "asin is not a string"),
        (16, "line longer than ingest.max_line_bytes (1000 bytes)"),
        (17, "line longer than ingest.max_line_bytes (1000 bytes)")]
    assert meta_rejects == [(4, "asin is not a string")]


def test_only_http_https_and_local_sources_are_fetched(tmp_path):
    wh = Warehouse(tmp_path / "home")
    for url in ("ftp://127.0.0.1/Gift_Cards_5.json.gz", "gopher://127.0.0.1/x"):
        with pytest.raises(DownloadError, match="unsupported URL scheme") as info:
            fetch(wh, url, wh.raw_dir / "x.json.gz", progress=False)
        assert type(info.value) is DownloadError  # final: never retried as transient


HOSTILE_NAMES = ["../../../../outside", "../items/Evil", "", ".", "..", "a/b", "-v", "x" * 300, "é", "a b"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_name_never_becomes_a_path_outside_the_home(tmp_path, name):
    """Every command that takes a domain or target checks the name at the boundary (a usage
    error, exit 2) and writes nothing; below it, every path built from a name must stay under
    its root."""
    from tests.test_atomic import write_atomic
    from tests.test_cli_config import ant
    write_atomic(tmp_path / "data")
    env = {"ANT_HOME": str(tmp_path / "home")}
    for args in (["import-atomic", str(tmp_path / "data"), "--domain", name],
                 ["export-atomic", str(tmp_path / "out"), "--domain", name],
                 ["adapt", "--target", name, "--method", "pop"],
                 ["recommend", "--target", name, "--all"],
                 ["features", "--domain", name], ["pretrain", "--domain", name]):
        out = ant(*args, env=env)
        said = " ".join(out.stderr.replace("│", " ").split())  # the usage error's box may wrap the line
        assert out.returncode == 2 and "is not allowed" in said, (args, said[-500:])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # nothing written anywhere


def test_paths_built_from_names_stay_under_their_root(tmp_path):
    from ant_config.releases import BadName
    from warehouse.store import WarehouseError, under
    wh = Warehouse(tmp_path / "home")
    with pytest.raises(BadName):
        wh.new_parquet_path("sequences", "../items/Evil")
    with pytest.raises(WarehouseError, match="would leave"):
        under(tmp_path / "root", "..", "escaped")
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path)
    with pytest.raises(WarehouseError, match="would leave"):
        under(tmp_path / "root", "link", "x")
    assert under(tmp_path / "root", "a", "b") == tmp_path / "root" / "a" / "b"


def test_recommend_k_is_at_least_one(published):
    from tests.test_cli_config import ant
    for k in ("0", "-1"):
        out = ant("recommend", "--target", "Gift_Cards", "--all", "-k", k, env={"ANT_HOME": str(published.home)})
        assert out.returncode == 2 and "Traceback" not in out.stderr and "-k" in out.stderr, out.stderr


@pytest.mark.parametrize("damage", ["zeroed", "truncated", "garbage"])
def test_a_damaged_warehouse_file_is_one_error_naming_it(published, damage):
    """Not a 120 s wait blaming "another process" (a checksum error names a 'block'), nor a
    traceback on every command: one line naming the file and the way out."""
    from tests.test_cli_config import ant
    db = published.db_path
    size = db.stat().st_size
    db.write_bytes({"zeroed": b"\0" * size, "truncated": db.read_bytes()[:size // 3],
                    "garbage": b"not a database at all" * 100}[damage])
    out = ant("sql", "SELECT count(*) FROM sequences", env={"ANT_HOME": str(published.home)})
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert f"error: {db} cannot be opened, it looks damaged" in out.stderr
    assert "another process" not in out.stderr


def test_only_duckdbs_own_lock_message_is_a_lock_error():
    import duckdb
    from warehouse.store import _is_lock_error
    assert _is_lock_error(duckdb.IOException('Could not set lock on file "w.duckdb": Conflicting lock is held'))
    assert not _is_lock_error(duckdb.IOException("Corrupt database file: computed checksum does not match "
                                                 "stored checksum for block 7"))


def test_one_damaged_file_blocks_nothing_and_re_running_repairs_it(published, tmp_path):
    """A truncated feature file used to crash every later publish (of any domain), and a deleted
    or garbage table file could not be repaired by ingesting again."""
    from ant_config import AntConfig
    from services.context import Context
    from services.features import featurize_domain
    from tests.test_cli_config import ant
    from tests.tiny_models import tiny_bert_dir
    config = AntConfig.model_validate({"home": str(published.home), "features": {"modalities": ["text"], "text": {
        "kind": "transformers", "model": tiny_bert_dir(tmp_path / "bert"), "pooling": "mean"}}})
    featurize_domain(Context.of(config), "Gift_Cards")
    with published.reader() as con:
        paths = dict(con.execute("SELECT table_name, path FROM parquet_files WHERE domain = 'Gift_Cards'").fetchall())
    features, sequences = published.home / paths["text_features"], published.home / paths["sequences"]
    features.write_bytes(features.read_bytes()[:-100])  # truncated
    sequences.write_bytes(b"garbage")
    env = {"ANT_HOME": str(published.home)}
    doctor = ant("doctor", env=env)
    assert doctor.returncode == 1 and f"Gift_Cards text_features: {features}: unreadable" in doctor.stdout
    assert f"Gift_Cards sequences: {sequences}: unreadable" in doctor.stdout and "ant ingest --domain Gift_Cards" in doctor.stderr
    ingest_files(published, "2018", "Magazine_Subscriptions", FIXTURES / "amazon-2018" / "Magazine_Subscriptions_5.json.gz",
                 FIXTURES / "amazon-2018" / "meta_Magazine_Subscriptions.json.gz")  # another domain publishes
    with published.reader() as con:
        assert con.execute("SELECT count(*) FROM sequences WHERE domain = 'Magazine_Subscriptions'").fetchone()[0] > 0
    assert ingest_files(published, "2018", "Gift_Cards", GIFT, GIFT_META).status == "ingested"  # repaired
    [text] = featurize_domain(Context.of(config), "Gift_Cards")
    assert text.encoded == 147
    assert ant("doctor", env=env).returncode == 0
    with published.reader() as con:
        assert con.execute("SELECT count(*) FROM item_features WHERE domain = 'Gift_Cards' AND has_text").fetchone()[0] == 147
        features = published.home / con.execute("SELECT path FROM parquet_files WHERE domain = 'Gift_Cards' "
                                                "AND table_name = 'text_features'").fetchone()[0]
    flip_a_bit(features, 0.5)  # footer and rows intact: only the checksum shows it
    [text] = featurize_domain(Context.of(config), "Gift_Cards")
    assert text.encoded == 147  # its vectors are not trusted as a cache, but encoded anew
    assert ant("doctor", env=env).returncode == 0


def test_exports_are_atomic_and_never_overwrite_silently(published, tmp_path, monkeypatch):
    from warehouse import atomic
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(atomic.AtomicFormatError, match="not an empty folder.*--force"):
        atomic.export_atomic(published, "Gift_Cards", out, 50)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]

    def full_disk(wh, domain, directory, max_len):
        (directory / "Gift_Cards.train.inter").write_text("partial")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(atomic, "_write_export", full_disk)
    with pytest.raises(OSError):
        atomic.export_atomic(published, "Gift_Cards", out, 50, force=True)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]  # the old folder, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "out"]  # no staging left
    monkeypatch.undo()
    written = atomic.export_atomic(published, "Gift_Cards", out, 50, force=True)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in written) and "notes.txt" not in \
        {p.name for p in out.iterdir()}


def test_a_full_disk_is_one_error_line(published, monkeypatch, capsys):
    """Import, adapt or `recommend --all` on a full disk: one error line, exit 1, no traceback."""
    import errno
    import sys

    from flows import cli
    from services import recommend

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(published.home / "parquet" / "x.parquet"))
    monkeypatch.setattr(recommend, "recommend_all", full)
    monkeypatch.setenv("ANT_HOME", str(published.home))
    monkeypatch.setattr(sys, "argv", ["ant", "recommend", "--target", "Gift_Cards", "--all"])
    with pytest.raises(SystemExit) as ended:
        cli.main()
    err = capsys.readouterr().err
    assert ended.value.code == 1 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: no space left on the device writing ")


def test_doctor_finds_changed_bytes_the_footer_does_not_show_and_re_ingesting_repairs_them(published):
    """A flipped bit inside a data page leaves the footer and the row count as they were: only
    the sha256 recorded at publish shows it."""
    from tests.test_cli_config import ant
    from warehouse.store import file_problem
    with published.reader() as con:
        stored, rows = con.execute("SELECT path, rows FROM parquet_files "
                                   "WHERE domain = 'Gift_Cards' AND table_name = 'items'").fetchone()
    path = published.home / stored
    flip_a_bit(path, 0.25)
    assert file_problem(path, rows) is None  # what the footer check alone sees
    env = {"ANT_HOME": str(published.home)}
    doctor = ant("doctor", env=env)
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr
    assert f"Gift_Cards items: {path}: its sha256 differs from the one recorded at publish" in doctor.stdout
    assert "repair Gift_Cards: `ant ingest --domain Gift_Cards`" in doctor.stderr
    assert ingest_files(published, "2018", "Gift_Cards", GIFT, GIFT_META).status == "ingested"  # repaired
    doctor = ant("doctor", env=env)
    assert doctor.returncode == 0 and "all present and whole (checksums match)" in doctor.stdout


def test_files_published_before_checksums_are_checked_without_them(published):
    """Migration 7 adds the column empty: hashing old files then would bless whatever they hold,
    so `ant doctor` checks their footers and rows and says their bytes were not checked."""
    import duckdb
    from tests.test_cli_config import ant
    con = duckdb.connect(str(published.db_path))
    con.execute("ALTER TABLE parquet_files DROP COLUMN sha256")
    con.execute("UPDATE schema_version SET version = 6")
    con.close()
    doctor = ant("doctor", env={"ANT_HOME": str(published.home)})
    with published.reader() as con:
        files, unhashed = con.execute("SELECT count(*), count(*) FILTER (WHERE sha256 IS NULL) FROM parquet_files").fetchone()
    assert files == unhashed > 0
    assert doctor.returncode == 0 and "all present and whole" in doctor.stdout and "checksums match" not in doctor.stdout
    assert f"{files} of {files} files were published before checksums were recorded" in doctor.stderr

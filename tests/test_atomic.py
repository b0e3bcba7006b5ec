"""`ant import-atomic`: a processed RecBole/UniSRec dataset round-trips into the warehouse
(split, sequences and features exactly as written); format errors name file and line."""
from __future__ import annotations

import re

import numpy as np
import pytest

from tests.test_cli_config import ant
from warehouse.atomic import AtomicFormatError, FeatureFile, export_atomic, import_atomic
from warehouse.store import Warehouse

# user → full sequence of 0-based item indices (the last two are valid and test targets)
SEQUENCES = {"0": [0, 1, 2, 3, 4], "1": [2, 4, 5, 1], "2": [5, 3, 0, 2, 1, 4], "3": [1, 0, 5]}
ITEMS = ["B00A", "B00B", "B00C", "B00D", "B00E", "B00F"]
USERS = ["AX1", "AX2", "AX3", "AX4"]
HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token\n"


def write_atomic(folder, name="Scientific", max_len=50):
    """The files exactly as UniSRec's preprocessing writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    train, valid, test = [HEADER], [HEADER], [HEADER]
    for user, seq in SEQUENCES.items():
        tr = [str(i) for i in seq[:-2]]
        for target_idx in range(1, len(tr)):
            train.append(f"{user}\t{' '.join(tr[:-target_idx][-max_len:])}\t{tr[-target_idx]}\n")
        valid.append(f"{user}\t{' '.join(tr[-max_len:])}\t{seq[-2]}\n")
        test.append(f"{user}\t{' '.join((tr + [str(seq[-2])])[-max_len:])}\t{seq[-1]}\n")
    for split, lines in (("train", train), ("valid", valid), ("test", test)):
        (folder / f"{name}.{split}.inter").write_text("".join(lines))
    (folder / f"{name}.item2index").write_text("".join(f"{a}\t{i}\n" for i, a in enumerate(ITEMS)))
    (folder / f"{name}.user2index").write_text("".join(f"{u}\t{i}\n" for i, u in enumerate(USERS)))
    (folder / f"{name}.text").write_text("".join(f"{a}\tProduct {a}\n" for a in ITEMS))  # keyed by raw id
    text = np.random.default_rng(0).normal(size=(len(ITEMS), 8)).astype(np.float32)
    image = np.random.default_rng(1).normal(size=(len(ITEMS), 4)).astype(np.float32)
    text.tofile(folder / f"{name}.feat1CLS")
    image.tofile(folder / f"{name}_image_0.feat")
    return text, image


def test_import_round_trips_split_sequences_and_features(tmp_path):
    text, image = write_atomic(tmp_path / "data")
    out = ant("import-atomic", str(tmp_path / "data"), "--domain", "Scientific",
              "--feature", f"text={tmp_path / 'data' / 'Scientific.feat1CLS'}:8",
              "--feature", f"image={tmp_path / 'data' / 'Scientific_image_0.feat'}:4",
              env={"ANT_HOME": str(tmp_path / "home")})
    assert out.returncode == 0, out.stderr
    assert "4 users, 6 items, 18 interactions" in out.stdout
    wh = Warehouse(tmp_path / "home")
    with wh.reader() as con:
        users = dict(con.execute("SELECT user_idx, user_id FROM user_index").fetchall())
        seqs = {users[u]: [i - 1 for i in s] for u, s in
                con.execute("SELECT user_idx, item_idxs FROM sequences").fetchall()}
        assert seqs == {USERS[int(u)]: s for u, s in SEQUENCES.items()}
        splits = {(users[u], split): ([i - 1 for i in h], t - 1) for u, split, h, t in
                  con.execute("SELECT user_idx, split, history, target FROM splits").fetchall()}
        for user, seq in SEQUENCES.items():
            raw = USERS[int(user)]
            assert splits[(raw, "train")] == (seq[:-3], seq[-3])
            assert splits[(raw, "valid")] == (seq[:-2], seq[-2])
            assert splits[(raw, "test")] == (seq[:-1], seq[-1])
        rows = con.execute("SELECT item_id, item_idx, text::FLOAT[], image::FLOAT[], has_text, has_image "
                           "FROM item_features ORDER BY item_idx").fetchall()
        assert [r[0] for r in rows] == ITEMS and [r[1] for r in rows] == [1, 2, 3, 4, 5, 6]
        assert np.allclose([r[2] for r in rows], text) and np.allclose([r[3] for r in rows], image)
        assert all(r[4] and r[5] for r in rows)
        assert con.execute("SELECT text FROM items WHERE item_id = 'B00C'").fetchone()[0] == "Product B00C"
        assert con.execute("SELECT users, items, interactions FROM domain_stats").fetchone() == (4, 6, 18)


def test_long_histories_cut_to_50_are_rebuilt_whole(tmp_path):
    global SEQUENCES
    saved = SEQUENCES
    SEQUENCES = {"0": [i % 6 for i in range(70)], "1": [1, 2, 3]}
    try:
        write_atomic(tmp_path / "data")
        wh = Warehouse(tmp_path / "home")
        import_atomic(wh, tmp_path / "data", "Long", [])
        with wh.reader() as con:
            seq = con.execute("SELECT item_idxs FROM sequences WHERE user_idx = 1").fetchone()[0]
        assert [i - 1 for i in seq] == SEQUENCES["0"]
    finally:
        SEQUENCES = saved


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "Scientific.feat1CLS").write_bytes(b"\0" * (4 * 8 * 5)), "5 rows of dimension 8.*6 items"),
    (lambda d: (d / "Scientific.feat1CLS").write_bytes(b"\0" * 100), "not a whole number of float32 rows"),
    (lambda d: (d / "Scientific.test.inter").write_text(HEADER + "0\t0 1 2 3\t9\n"), r"test.inter:2: unknown item token '9'"),
    (lambda d: (d / "Scientific.valid.inter").write_text("user\titems\titem\n"), r"valid.inter:1: header"),
])
def test_format_errors_are_clear_and_store_nothing(tmp_path, damage, message):
    wh = Warehouse(tmp_path / "home")
    write_atomic(tmp_path / "good")
    import_atomic(wh, tmp_path / "good", "Scientific", [])  # a published domain to keep
    before = sorted(wh.parquet_dir.glob("*/*/*.parquet"))
    write_atomic(tmp_path / "data")
    damage(tmp_path / "data")
    with pytest.raises(AtomicFormatError, match=message):
        import_atomic(wh, tmp_path / "data", "Scientific",
                      [FeatureFile("text", tmp_path / "data" / "Scientific.feat1CLS", 8)])
    assert sorted(wh.parquet_dir.glob("*/*/*.parquet")) == before  # nothing staged is left behind
    with wh.reader() as con:
        assert con.execute("SELECT users, items FROM domain_stats WHERE domain = 'Scientific'").fetchone() == (4, 6)


def test_text_is_keyed_by_raw_id_through_item2index(tmp_path):
    """Integer raw ids that differ from the indices: raw "1" is index 0, raw "0" index 1."""
    global ITEMS
    saved, ITEMS = ITEMS, ["1", "0", "5", "4", "3", "2"]
    try:
        write_atomic(tmp_path / "data")
    finally:
        ITEMS = saved
    (tmp_path / "data" / "Scientific.text").write_text(
        "item_id:token\ttext:token_seq\n0\tpear\n1\tapple\n5\tfig\n9\tnot an item\n")
    wh = Warehouse(tmp_path / "home")
    summary = import_atomic(wh, tmp_path / "data", "Scientific", [])
    assert summary.rejected == 1  # raw id 9 is no item
    with wh.reader() as con:
        texts = dict(con.execute("SELECT x.item_idx, i.text FROM item_index x JOIN items i USING (domain, item_id)"
                                 ).fetchall())
    assert texts == {1: "apple", 2: "pear", 3: "fig", 4: None, 5: None, 6: None}
    # export keys .text by raw id as well, so export → import → export round-trips
    export_atomic(wh, "Scientific", tmp_path / "out", 50)
    assert (tmp_path / "out" / "Scientific.text").read_text().splitlines()[1:4] == ["1\tapple", "0\tpear", "5\tfig"]
    import_atomic(wh, tmp_path / "out", "Again", [])
    export_atomic(wh, "Again", tmp_path / "again", 50)
    for suffix in ("train.inter", "valid.inter", "test.inter", "item2index", "user2index"):
        assert (tmp_path / "again" / f"Again.{suffix}").read_text() == \
            (tmp_path / "out" / f"Scientific.{suffix}").read_text()
    assert (tmp_path / "again" / "Again.text").read_text() == (tmp_path / "out" / "Scientific.text").read_text()


def test_text_without_item2index_is_keyed_by_index(tmp_path):
    write_atomic(tmp_path / "data")
    (tmp_path / "data" / "Scientific.item2index").unlink()
    (tmp_path / "data" / "Scientific.text").write_text("2\tthird\n0\tfirst\nB00A\tnot an index\n")
    wh = Warehouse(tmp_path / "home")
    assert import_atomic(wh, tmp_path / "data", "Scientific", []).rejected == 1
    with wh.reader() as con:
        texts = dict(con.execute("SELECT x.item_id, i.text FROM item_index x JOIN items i USING (domain, item_id)"
                                 ).fetchall())
    assert texts["0"] == "first" and texts["2"] == "third" and texts["1"] is None


def test_bad_feature_spec_is_a_usage_error(tmp_path):
    out = ant("import-atomic", str(tmp_path), "--domain", "X", "--feature", "audio=x.feat:3")
    assert out.returncode == 2 and "MODALITY=FILE:DIM" in out.stderr


def _one_error_line(stderr: str) -> bool:
    return "Traceback" not in stderr and sum(line.startswith("error: ") for line in stderr.splitlines()) == 1


@pytest.mark.parametrize("name, encoding", [("Scientific.text", "gbk"), ("Scientific.item2index", "cp1252")])
def test_a_file_not_in_utf8_is_one_error_naming_file_and_line(tmp_path, name, encoding):
    global ITEMS
    saved, ITEMS = ITEMS, [*ITEMS[:3], "B00Dé", "B00E", "B00F"]
    try:
        write_atomic(tmp_path / "data")
    finally:
        ITEMS = saved
    path = tmp_path / "data" / name
    if name.endswith(".text"):
        path.write_bytes("B00A\tProduct\nB00B\t中文标题\n".encode("gbk"))
    else:
        path.write_bytes(path.read_text().encode(encoding))
    out = ant("import-atomic", str(tmp_path / "data"), "--domain", "Sci", env={"ANT_HOME": str(tmp_path / "home")})
    line = 2 if name.endswith(".text") else 4
    assert out.returncode == 1 and _one_error_line(out.stderr), out.stderr
    assert f"error: {path}:{line}: not UTF-8" in out.stderr and "convert the file" in out.stderr


def test_users_without_a_training_item_are_left_out_and_counted(tmp_path):
    """UniSRec's --user_k 2 writes a 2-item user as `4 <tab><tab> 3` (empty valid history)."""
    write_atomic(tmp_path / "data")
    with open(tmp_path / "data" / "Scientific.valid.inter", "a") as f:
        f.write("4\t\t3\n")
    with open(tmp_path / "data" / "Scientific.test.inter", "a") as f:
        f.write("4\t3\t5\n")
    (tmp_path / "data" / "Scientific.user2index").unlink()
    out = ant("import-atomic", str(tmp_path / "data"), "--domain", "Sci", env={"ANT_HOME": str(tmp_path / "home")})
    assert out.returncode == 0, out.stderr
    assert "4 users, 6 items, 18 interactions" in out.stdout
    assert "1 users without a training item left out" in out.stdout
    assert "Scientific.valid.inter:6" in out.stderr  # the first one is named in the warning


def test_user_tokens_mixing_digits_and_letters_sort_as_strings(tmp_path):
    write_atomic(tmp_path / "data")
    for split in ("train", "valid", "test"):
        path = tmp_path / "data" / f"Scientific.{split}.inter"
        path.write_text(path.read_text().replace("\n3\t", "\nAX12PQ\t").replace("\n0\t", "\n10473\t"))
    (tmp_path / "data" / "Scientific.user2index").unlink()
    wh = Warehouse(tmp_path / "home")
    import_atomic(wh, tmp_path / "data", "Sci", [])
    with wh.reader() as con:
        users = [u for (u,) in con.execute("SELECT user_id FROM user_index ORDER BY user_idx").fetchall()]
    assert users == ["1", "10473", "2", "AX12PQ"]


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "Scientific.test.inter").write_text(HEADER + "0\t0 1 2 3\t¹\n"), r"unknown item token '¹'"),
    (lambda d: [(d / f"Scientific.{s}.inter").write_text(HEADER) for s in ("train", "valid", "test")],
     "no user with a training item"),
    (lambda d: (d / "Scientific.valid.inter").write_bytes(b""), r"valid.inter: empty"),
])
def test_more_format_errors_are_one_line(tmp_path, damage, message):
    write_atomic(tmp_path / "data")
    (tmp_path / "data" / "Scientific.item2index").unlink()
    damage(tmp_path / "data")
    out = ant("import-atomic", str(tmp_path / "data"), "--domain", "Sci", env={"ANT_HOME": str(tmp_path / "home")})
    assert out.returncode == 1 and _one_error_line(out.stderr), out.stderr
    assert re.search(message, out.stderr)


def test_readme_sql_slice_reproduces_the_registered_test_recall_with_repeats(tmp_path):
    """Repeat consumption (a test target already in the user's history, RecBole#1823): the
    README's Recall@10 query over `recommend --all` equals the registry's test Recall@10."""
    from pathlib import Path

    import duckdb

    from ant_config import AntConfig
    from services.context import Context
    from services.planning import adapt_plan
    from services.recommend import recommend_all
    from services.training import run_adapt
    from warehouse import registry
    global SEQUENCES, ITEMS
    saved = SEQUENCES, ITEMS
    rng = np.random.default_rng(0)
    ITEMS = [f"I{i:03d}" for i in range(30)]
    SEQUENCES = {str(u): [int(i) for i in rng.integers(0, 30, size=int(rng.integers(4, 9)))] for u in range(60)}
    for u in range(0, 60, 3):  # every third user's test item repeats an earlier one
        SEQUENCES[str(u)][-1] = SEQUENCES[str(u)][0]
    try:
        write_atomic(tmp_path / "data", max_len=50)
    finally:
        SEQUENCES, ITEMS = saved
    feats = rng.normal(size=(30, 8)).astype(np.float32)
    feats.tofile(tmp_path / "data" / "Scientific.feat1CLS")
    config = AntConfig.model_validate({"home": str(tmp_path / "home"), "model": {"width": 16, "ffn_width": 16},
                                       "adapt": {"epochs": 3, "batch_size": 64}})
    ctx = Context.of(config)
    import_atomic(ctx.warehouse, tmp_path / "data", "Sci", [FeatureFile("text", tmp_path / "data" / "Scientific.feat1CLS", 8)])
    result = run_adapt(ctx, adapt_plan(ctx, "Sci", "scratch", 0, None))
    registry.promote(ctx.warehouse, result["version"], "test")
    recommend_all(ctx, "Sci", 10, 32)
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    query = readme.split("```sql\n")[1].split("```")[0].replace("'Gift_Cards'", "'Sci'")
    with ctx.warehouse.reader() as con:
        buckets = con.execute(query).fetchall()
    users = sum(n for _, n, _ in buckets)
    assert users == 60
    assert sum(n * r for _, n, r in buckets) / users == pytest.approx(result["recall@10"], abs=1e-12)
    assert result["recall@10"] > 0  # something to reproduce


def _fifo(path):
    import os
    path.unlink(missing_ok=True)
    os.mkfifo(path)


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "Scientific.item2index").write_text("".join(f"{a}\t{i}\n" for i, a in enumerate(ITEMS)) + "B00Z\t9\n"),
     r"item2index: indices must be 0…6"),
    (lambda d: (d / "Scientific.item2index").write_bytes(b""), r"item2index: empty"),
    (lambda d: (d / "Scientific.user2index").write_text("AX1\t0\nAX1\t1\nAX3\t2\nAX4\t3\n"), r"user2index:2: raw id 'AX1' appears twice"),
    (lambda d: (d / "Scientific.user2index").write_text("AX1\t0\n\t1\nAX3\t2\nAX4\t3\n"), r"user2index:2: the raw id is empty"),
    (lambda d: (d / "Scientific.valid.inter").write_text((d / "Scientific.valid.inter").read_text() + "1\t2 4\t5\n"),
     r"valid.inter:6: a second row for user '1'"),
    (lambda d: ((d / "Scientific.text").unlink(), (d / "Scientific.text").mkdir()), r"Scientific.text: not a regular file"),
    (lambda d: ((d / "Scientific.text").unlink(), (d / "Scientific.text").symlink_to("/dev/zero")),
     r"Scientific.text: not a regular file"),
    (lambda d: _fifo(d / "Scientific.text"), r"Scientific.text: not a regular file"),
    (lambda d: (d / "Scientific.feat1CLS").write_bytes(np.array([[np.nan] * 8] + [[0.0] * 8] * 5, np.float32).tobytes()),
     r"feat1CLS: row 0 \(item index 0\) holds a non-finite value"),
])
def test_atomic_files_that_lie_or_hang_are_one_clear_error(tmp_path, damage, message):
    """Each finishes at once with one error naming the file (no hang on /dev/zero or a FIFO, no
    KeyError, no silent renumbering, no NaN stored), and nothing is published."""
    write_atomic(tmp_path / "data")
    damage(tmp_path / "data")
    wh = Warehouse(tmp_path / "home")
    with pytest.raises(AtomicFormatError, match=message):
        import_atomic(wh, tmp_path / "data", "Sci", [FeatureFile("text", tmp_path / "data" / "Scientific.feat1CLS", 8)])
    assert not wh.db_path.exists() or not list(wh.parquet_dir.glob("*/Sci/*.parquet"))


def test_sparse_item_tokens_without_item2index_are_refused_before_any_allocation(tmp_path):
    write_atomic(tmp_path / "data")
    (tmp_path / "data" / "Scientific.item2index").unlink()
    test = tmp_path / "data" / "Scientific.test.inter"
    test.write_text(test.read_text().replace("\t4\n", "\t99999999999\n", 1))
    with pytest.raises(AtomicFormatError, match="tokens reach 99999999999 but only"):
        import_atomic(Warehouse(tmp_path / "home"), tmp_path / "data", "Sci", [])


def test_a_feature_width_of_zero_is_a_usage_error(tmp_path):
    out = ant("import-atomic", str(tmp_path), "--domain", "X", "--feature", f"text={tmp_path / 'f'}:0")
    assert out.returncode == 2 and "Traceback" not in out.stderr


def test_a_re_import_follows_the_ingest_guards(tmp_path):
    """No much smaller domain without allow_shrink; no downloaded category replaced unless asked."""
    from ant_config import Ingest
    from tests.test_ingest import FIXTURES, ingest_files
    from warehouse.ingest import DomainShrinks
    global SEQUENCES
    wh = Warehouse(tmp_path / "home")
    write_atomic(tmp_path / "full")
    import_atomic(wh, tmp_path / "full", "Sci", [])
    saved, SEQUENCES = SEQUENCES, {"0": SEQUENCES["0"]}
    try:
        write_atomic(tmp_path / "small")
    finally:
        SEQUENCES = saved
    with pytest.raises(DomainShrinks, match="fewer than the published 18"):
        import_atomic(wh, tmp_path / "small", "Sci", [])
    assert import_atomic(wh, tmp_path / "small", "Sci", [], Ingest(allow_shrink=True)).users == 1
    src = FIXTURES / "amazon-2018"
    ingest_files(wh, "2018", "Gift_Cards", src / "Gift_Cards_5.json.gz", src / "meta_Gift_Cards.json.gz")
    with pytest.raises(AtomicFormatError, match="downloaded Amazon 2018 category.*--replace-category"):
        import_atomic(wh, tmp_path / "full", "Gift_Cards", [], Ingest(allow_shrink=True))
    with wh.reader() as con:
        assert con.execute("SELECT users FROM domain_stats WHERE domain = 'Gift_Cards'").fetchone()[0] == 453
    out = ant("import-atomic", str(tmp_path / "full"), "--domain", "Gift_Cards", "--replace-category", "--allow-shrink",
              env={"ANT_HOME": str(wh.home)})
    assert out.returncode == 0 and "4 users" in out.stdout, out.stderr


def test_a_re_import_keeps_stored_vectors_only_for_the_same_items(tmp_path):
    global ITEMS
    wh = Warehouse(tmp_path / "home")
    write_atomic(tmp_path / "data")
    import_atomic(wh, tmp_path / "data", "Sci", [FeatureFile("text", tmp_path / "data" / "Scientific.feat1CLS", 8)])
    (tmp_path / "data" / "Scientific.text").write_text("B00A\tnew text\n")  # same items, other files
    again = import_atomic(wh, tmp_path / "data", "Sci", [])
    assert (again.kept_features, again.dropped_features) == (["text"], [])
    saved, ITEMS = ITEMS, [f"C{a}" for a in ITEMS]  # other items
    try:
        write_atomic(tmp_path / "other")
    finally:
        ITEMS = saved
    out = ant("import-atomic", str(tmp_path / "other"), "--domain", "Sci", env={"ANT_HOME": str(wh.home)})
    assert out.returncode == 0 and "stored text vectors dropped" in out.stdout, out.stderr
    with wh.reader() as con:
        assert con.execute("SELECT count(*) FROM item_features WHERE domain = 'Sci' AND has_text").fetchone()[0] == 0


def test_a_model_with_non_finite_scores_is_never_served(tmp_path):
    """NaN weights in the promoted model: one error, no rows printed or published."""
    from pathlib import Path

    from safetensors.torch import load_file, save_file

    from ant_config import AntConfig
    from services.context import Context
    from services.planning import adapt_plan
    from services.recommend import recommend, recommend_all
    from services.training import run_adapt
    from warehouse import registry
    from warehouse.store import WarehouseError
    write_atomic(tmp_path / "data")
    ctx = Context.of(AntConfig.model_validate({"home": str(tmp_path / "home"), "model": {"width": 16, "ffn_width": 16},
                                               "adapt": {"epochs": 1}}))
    import_atomic(ctx.warehouse, tmp_path / "data", "Sci", [FeatureFile("text", tmp_path / "data" / "Scientific.feat1CLS", 8)])
    result = run_adapt(ctx, adapt_plan(ctx, "Sci", "scratch", 0, None))
    registry.promote(ctx.warehouse, result["version"], "test")
    recommend_all(ctx, "Sci", 3, 8)
    with ctx.warehouse.reader() as con:
        before = con.execute("SELECT count(*) FROM recommendations").fetchone()[0]
    weights = next(Path(registry.get(ctx.warehouse, result["version"])["path"]).glob("*.safetensors"))
    tensors = load_file(weights)
    tensors = {k: v.fill_(float("nan")) if v.is_floating_point() else v for k, v in tensors.items()}
    save_file(tensors, weights)
    for serve in (lambda: recommend(ctx, "Sci", ["B00A"], 3), lambda: recommend_all(ctx, "Sci", 3, 8)):
        with pytest.raises(WarehouseError, match="non-finite scores"):
            serve()
    with ctx.warehouse.reader() as con:
        assert con.execute("SELECT count(*) FROM recommendations").fetchone()[0] == before

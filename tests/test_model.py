"""The ANT model's components, pinned: adaptors, fusion, causality, losses, metrics,
strategies (what relearn freezes and re-initialises), checkpoints and resuming."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from ant_config import AntConfig, ModelConfig, Relearn, TrainConfig
from ant_model import checkpoint
from ant_model.adaptors import LinearExpert, MoEAdaptor, WhiteningExpert, redraw_experts_xavier
from ant_model.baselines import popularity_scorer, random_scorer
from ant_model.data import merge, training_batches, windows
from ant_model.dropout import UniformDropout
from ant_model.evaluate import Evaluation, paired_bootstrap, rank_targets
from ant_model.losses import cosine_logits, distinct_targets, full_softmax, in_batch_infonce, sampled_softmax
from ant_model.model import ANT, gather
from ant_model.strategies import TRANSFORMER, adapt, build, learning_rate_scales, pretrain
from ant_model.train import _param_groups, fit
from ant_model.synthetic import make_benchmark

SMALL = ModelConfig(width=16, ffn_width=16, heads=2, n_experts=3, max_seq_len=8, dropout=0.1,
                    embedding_dropout=0.1, modalities=["text", "image", "price"],
                    item_ids=False)  # inductive: a target model's item side is its features alone
QUICK = TrainConfig(epochs=2, batch_size=64, patience=5)


@pytest.fixture(scope="module")
def bench():
    return make_benchmark(seed=1, aux_users=120, target_users=40, n_types=8, items_per_type=3)


def test_experts_redrawn_as_the_authors_do_follow_xavier_normal():
    torch.manual_seed(0)
    moe = MoEAdaptor(384, 128, n_experts=4, whitening=True, dropout=0.0, init_std=0.02)
    price = LinearExpert(64, 128, dropout=0.0, init_std=0.02)
    with torch.no_grad():
        price.proj.bias.fill_(1.0)
    redraw_experts_xavier(torch.nn.ModuleList([moe, price]))
    weights = torch.cat([e.proj.weight.flatten() for e in moe.experts])
    assert weights.std().item() == pytest.approx(math.sqrt(2 / (384 + 128)), rel=0.02)  # 0.0625, not 0.02
    assert price.proj.weight.std().item() == pytest.approx(math.sqrt(2 / (64 + 128)), rel=0.05)
    assert torch.all(price.proj.bias == 1.0)  # biases stay as they are
    assert torch.all(moe.w_gate == 0)  # gates still start uniform


def test_moe_gates_start_uniform_and_are_noisy_only_in_training():
    moe = MoEAdaptor(6, 4, n_experts=3, whitening=True, dropout=0.0, init_std=0.02)
    x = torch.randn(5, 6)
    moe.eval()
    assert torch.allclose(moe.gates(x), torch.full((5, 3), 1 / 3))
    with torch.no_grad():
        moe.w_gate.normal_()
        moe.w_noise.normal_()
    assert torch.equal(moe.gates(x), moe.gates(x))
    moe.train()
    assert not torch.equal(moe.gates(x), moe.gates(x))
    mixed = moe.eval()(x)
    manual = sum(moe.gates(x)[:, k:k + 1] * moe.experts[k](x) for k in range(3))
    assert torch.allclose(mixed, manual, atol=1e-6)


def test_uniform_dropout_is_dropout():
    """Each element zeroed with probability p and the rest scaled by 1 / (1 - p), independently
    per element and per call; the identity in eval mode."""
    torch.manual_seed(0)
    drop, x = UniformDropout(0.2), torch.full((1000, 400), 3.0)
    a, b = drop(x), drop(x)
    assert set(a.unique().tolist()) == {0.0, 3.0 / 0.8}
    assert abs((a == 0).float().mean().item() - 0.2) < 0.005  # 400,000 draws: std 0.0006
    assert abs((a == 0).float().mean(dim=0).std().item() - math.sqrt(0.2 * 0.8 / 1000)) < 0.003
    assert abs(((a == 0) & (b == 0)).float().mean().item() - 0.04) < 0.002  # independent calls
    assert torch.equal(drop.eval()(x), x)
    assert torch.equal(UniformDropout(0.0).train()(x), x)


def test_every_dropout_of_the_model_but_attention_is_uniform_at_its_configured_rate():
    """nn.Dropout's bernoulli_ masks cost 4.5x uniform ones on the CPU: none is left in the model
    (the attention weights' dropout, inside PyTorch's attention, aside)."""
    cfg = SMALL.model_copy(update={"dropout": 0.3, "embedding_dropout": 0.4, "ffn_dropout": 0.1,
                                   "adaptor_dropout": 0.2})
    model = ANT({"text": 4, "price": 2}, cfg.model_copy(update={"modalities": ["text", "price"]}), n_items=4)
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert drops and all(type(m) is UniformDropout for m in drops)
    assert model.sequence.dropout.p == 0.4
    for layer in model.sequence.layers.layers:
        assert (layer.dropout1.p, layer.dropout.p, layer.dropout2.p, layer.self_attn.dropout) == (0.3, 0.1, 0.3, 0.3)
    assert {m.p for m in model.items.modules() if isinstance(m, nn.Dropout)} == {0.2}


def test_gathered_item_vectors_have_the_same_gradient_every_time():
    """Items repeat within a batch. Indexing summed their gradients in an order that varied from
    run to run on the CPU (20 different gradients in 20 backward passes of this batch), so one
    version trained twice gave two models; the model gathers with a deterministic backward."""
    torch.manual_seed(0)
    cfg = SMALL.model_copy(update={"modalities": ["text"], "item_ids": False, "width": 32, "ffn_width": 32,
                                   "max_seq_len": 20})
    model = ANT({"text": 4}, cfg, n_items=200).eval()  # no dropout: only the gather could vary
    vectors = torch.randn(201, 32, requires_grad=True)
    sequences = torch.randint(1, 201, (300, 20))
    assert torch.equal(gather(vectors, sequences), vectors[sequences])
    gradients = set()
    for _ in range(10):
        vectors.grad = None
        model.states(vectors, sequences).square().sum().backward()
        gradients.add(vectors.grad.numpy().tobytes())
    assert len(gradients) == 1


def test_whitening_expert_is_projection_of_centred_input():
    e = WhiteningExpert(3, 2, dropout=0.0, init_std=0.02).eval()
    with torch.no_grad():
        e.center.copy_(torch.tensor([1.0, 2.0, 3.0]))
    x = torch.randn(4, 3)
    assert torch.allclose(e(x), (x - e.center) @ e.proj.weight.T)
    assert e.proj.bias is None


def test_fusion_and_ablation_switches():
    dims = {"text": 5, "image": 7, "price": 4}
    model = ANT(dims, SMALL, n_items=3).eval()
    feats = {m: torch.randn(2, d) for m, d in dims.items()}
    def fused(parts):  # sum of the modalities plus the image-text product (ANT's fusion)
        return parts["image"] + parts["text"] + parts["price"] + SMALL.fusion_beta * parts["image"] * parts["text"]

    out, parts = model.items(feats, torch.tensor([1, 2]))
    assert torch.allclose(out, fused(parts), atol=1e-6) and model.items.ids is None
    transductive = ANT(dims, SMALL.model_copy(update={"item_ids": True}), n_items=3).eval()
    out, parts = transductive.items(feats, torch.tensor([1, 2]))
    assert torch.allclose(out, fused(parts) + transductive.items.ids(torch.tensor([1, 2])), atol=1e-6)
    assert isinstance(model.items.adaptors["price"].experts[0], LinearExpert)
    assert isinstance(model.items.adaptors["text"].experts[0], WhiteningExpert)
    no_product = ANT(dims, SMALL.model_copy(update={"fusion_product": False}), 3).eval()
    out, parts = no_product.items(feats, torch.tensor([1, 2]))
    assert torch.allclose(out, sum(parts.values()), atol=1e-6)
    single = ANT(dims, SMALL.model_copy(update={"moe": False, "modalities": ["text"]}), 3)
    assert list(single.items.adaptors) == ["text"] and isinstance(single.items.adaptors["text"], LinearExpert)
    ids = ANT({}, SMALL.model_copy(update={"modalities": [], "item_ids": True}), 3)
    assert ids.items.ids.num_embeddings == 4
    with pytest.raises(ValueError, match="not resolved"):
        ANT(dims, SMALL.model_copy(update={"modalities": None}), 3)


def test_states_are_causal_and_ignore_padding():
    model = ANT({"text": 4}, SMALL.model_copy(update={"modalities": ["text"]}), n_items=6).eval()
    items = torch.randn(7, 16)
    seq = torch.tensor([[1, 2, 3, 4]])
    changed = torch.tensor([[1, 2, 5, 6]])
    padded = torch.tensor([[1, 2, 3, 4, 0, 0]])
    with torch.no_grad():
        a, b, c = model.states(items, seq), model.states(items, changed), model.states(items, padded)
    assert torch.allclose(a[:, :2], b[:, :2], atol=1e-5)  # later items do not leak backwards
    assert not torch.allclose(a[:, 2:], b[:, 2:])
    assert torch.allclose(a, c[:, :4], atol=1e-5)         # padding changes nothing


def test_a_batch_of_mixed_lengths_gives_each_row_the_states_it_has_alone():
    """Rows are encoded in length buckets, each trimmed to its own longest: every row's states
    are those it has on its own."""
    model = ANT({"text": 4}, SMALL.model_copy(update={"modalities": ["text"]}), n_items=9).eval()
    items = torch.randn(10, 16)
    rows = [[1], [2, 3], [4, 5, 6], [1, 2, 3, 4, 5, 6, 7], [8, 9, 1, 2, 3]]
    batch = torch.tensor([r + [0] * (7 - len(r)) for r in rows])
    with torch.no_grad():
        together = model.states(items, batch)
        for i, r in enumerate(rows):
            alone = model.states(items, torch.tensor([r]))[0]
            assert torch.allclose(together[i, :len(r)], alone, atol=1e-5)
        padded = model.sequence.encode_padded(items[batch], batch == 0)  # one pass, padding included
    assert torch.allclose(padded[batch != 0], together[batch != 0], atol=1e-5)


def test_in_batch_infonce_masks_copies_of_the_positive():
    torch.manual_seed(0)
    users, table = torch.randn(4, 8), torch.randn(5, 8)
    targets = torch.tensor([1, 3, 1, 4])  # item 1 twice: one candidate, not its own negative
    distinct, label = distinct_targets(targets)
    loss = in_batch_infonce(cosine_logits(users, table[distinct], 0.07), label)
    logits = cosine_logits(users, table[[1, 3, 4]], 0.07)
    manual = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 0, 2]))
    assert torch.allclose(loss, manual)


def test_full_softmax_never_predicts_padding():
    users, items = torch.randn(2, 8), torch.randn(4, 8)
    items[0] = users[0] * 100  # padding row would win if it were a candidate
    loss = full_softmax(users, torch.tensor([1, 2]), items, lambda u, i: cosine_logits(u, i, 0.07))
    logits = cosine_logits(users, items[1:], 0.07)
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1])))


def test_metrics_on_hand_computed_ranks():
    ev = Evaluation(np.array([0, 2, 10, 59]), np.zeros(4, dtype=int))  # ranks 1, 3, 11, 60
    m = ev.metrics()
    assert m["recall@10"] == 0.5 and m["recall@50"] == 0.75
    assert math.isclose(m["ndcg@10"], (1 + 1 / math.log2(4)) / 4)
    assert math.isclose(m["ndcg@50"], (1 + 1 / math.log2(4) + 1 / math.log2(12)) / 4)


def test_ties_count_as_a_random_tie_break_in_expectation():
    # 4 items above the target, 9 tied with it: the target is at place 5..14, each with p = 1/10.
    ev = Evaluation(np.array([4]), np.array([9]))
    assert math.isclose(ev.per_user("recall@10")[0], 6 / 10)  # places 5..10 of 5..14
    assert math.isclose(ev.per_user("ndcg@10")[0], sum(1 / math.log2(r + 1) for r in range(5, 11)) / 10)
    assert math.isclose(ev.per_user("recall@50")[0], 1.0) and ev.ranks[0] == 9.5
    # the expectation, checked by drawing the tie-break
    rng = np.random.default_rng(0)
    places = 5 + rng.integers(0, 10, size=200_000)
    assert abs((places <= 10).mean() - ev.per_user("recall@10")[0]) < 0.005


def test_constant_scores_give_the_metrics_of_a_random_ranking():
    n_items, users = 500, 400
    rng = np.random.default_rng(0)
    examples = [(rng.choice(np.arange(1, n_items + 1), size=5, replace=False), 0) for _ in range(users)]
    examples = [(h[:-1], int(h[-1])) for h, _ in examples]
    constant = rank_targets(lambda hist: torch.zeros(len(hist), n_items + 1), examples, 64, 8)
    random = rank_targets(random_scorer(n_items, seed=1), examples, 64, 8)
    candidates = n_items - 4  # every item but the 4 history items (the target is one of them)
    expected = {"recall@10": 10 / candidates, "recall@50": 50 / candidates}
    for metric, value in expected.items():
        assert math.isclose(constant.metrics()[metric], value, rel_tol=1e-9), metric
        assert abs(random.metrics()[metric] - value) < 0.04, metric  # a drawn random ranking agrees
    assert math.isclose(constant.metrics()["ndcg@10"],
                        sum(1 / math.log2(r + 1) for r in range(1, 11)) / candidates, rel_tol=1e-9)


def test_popularity_scores_training_counts():
    train = [np.array([1, 2, 2, 3]), np.array([2, 3])]
    scores = popularity_scorer(train, n_items=4)(torch.zeros(2, 3, dtype=torch.long))
    assert scores.shape == (2, 5) and scores[0].tolist() == [0, 1, 3, 2, 0]


def test_ranking_excludes_the_whole_history_and_padding():
    model = ANT({"text": 3}, SMALL.model_copy(update={"modalities": ["text"]}), n_items=20).eval()
    feats = {"text": torch.randn(21, 3)}
    history = np.arange(1, 13)  # longer than L = 8: items 1-4 are excluded too
    target = 15
    ev = rank_targets(model.scorer(feats), [(history, target)], batch_size=4, max_len=8)
    with torch.no_grad():
        items, _ = model.encode_items(feats, torch.arange(21))
        scores = model.scores(model.user_vectors(items, torch.from_numpy(history[None, -8:])), items)[0]
    candidates = [i for i in range(1, 21) if i not in history and i != target]
    assert ev.greater[0] == sum(scores[i] > scores[target] for i in candidates) and ev.ties[0] == 0


def test_a_target_repeating_a_history_item_is_a_miss():
    """Repeat consumption: the history is never recommended, so its repeat cannot be hit (the
    same rule as `recommend`, and as RecBole's full-sort masking of a general recommender)."""
    scores = torch.arange(11, dtype=torch.float32).repeat(2, 1)  # item 10 is everyone's best
    ev = rank_targets(lambda hist: scores[:len(hist)].clone(), [(np.array([10, 3]), 10), (np.array([3]), 10)], 4, 8)
    assert ev.greater[1] == 0 and ev.ranks[0] > 1e9 and ev.metrics()["recall@50"] == 0.5


def test_non_finite_scores_rank_last():
    nan = torch.full((1, 6), float("nan"))
    assert rank_targets(lambda hist: nan.clone(), [(np.array([1]), 2)], 4, 8).metrics()["recall@10"] == 0.0
    some = torch.tensor([[0.0, float("nan"), 0.5, float("inf"), 0.1, float("-inf")]])
    ev = rank_targets(lambda hist: some.clone(), [(np.array([4]), 2)], 4, 8)
    assert (ev.greater[0], ev.ties[0]) == (0, 0)  # NaN and inf candidates never outrank the target


def test_sasrec_scores_by_dot_product_over_item_ids():
    cfg = AntConfig().sasrec.architecture(SMALL)
    model = ANT({}, cfg, n_items=6).eval()
    assert model.cfg.scoring == "dot" and model.items.ids is not None and not model.items.adaptors
    users, items = torch.randn(2, cfg.width), model.all_items({}, torch.device("cpu"))
    assert torch.allclose(model.scores(users, items), users @ model.items.ids.weight.T)


def test_feed_forward_dropout_follows_ffn_dropout():
    """RecBole's TransformerEncoder drops nothing between the two feed-forward layers; PyTorch's
    layer drops at `dropout` there unless ffn_dropout says otherwise. The sasrec baseline is RecBole's."""
    for cfg, inner in ((SMALL.model_copy(update={"dropout": 0.5}), 0.5),
                       (SMALL.model_copy(update={"dropout": 0.5, "ffn_dropout": 0.0}), 0.0),
                       (AntConfig().sasrec.architecture(SMALL), 0.0)):
        model = ANT({"text": 4}, cfg.model_copy(update={"modalities": ["text"], "item_ids": False}), n_items=4).train()
        x = torch.randn(3, 5, cfg.width)
        for layer in model.sequence.layers.layers:
            layer.dropout2.eval()  # the block's output dropout (RecBole has it too) aside
            plain = layer.linear2(layer.activation(layer.linear1(x)))
            assert torch.equal(layer._ff_block(x), plain) == (inner == 0.0)
            assert layer.dropout.p == inner


def test_nothing_excluded_ranks_a_repeated_target_as_recbole_ranks_a_sequential_model():
    """exclude=[] per user: only padding is masked, so a target repeating a history item can be a
    hit (RecBole's full-sort protocol for sequential models, used by bench/peers.py)."""
    scores = torch.arange(11, dtype=torch.float32).repeat(2, 1)
    nothing = [np.zeros(0, dtype=np.int64)] * 2
    ev = rank_targets(lambda hist: scores[:len(hist)].clone(), [(np.array([10, 3]), 10), (np.array([3]), 9)], 4, 8,
                      exclude=nothing)
    assert list(ev.greater) == [0, 1] and ev.metrics()["recall@10"] == 1.0


def test_paired_bootstrap():
    assert paired_bootstrap(np.ones(50), np.ones(50)) == (0.0, 0.0, 0.0)
    rng = np.random.default_rng(0)
    better, worse = (rng.random(300) < 0.6).astype(float), (rng.random(300) < 0.3).astype(float)
    mean, low, high = paired_bootstrap(better, worse)
    assert low > 0 and low < mean < high


def test_batches_train_every_target_once_with_per_batch_padding():
    seqs = [np.arange(1, 4), np.arange(1, 12), np.array([5])]
    assert [len(w) for w in windows(np.arange(1, 21), 8)] == [9, 9, 4]
    batches = list(training_batches(seqs, 8, 8, np.random.default_rng(0)))
    targets = torch.cat([t[t != 0] for _, t in batches])
    assert sorted(targets.tolist()) == sorted([2, 3] + list(range(2, 12)))  # each target once
    assert max(i.shape[1] for i, _ in batches) == 8


def test_a_batch_holds_about_batch_size_targets():
    rng = np.random.default_rng(0)
    seqs = [np.arange(1, n + 1) for n in rng.integers(3, 40, size=300)]  # long-tailed lengths
    total = sum(len(s) - 1 for s in seqs)
    for batch_size in (64, 256, 2048):
        batches = list(training_batches(seqs, batch_size, 50, np.random.default_rng(1)))
        counts = [int((t != 0).sum()) for _, t in batches]
        assert sum(counts) == total  # every target once
        # pieces of at most L + 1 = 51 items are packed whole: each batch but the last is within L of the size
        assert all(batch_size - 50 < c < batch_size + 50 for c in sorted(counts)[1:]), counts
        assert abs(len(batches) - total / batch_size) <= 1


def test_relearn_keeps_the_transformer_and_reinitialises_the_item_side(bench, tmp_path):
    """The paper's ANT (`transformer_lr_scale: 0`) freezes the pre-trained Transformer; the
    default trains it at a tenth of the adaptors' learning rate."""
    aux, target = bench
    model, _ = pretrain(aux, SMALL, QUICK, checkpoint_dir=tmp_path / "pre", progress=False)
    source = model.state_dict()
    relearn = build("relearn", target, SMALL, tmp_path / "pre" / "best", Relearn(transformer_lr_scale=0))
    finetune = build("finetune", target, SMALL, tmp_path / "pre" / "best")
    saved = checkpoint.load(tmp_path / "pre" / "best")[0].state_dict()
    for name, tensor in relearn.state_dict().items():
        same = torch.equal(tensor, saved[name])
        if name.startswith("sequence.layers"):
            assert same, name
        elif name.startswith("items.") and "w_gate" not in name and "w_noise" not in name and "center" not in name:
            assert not same, f"{name} was not re-initialised"
    assert not torch.equal(relearn.sequence.position.weight, saved["sequence.position.weight"])
    assert torch.equal(relearn.sequence.norm.weight, saved["sequence.norm.weight"])  # kept, as the authors do
    assert all(not p.requires_grad for p in relearn.sequence.layers.parameters())
    assert all(p.requires_grad for p in relearn.items.parameters())
    assert all(torch.equal(t, saved[n]) for n, t in finetune.state_dict().items())
    kept = build("relearn", target, SMALL, tmp_path / "pre" / "best", Relearn(reset_positions=False))
    assert torch.equal(kept.sequence.position.weight, saved["sequence.position.weight"])
    xavier = build("relearn", target, SMALL, tmp_path / "pre" / "best", Relearn(expert_init="xavier"))
    with_ids = build("relearn", target, SMALL.model_copy(update={"item_ids": True}), tmp_path / "pre" / "best")
    xavier_std = math.sqrt(2 / (target.feature_dims["text"] + SMALL.width))
    for model, std in ((relearn, SMALL.init_std), (xavier, xavier_std), (with_ids, xavier_std)):
        drawn = torch.cat([e.proj.weight.flatten() for e in model.items.adaptors["text"].experts])
        assert drawn.std().item() == pytest.approx(std, rel=0.15)  # by default Xavier with item IDs only
    assert all(p.requires_grad for p in finetune.parameters())
    assert set(source) == set(saved)

    before = {n: t.clone() for n, t in relearn.state_dict().items() if n.startswith("sequence.layers")}
    fit(relearn, target, QUICK, "full", progress=False)
    assert all(torch.equal(relearn.state_dict()[n], t) for n, t in before.items())

    default = build("relearn", target, SMALL, tmp_path / "pre" / "best")
    assert all(torch.equal(t, saved[n]) for n, t in default.state_dict().items() if n.startswith(TRANSFORMER))
    assert all(p.requires_grad for p in default.parameters())
    scale = Relearn().transformer_lr_scale
    groups = {g["lr"]: g["params"] for g in
              _param_groups(default, QUICK.lr, learning_rate_scales("relearn", Relearn()))}  # what `adapt` passes
    assert {id(p) for p in groups[QUICK.lr * scale]} == {id(p) for p in default.sequence.layers.parameters()}
    trained, _ = adapt("relearn", target, SMALL, QUICK, tmp_path / "pre" / "best", progress=False)
    assert not all(torch.equal(t, saved[n]) for n, t in trained.state_dict().items() if n.startswith(TRANSFORMER))


def test_checkpoint_round_trip_and_clear_errors(bench, tmp_path):
    _, target = bench
    model = ANT(target.feature_dims, SMALL, target.n_items).eval()
    checkpoint.save(tmp_path / "ck", model, {"feature_dims": target.feature_dims, "n_items": target.n_items})
    loaded, meta = checkpoint.load(tmp_path / "ck")
    assert all(torch.equal(t, loaded.state_dict()[n]) for n, t in model.state_dict().items())
    assert meta["n_items"] == target.n_items
    other = ANT(target.feature_dims, SMALL.model_copy(update={"width": 32, "ffn_width": 32}), target.n_items)
    with pytest.raises(checkpoint.CheckpointError, match="another architecture"):
        checkpoint.load_weights(tmp_path / "ck", other)
    (tmp_path / "ck" / checkpoint.MODEL_FILE).write_bytes(b"not safetensors")
    with pytest.raises(checkpoint.CheckpointError, match="not a readable safetensors"):
        checkpoint.load(tmp_path / "ck")
    for damage, message in ((lambda m: m.pop("feature_dims"), "'feature_dims' is missing"),
                            (lambda m: m["model"].update(width="wide"), "invalid model description"),
                            (lambda m: m.update(n_items=-3), "'n_items' .* is not a catalogue size")):
        checkpoint.save(tmp_path / "bad", model, {"feature_dims": target.feature_dims, "n_items": target.n_items})
        meta = json.loads((tmp_path / "bad" / checkpoint.META_FILE).read_text())
        damage(meta)
        (tmp_path / "bad" / checkpoint.META_FILE).write_text(json.dumps(meta))
        with pytest.raises(checkpoint.CheckpointError, match=message):
            checkpoint.load(tmp_path / "bad")


def test_a_damaged_last_checkpoint_starts_the_run_over(bench, tmp_path):
    _, target = bench
    cfg = QUICK.model_copy(update={"epochs": 2})
    fit(ANT(target.feature_dims, SMALL, target.n_items), target, cfg, "full", tmp_path / "run", progress=False)
    optimizer = tmp_path / "run" / "last" / checkpoint.OPTIM_FILE
    optimizer.write_bytes(optimizer.read_bytes()[:100])  # truncated, as a crash mid-write would leave it
    again = fit(ANT(target.feature_dims, SMALL, target.n_items), target, cfg.model_copy(update={"epochs": 3}),
                "full", tmp_path / "run", progress=False)
    assert [h["epoch"] for h in again.history] == [0, 1, 2]  # started over, with a warning, not a traceback
    meta = tmp_path / "run" / "last" / checkpoint.META_FILE
    meta.write_text(json.dumps({k: v for k, v in json.loads(meta.read_text()).items() if k != "history"}))
    assert fit(ANT(target.feature_dims, SMALL, target.n_items), target, cfg, "full", tmp_path / "run",
               progress=False).epochs_run == 2


def test_training_resumes_from_the_last_checkpoint(bench, tmp_path):
    _, target = bench
    cfg = QUICK.model_copy(update={"epochs": 2})
    first = fit(ANT(target.feature_dims, SMALL, target.n_items), target, cfg, "full", tmp_path / "run",
                progress=False)
    assert first.epochs_run == 2
    resumed = fit(ANT(target.feature_dims, SMALL, target.n_items), target,
                  cfg.model_copy(update={"epochs": 4}), "full", tmp_path / "run", progress=False)
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2, 3]
    assert resumed.history[:2] == first.history
    # its wall time counts the first process's too, as its history does (a bench divides it by all epochs)
    assert resumed.seconds >= resumed.history[-1]["seconds"] > first.seconds


def test_checkpoints_between_intervals_and_always_at_the_end(bench, tmp_path):
    _, target = bench
    cfg = QUICK.model_copy(update={"epochs": 4, "checkpoint_every_s": 1e9})  # only the end writes
    model = ANT(target.feature_dims, SMALL, target.n_items)
    result = fit(model, target, cfg, "full", tmp_path / "run", progress=False)
    last, best = (checkpoint.read_meta(tmp_path / "run" / d) for d in ("last", "best"))
    assert last["epoch"] == 3 and last["best_epoch"] == best["best_epoch"] == result.best_epoch
    saved = checkpoint.load(tmp_path / "run" / "best")[0].state_dict()
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())  # the best epoch's weights


def test_merge_offsets_items_per_domain(bench):
    aux, _ = bench
    merged = merge(aux)
    assert merged.n_items == sum(d.n_items for d in aux)
    second = aux[1].train[0]
    assert np.array_equal(merged.train[len(aux[0].train)], second + aux[0].n_items)
    assert np.array_equal(merged.features["text"][aux[0].n_items + 1], aux[1].features["text"][1])


def test_chunked_softmax_equals_the_whole_one_gradients_too():
    torch.manual_seed(0)
    users, items = torch.randn(37, 8, requires_grad=True), torch.randn(50, 8, requires_grad=True)
    targets = torch.randint(1, 50, (37,))
    score = lambda u, i: cosine_logits(u, i, 0.07)  # noqa: E731
    whole = full_softmax(users, targets, items, score)
    grads = torch.autograd.grad(whole, [users, items])
    chunked = full_softmax(users, targets, items, score, max_logits=50 * 5)  # 5 rows of logits at a time
    assert torch.allclose(whole, chunked, atol=1e-6)
    for g, h in zip(grads, torch.autograd.grad(chunked, [users, items])):
        assert torch.allclose(g, h, atol=1e-6)
    manual = torch.nn.functional.cross_entropy(score(users, items)[:, 1:], targets - 1)
    assert torch.allclose(whole, manual, atol=1e-6)


def test_sampled_softmax_corrects_for_the_sampling_and_masks_accidental_hits():
    positive, negative = torch.tensor([2.0, 1.0]), torch.tensor([[1.0, 0.5], [3.0, 0.0]])
    target_ids, negative_ids = torch.tensor([4, 7]), torch.tensor([7, 9])
    log_q = torch.log(torch.tensor([0, .1, .1, .1, .2, .1, .1, .2, .05, .05]))
    loss = sampled_softmax(positive, negative, target_ids, negative_ids, log_q)
    row0 = torch.tensor([2.0 - log_q[4], 1.0 - log_q[7], 0.5 - log_q[9]])
    row1 = torch.tensor([1.0 - log_q[7], 0.0 - log_q[9]])  # item 7 is row 1's own target: masked
    expected = (-row0.log_softmax(0)[0] - row1.log_softmax(0)[0]) / 2
    assert torch.allclose(loss, expected)


def test_a_large_catalogue_trains_on_sampled_negatives(bench):
    _, target = bench
    cfg = QUICK.model_copy(update={"epochs": 3, "sampled_softmax_above": 10, "negatives": 16})
    model = ANT(target.feature_dims, SMALL, target.n_items)
    result = fit(model, target, cfg, "full", progress=False)
    losses = [h["loss"] for h in result.history]
    assert target.n_items > 10 and all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_patience_spans_at_least_min_patience_steps(bench, monkeypatch):
    """On a small target an epoch is one step; patience waits for that many steps, not epochs.
    A plateau is no progress: the first of equal best epochs is the best one."""
    import ant_model.train as train
    _, target = bench
    def run(min_patience_steps: int):
        epochs = iter(range(100))  # validation recall@10: 1 for the first 25 epochs, then 0
        monkeypatch.setattr(train, "rank_targets", lambda *a, **k: Evaluation(
            np.array([0 if next(epochs) < 25 else 20]), np.array([0])))
        cfg = QUICK.model_copy(update={"epochs": 40, "batch_size": 100_000, "patience": 2,
                                       "min_patience_steps": min_patience_steps, "patience_floor": "none"})
        return fit(ANT(target.feature_dims, SMALL, target.n_items), target, cfg, "full", progress=False)
    stopped, waited = run(0), run(12)
    best = 0  # validation is flat for 25 epochs: ties do not reset patience
    assert (stopped.best_epoch, stopped.epochs_run, stopped.stopped_by) == (best, best + 3, "patience")
    assert (waited.best_epoch, waited.epochs_run, waited.stopped_by) == (best, best + 13, "patience")


def test_patience_counts_only_once_validation_beats_most_popular(bench, monkeypatch, caplog):
    """A run on its initial plateau, at most-popular's level, is not converged: CDs_text scratch
    seed 1 stopped there by patience at epoch 12 (test R@10 0.0114) and left it at epoch 13 when
    allowed to (0.0702). A run that never beats most-popular ends at the cap and says why."""
    import ant_model.train as train
    _, target = bench
    def run(floor: str, flat_epochs: int):
        # two validation users; the floor's ranking (called first) hits one of them: R@10 0.5.
        # The model's epochs hit the same one for `flat_epochs`, then both: 1.0
        recalls = iter([0.5] * (floor == "popularity") + [0.5] * flat_epochs + [1.0] * 100)
        monkeypatch.setattr(train, "rank_targets", lambda *a, **k: Evaluation(
            np.array([0, 0 if next(recalls) == 1.0 else 20]), np.array([0, 0])))
        cfg = QUICK.model_copy(update={"epochs": 30, "batch_size": 100_000, "patience": 2, "min_patience_steps": 0,
                                       "patience_floor": floor})
        return fit(ANT(target.feature_dims, SMALL, target.n_items), target, cfg, "full", progress=False)
    plateau = run("none", 15)  # RecBole's rule: three flat epochs end the run
    assert (plateau.best_epoch, plateau.epochs_run, plateau.stopped_by) == (0, 3, "patience")
    left = run("popularity", 15)  # epochs 0..14 flat at the floor; epoch 15 rises
    assert (left.best_epoch, left.epochs_run, left.stopped_by) == (15, 18, "patience")
    assert left.summary()["pop_valid"] == 0.5 and plateau.summary()["pop_valid"] is None
    with caplog.at_level("WARNING", logger="ant_model.train"):
        never = run("popularity", 100)
    assert (never.best_epoch, never.epochs_run, never.stopped_by) == (0, 30, "cap")
    assert "never beat most-popular's (0.5000 <= 0.5000) in 30 epochs" in caplog.text


def test_one_version_trains_to_the_same_model_whatever_ran_before(bench, tmp_path):
    """Same data, settings and seed: the same initial weights (also the re-learned adaptors'),
    the same training, the same metrics, even after other work drew from the global RNG."""
    aux, target = bench
    train = TrainConfig(epochs=2, batch_size=64, patience=2, min_patience_steps=0, seed=5)
    cfg = SMALL.model_copy(update={"item_ids": True})  # the default: the target's ID table is seeded too
    parent, _ = pretrain(aux, cfg, train, checkpoint_dir=tmp_path / "parent", progress=False)
    checkpoint.save(tmp_path / "parent", parent, {"feature_dims": merge(aux).feature_dims, "n_items": merge(aux).n_items})
    assert parent.items.ids is None  # pre-training never has item IDs
    for method in ("scratch", "relearn"):
        runs = []
        for noise in (1, 1000):  # other work in the same process in between
            torch.rand(noise)
            np.random.default_rng().random(noise)
            model, result = adapt(method, target, cfg, train, tmp_path / "parent" if method != "scratch" else None,
                                  progress=False)
            assert model.items.ids is not None, method
            runs.append((model.state_dict(), result))
        (first, a), (second, b) = runs
        assert all(torch.equal(first[k], second[k]) for k in first), method
        assert a.best_valid == b.best_valid, method
        assert a.summary()["deterministic"], method  # and the registry says so


def test_a_non_finite_loss_stops_training_with_one_error(bench, tmp_path):
    """NaN features (or NaN weights in a parent) used to train on, logging 'valid recall@10
    1.0000 (best)'; now the run stops, nothing is returned to register."""
    from ant_model.train import TrainingDiverged
    _, target = bench
    poisoned = target.features["text"].copy()
    poisoned[3, 0] = np.nan
    data = type(target)(target.name, target.n_items, {"text": poisoned}, target.has, target.train, target.valid,
                        target.test)
    train = TrainConfig(epochs=2, batch_size=64, patience=2, min_patience_steps=0)
    with pytest.raises(TrainingDiverged, match="the training loss became nan at epoch 0"):
        adapt("scratch", data, SMALL.model_copy(update={"modalities": ["text"]}), train, checkpoint_dir=tmp_path,
              progress=False)


@pytest.mark.parametrize("change, message", [
    ({"n_items": 10**12}, "'n_items' .* is not a catalogue size"),
    ({"n_items": True}, "'n_items' .* is not a catalogue size"),
    ({"model": {**SMALL.model_dump(), "modalities": ["text", "image"]}}, "reads image but records no width"),
])
def test_absurd_checkpoint_metadata_is_one_checkpoint_error(tmp_path, change, message):
    model = ANT({"text": 3}, SMALL.model_copy(update={"modalities": ["text"]}), n_items=5)
    checkpoint.save(tmp_path, model, {"feature_dims": {"text": 3}, "n_items": 5})
    meta = json.loads((tmp_path / checkpoint.META_FILE).read_text())
    (tmp_path / checkpoint.META_FILE).write_text(json.dumps({**meta, **change}))
    with pytest.raises(checkpoint.CheckpointError, match=message):
        checkpoint.load(tmp_path)

"""Any modality set: defaults from the data, `--modalities` overrides, text-only pre-trained
models serve every transferring method, an imported dataset without prices trains with default
settings, and a missing modality is one `error:` line."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ant_config import load_config
from ant_model import checkpoint
from services.context import Context
from services.modalities import ModalityError
from services.planning import adapt_plan, pretrain_plan
from services.training import finished, run_adapt, run_pretrain
from tests.test_atomic import write_atomic
from tests.test_cli_config import ant
from warehouse import registry
from warehouse.atomic import FeatureFile, import_atomic
from warehouse.store import Warehouse, WarehouseError

TINY = {"model": {"width": 16, "ffn_width": 16, "n_experts": 2},
        "pretrain": {"epochs": 2, "batch_size": 32}, "adapt": {"epochs": 2, "batch_size": 32}}


@pytest.fixture()
def home(tmp_path):
    """Two imported domains: "Scientific" with text and image features, "Notes" with text
    only; neither has prices (UniSRec's processed datasets have none)."""
    wh = Warehouse(tmp_path / "home")
    write_atomic(tmp_path / "sci")
    import_atomic(wh, tmp_path / "sci", "Scientific", [
        FeatureFile("text", tmp_path / "sci" / "Scientific.feat1CLS", 8),
        FeatureFile("image", tmp_path / "sci" / "Scientific_image_0.feat", 4)])
    write_atomic(tmp_path / "notes", name="Notes")
    import_atomic(wh, tmp_path / "notes", "Notes", [FeatureFile("text", tmp_path / "notes" / "Notes.feat1CLS", 8)])
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"home": str(wh.home), **TINY}))
    return config


def context(config, **overrides) -> Context:
    return Context.of(load_config(config, **overrides))


def test_defaults_come_from_the_data(home):
    ctx = context(home)
    assert pretrain_plan(ctx, ["Scientific"]).model.modalities == ["text", "image"]  # no prices: left out
    assert pretrain_plan(ctx, ["Scientific", "Notes"]).model.modalities == ["text"]  # what every domain has
    assert adapt_plan(ctx, "Notes", "scratch").model.modalities == ["text"]
    assert adapt_plan(ctx, "Scientific", "features-sasrec").model.modalities == ["text", "image"]
    assert adapt_plan(ctx, "Scientific", "sasrec").model.modalities == []  # item IDs only
    chosen = context(home, model={"modalities": ["image", "text"]})
    assert pretrain_plan(chosen, ["Scientific"]).model.modalities == ["text", "image"]  # one order, one version
    with pytest.raises(ModalityError, match="no image features for Notes"):
        pretrain_plan(chosen, ["Scientific", "Notes"])


def test_text_only_pretrained_model_serves_every_transferring_method(home):
    ctx = context(home, model={"modalities": ["text"]})
    pre = run_pretrain(ctx, pretrain_plan(ctx, ["Notes"]))
    assert pre["modalities"] == ["text"] and pre["stopped_by"] in ("patience", "cap")
    default = context(home)
    for method in ("relearn", "finetune", "finetune-frozen", "unisrec"):
        result = run_adapt(default, adapt_plan(default, "Scientific", method, 0, pre["version"]))
        assert result["pretrained"] == pre["version"] and result["modalities"] == ["text"], method
        assert 0 <= result["recall@10"] <= 1 and np.isfinite(result["ndcg@10"])
    # without --pretrained, unisrec finds the newest text-only model
    assert adapt_plan(default, "Scientific", "unisrec").parent["version"] == pre["version"]


def test_default_parent_has_the_configs_architecture(home):
    """Without --pretrained a method starts from the newest pre-training built with the config's
    width (and layers, ...), never silently from one of another architecture."""
    wide, narrow = context(home, model={"width": 32, "ffn_width": 32}), context(home)
    pre_wide = run_pretrain(wide, pretrain_plan(wide, ["Scientific"]))
    assert adapt_plan(wide, "Scientific", "relearn").parent["version"] == pre_wide["version"]
    with pytest.raises(WarehouseError, match=f"the newest, {pre_wide['version']}, has width 32 \\(config: 16\\)"):
        adapt_plan(narrow, "Scientific", "relearn")
    pre_narrow = run_pretrain(narrow, pretrain_plan(narrow, ["Scientific"]))  # now the newest
    assert adapt_plan(wide, "Scientific", "relearn").parent["version"] == pre_wide["version"]
    assert adapt_plan(narrow, "Scientific", "relearn").parent["version"] == pre_narrow["version"]
    named = adapt_plan(narrow, "Scientific", "relearn", 0, pre_wide["version"])  # named: its own architecture
    assert named.parent["version"] == pre_wide["version"] and named.model.width == 32


def test_an_optional_setting_left_at_null_keeps_every_version(home):
    """`ffn_dropout: null` (PyTorch's behaviour, as before the setting existed) adds nothing to a
    lineage, so models trained before it keep their versions; 0.0 is another architecture. So
    for re-learning's `reset_positions` at null and its experts drawn from N(0, 0.02) (their
    behaviour before them); the Xavier draw, the default with item IDs, is a new version."""
    default, recbole_like = context(home), context(home, model={"ffn_dropout": 0.0})
    plan = pretrain_plan(default, ["Scientific"])
    assert "ffn_dropout" not in plan.lineage["model"]
    assert pretrain_plan(recbole_like, ["Scientific"]).version != plan.version
    run_pretrain(default, plan)
    before = context(home, relearn={"expert_init": "normal"})
    relearn = adapt_plan(before, "Scientific", "relearn")
    assert not {"reset_positions", "expert_init"} & set(relearn.lineage["relearn"])
    inductive = adapt_plan(context(home, model={"item_ids": False}), "Scientific", "relearn")
    assert "expert_init" not in inductive.lineage["relearn"]  # null: normal without item IDs
    assert adapt_plan(default, "Scientific", "relearn").lineage["relearn"]["expert_init"] == "xavier"
    kept = context(home, relearn={"expert_init": "normal", "reset_positions": False})
    assert adapt_plan(kept, "Scientific", "relearn").version != relearn.version
    with pytest.raises(WarehouseError, match="has ffn_dropout None \\(config: 0.0\\)"):
        adapt_plan(recbole_like, "Scientific", "relearn")


def test_how_a_run_executes_keeps_its_version(home):
    """Threads, device and checkpoint interval change how a run executes, not what it learns: a
    model trained on one thread is found done by a run on all cores (no retraining), and its
    lineage records what it ran with. What it learns (the learning rate) is a new version."""
    threaded = context(home, pretrain={"cpu_threads": 1, "checkpoint_every_s": 5.0, "device": "cpu",
                                       "eval_batch_size": 7},
                       adapt={"cpu_threads": 1})
    default = context(home)
    plan = pretrain_plan(threaded, ["Scientific"])
    assert plan.version == pretrain_plan(default, ["Scientific"]).version
    assert plan.lineage["train"]["cpu_threads"] == 1
    assert pretrain_plan(context(home, pretrain={"lr": 2e-3}), ["Scientific"]).version != plan.version
    assert adapt_plan(threaded, "Scientific", "sasrec").version == adapt_plan(default, "Scientific", "sasrec").version
    assert adapt_plan(context(home, adapt={"lr": 2e-3}), "Scientific", "scratch").version != \
        adapt_plan(default, "Scientific", "scratch").version
    trained = run_pretrain(threaded, plan)
    assert finished(pretrain_plan(default, ["Scientific"]))["version"] == trained["version"]
    registered = registry.get(default.warehouse, trained["version"])
    assert registered["lineage"]["train"]["cpu_threads"] == 1


def test_transductive_models_add_target_item_ids_to_a_pretraining_without_them(home):
    """`model.item_ids` (the authors' finetune_transductive) gives every target model a fresh
    item-ID table over the target's items; the pre-training it starts from has none, so it is
    the same version as without the switch and is found as the parent."""
    ids, inductive = context(home), context(home, model={"item_ids": False})
    assert ids.config.model.item_ids  # the default
    plan = pretrain_plan(ids, ["Scientific"])
    assert plan.version == pretrain_plan(inductive, ["Scientific"]).version and not plan.model.item_ids
    run_pretrain(ids, plan)
    for method in ("relearn", "finetune", "scratch"):
        transductive = adapt_plan(ids, "Scientific", method)
        assert transductive.model.item_ids and transductive.version != adapt_plan(inductive, "Scientific", method).version
        result = run_adapt(ids, transductive)
        model, meta = checkpoint.load(transductive.folder / result["path"])
        assert model.items.ids.weight.shape == (meta["n_items"] + 1, TINY["model"]["width"]), method
    assert checkpoint.load(plan.folder / "best")[0].items.ids is None


def test_modalities_flag_and_one_error_line(home):
    out = ant("pretrain", "--config", str(home), "--domain", "Scientific", "--modalities", "image")
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1])["modalities"] == ["image"]
    bad = ant("pretrain", "--config", str(home), "--domain", "Scientific", "--modalities", "text,price")
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [bad.stderr.strip()]  # one line, no traceback
    assert bad.stderr.startswith("error: no price features for Scientific") and "--modalities" in bad.stderr
    typo = ant("pretrain", "--config", str(home), "--modalities", "text,audio")
    assert typo.returncode == 2 and "text, image, price" in typo.stderr

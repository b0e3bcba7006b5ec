"""Training runs: pre-training on auxiliary domains and adaptation to a target, each one
evaluated, written to its versioned artifact folder and registered.

Runs on one ANT_HOME proceed side by side: each trains its own version folder, and a version
is trained by one process at a time (a second run of the same version waits, then finds it
done). Only the registry write is serialised, by the warehouse. With
`orchestration.pretrain_processes` > 1, pre-training runs under `torchrun`
(services/pretrain_worker.py), one DDP rank per process.
"""
from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator

from filelock import FileLock

from ant_config.protocol import SELECT_ON
from ant_model.data import DomainData
from ant_model.device import pick_device
from ant_model.evaluate import Evaluation, rank_targets
from ant_model.strategies import adapt, pretrain, sanity_scorer
from services.context import Context
from services.planning import Plan, adapt_folder
from warehouse import registry, training

log = logging.getLogger(__name__)

RESULT_FILE, RANKS_FILE = "result.json", "test_ranks.npz"
_PROCESS_RUN = f"cli:{uuid.uuid4().hex[:12]}"


def run_id() -> str:
    """The Prefect flow run this process works for, or an id of this command run."""
    if "prefect" in sys.modules:  # never import Prefect just to learn there is no flow
        from prefect.runtime import flow_run
        if flow_run.id:
            return str(flow_run.id)
    return _PROCESS_RUN


def domain_data(ctx: Context, domain: str, dims: dict[str, int]) -> DomainData:
    arrays = training.load_domain(ctx.warehouse, domain, dims)
    return DomainData(domain, arrays["n_items"], arrays["features"], arrays["has"], arrays["train"],
                      arrays["valid"], arrays["test"])


def finished(plan: Plan) -> dict | None:
    """The result of `plan` if a run has trained it in this home, else None."""
    done = plan.folder / RESULT_FILE
    return json.loads(done.read_text()) if done.exists() else None


@contextlib.contextmanager
def _exclusive(plan: Plan, lock: bool = True) -> Iterator[dict | None]:
    """Hold the version's lock (unless `lock` is false: the other nodes of a multi-node run take
    part in node 0's run); yields its finished result, if an earlier run wrote one."""
    plan.folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(plan.folder / ".lock")) if lock else contextlib.nullcontext():
        yield finished(plan)


def _finish(ctx: Context, plan: Plan, result: dict, **registered) -> dict:
    registry.register(ctx.warehouse, plan.version, plan.kind, plan.folder / result["path"], plan.lineage,
                      flow_run_id=run_id(), **registered)
    (plan.folder / RESULT_FILE).write_text(json.dumps(result, indent=2))
    return result


def train_pretrain(ctx: Context, plan: Plan) -> dict:
    """Pre-train `plan` in this process (one rank of it under torchrun); the fit's summary."""
    data = [domain_data(ctx, d, plan.dims) for d in plan.domains]
    _, fit = pretrain(data, plan.model, plan.train, checkpoint_dir=plan.folder)
    return {**fit.summary(), "valid": fit.best_valid}


def _torchrun_pretrain(ctx: Context, plan: Plan, processes: int) -> dict:
    """Pre-train `plan` under `torchrun` with `processes` ranks (DDP; NCCL on GPUs, gloo on CPU)."""
    request = plan.folder / "torchrun.json"
    request.write_text(json.dumps({"config": ctx.config.model_dump(mode="json"), "domains": plan.domains,
                                   "kind": plan.method}))
    orchestration = ctx.config.orchestration
    if orchestration.pretrain_nodes > 1:
        rendezvous = ["--nnodes", str(orchestration.pretrain_nodes), "--node_rank", str(orchestration.node_rank),
                      "--rdzv_backend", "c10d", "--rdzv_endpoint", orchestration.rendezvous_endpoint,
                      "--rdzv_id", plan.version]
    else:
        rendezvous = ["--standalone"]
    command = [sys.executable, "-m", "torch.distributed.run", *rendezvous, "--nproc_per_node",
               str(processes), "-m", "services.pretrain_worker", str(request)]
    log.info("pre-training under torchrun: %s", " ".join(command))
    done = subprocess.run(command, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"torchrun pre-training failed (exit {done.returncode}); its log is above. "
                           f"Run again to resume from {plan.folder / 'last'}")
    return json.loads((plan.folder / "fit.json").read_text())


def run_pretrain(ctx: Context, plan: Plan) -> dict:
    """Train (or find trained) the pre-training `plan`, registered; its result."""
    with _exclusive(plan, lock=ctx.config.orchestration.node_rank == 0) as done:
        if done is not None:
            log.info("pre-trained model %s exists: nothing to train", plan.version)
            return done
        orchestration = ctx.config.orchestration
        distributed = orchestration.pretrain_processes > 1 or orchestration.pretrain_nodes > 1
        fit = _torchrun_pretrain(ctx, plan, orchestration.pretrain_processes) if distributed \
            else train_pretrain(ctx, plan)
        result = {"version": plan.version, "kind": plan.method, "path": "best", "domains": plan.domains,
                  "modalities": plan.model.modalities, **fit}
        return _finish(ctx, plan, result, method=plan.method, valid=fit["valid"], training=fit)


def run_adapt(ctx: Context, plan: Plan) -> dict:
    """Train (or find trained) one method on one target, evaluate it on the test split, register it."""
    with _exclusive(plan) as done:
        if done is not None:
            return done
        target = plan.domains[0]
        data = domain_data(ctx, target, plan.dims)
        if plan.model is None:  # a sanity baseline: no parameters to train
            score, device, max_len = sanity_scorer(plan.method, data, plan.seed), "cpu", ctx.config.model.max_seq_len
            batch = ctx.config.adapt.eval_batch_size
            valid = rank_targets(score, data.valid, batch, max_len, device).metrics()
            summary, path = {"best_epoch": None, "epochs_run": 0, "stopped_by": None, "seconds": 0.0}, "."
        else:
            model, fit = adapt(plan.method, data, plan.model, plan.train, plan.parent_checkpoint,
                               checkpoint_dir=plan.folder, relearn=ctx.config.relearn)
            device, max_len = pick_device(plan.train.device), plan.model.max_seq_len
            batch = min(plan.train.eval_batch_size, max(1, plan.train.max_logits // (data.n_items + 1)))
            score, valid, summary, path = model.scorer(data.tensors(device)), fit.best_valid, fit.summary(), "best"
        test = rank_targets(score, data.test, batch, max_len, device)
        test.save(plan.folder / RANKS_FILE)
        result = {"method": plan.method, "target": target, "version": plan.version, "seed": plan.seed,
                  **test.metrics(), "valid": valid, **summary,
                  "pretrained": plan.parent["version"] if plan.parent else None,
                  "modalities": plan.model.modalities if plan.model else [], "path": path}
        log.info("%s %s seed %s: test %s %.4f (valid %.4f)", target, plan.method, plan.seed, SELECT_ON,
                 result[SELECT_ON], valid[SELECT_ON])
        return _finish(ctx, plan, result, target=target, method=plan.method, seed=plan.seed,
                       parent=result["pretrained"], valid=valid, test=test.metrics(), training=summary)


def test_evaluation(ctx: Context, result: dict) -> Evaluation:
    """The per-user test ranks of a finished adaptation run."""
    return Evaluation.load(adapt_folder(ctx, result["target"], result["method"], result["version"]) / RANKS_FILE)

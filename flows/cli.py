"""`ant`: the command line. Each subcommand validates its input, then runs a flow (or, for
`sql`, one read-only query). Known failures print one clear line and exit 1."""
from __future__ import annotations

import csv
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

# Prefect reads these at import: our own loggers join the run logs, and a temporary local
# API (no server configured) gets time to start on a loaded machine. Users can override.
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "warehouse,ant_model,tasks,flows")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

from ant_config import ConfigError, load_config  # noqa: E402
from ant_model.checkpoint import CheckpointError  # noqa: E402
from ant_model.strategies import METHODS  # noqa: E402
from encoders.weights import WeightsUnavailable  # noqa: E402
from warehouse.atomic import AtomicFormatError, FeatureFile, import_atomic  # noqa: E402
from warehouse.download import DownloadError  # noqa: E402
from warehouse.parse import CorruptRawFile  # noqa: E402
from warehouse.sources import UnknownCategory, check_categories  # noqa: E402
from warehouse.store import Warehouse, WarehouseError  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="ANT: transferable multi-modal sequential recommendation on Amazon reviews.")

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config file")]
USER_ERRORS = (ConfigError, UnknownCategory, WarehouseError, DownloadError, CorruptRawFile,
               WeightsUnavailable, AtomicFormatError)
MODALITIES = ("text", "image", "price")


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(1)


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FLOW_COMMANDS = ("ingest", "features", "pretrain", "adapt", "run")


@app.callback()
def _main(ctx: typer.Context, verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    handler = logging.StreamHandler()
    if ctx.invoked_subcommand in FLOW_COMMANDS:  # name the task or flow run of each line
        from prefect.logging.formatters import PrefectFormatter  # ~3 s to import: only for flows
        handler.setFormatter(PrefectFormatter(
            LOG_FORMAT, task_run_fmt="%(asctime)s %(levelname)s task run %(task_run_name)r: %(message)s",
            flow_run_fmt="%(asctime)s %(levelname)s flow run %(flow_run_name)r: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    logging.getLogger("httpx").setLevel(logging.WARNING)


@app.command()
def ingest(config: ConfigOpt = None,
           release: Annotated[Optional[str], typer.Option(help="2018 or 2023")] = None,
           domain: Annotated[Optional[list[str]], typer.Option(
               "--domain", "-d", help="category to ingest (repeatable); default: the config's")] = None) -> None:
    """Download Amazon review files and build clean sequences in the warehouse."""
    try:
        cfg = load_config(config, release=release)
        categories = domain or cfg.categories
        check_categories(cfg.release, categories)  # fail before Prefect or any download starts
        from flows.ingest import ingest as ingest_flow
        summaries = ingest_flow(str(config) if config else None, release, categories)
    except USER_ERRORS as exc:
        _fail(exc)
    for s in summaries:
        typer.echo(f"{s['domain']}: {s['status']}, {s['users']} users, {s['items']} items, "
                   f"{s['interactions']} interactions ({s['rejected']} rejected lines)")


@app.command()
def features(config: ConfigOpt = None,
             domain: Annotated[Optional[list[str]], typer.Option(
                 "--domain", "-d", help="domain to encode (repeatable); default: the config's")] = None) -> None:
    """Frozen text, image and price vectors of every item of the domains."""
    try:
        load_config(config)  # a bad config fails here, before Prefect starts
        from flows.features import features as features_flow
        summaries = features_flow(str(config) if config else None, domain)
    except USER_ERRORS as exc:
        _fail(exc)
    for s in summaries:
        typer.echo(f"{s['domain']} {s['modality']}: {s['with_feature']}/{s['items']} items, "
                   f"{s['encoded']} encoded, {s['reused']} unchanged ({s['encoder_id']})")


def _feature_file(spec: str) -> FeatureFile:
    modality, _, rest = spec.partition("=")
    path, _, dim = rest.rpartition(":")
    if modality not in MODALITIES or not path or not dim.isdigit():
        raise typer.BadParameter(f"{spec!r}: expected MODALITY=FILE:DIM with MODALITY one of "
                                 f"{', '.join(MODALITIES)}, e.g. text=Scientific.feat1CLS:768")
    return FeatureFile(modality, Path(path), int(dim))


@app.command("import-atomic")
def import_atomic_cmd(
        directory: Annotated[Path, typer.Argument(help="folder with <D>.train.inter, ...")],
        domain: Annotated[str, typer.Option("--domain", "-d", help="warehouse domain name")],
        feature: Annotated[Optional[list[str]], typer.Option(
            "--feature", "-f", help="MODALITY=FILE:DIM, raw float32 rows per item index")] = None,
        config: ConfigOpt = None) -> None:
    """Load a processed RecBole/UniSRec atomic dataset as a domain, keeping its split."""
    files = [_feature_file(spec) for spec in feature or []]
    try:
        cfg = load_config(config)
        wh = Warehouse(cfg.home)
        with wh.run_lock(cfg.orchestration.lock_timeout_s):
            summary = import_atomic(wh, directory, domain, files)
    except USER_ERRORS as exc:
        _fail(exc)
    typer.echo(f"{summary.domain}: imported {summary.users} users, {summary.items} items, "
               f"{summary.interactions} interactions, features {summary.features or 'none'}")


def _training_overrides(section: str, epochs, batch_size, width, lr, device) -> dict:
    """Command-line hyper-parameters as a nested config override."""
    train = {k: v for k, v in {"epochs": epochs, "batch_size": batch_size, "lr": lr, "device": device}.items()
             if v is not None}
    out: dict = {section: train} if train else {}
    if width is not None:
        out["model"] = {"width": width, "ffn_width": width}
    return out


Epochs = Annotated[Optional[int], typer.Option(help="override the config's epochs")]
BatchSize = Annotated[Optional[int], typer.Option(help="sequences per batch")]
Width = Annotated[Optional[int], typer.Option(help="model width (and feed-forward width)")]
LearningRate = Annotated[Optional[float], typer.Option("--lr", help="learning rate")]
Device = Annotated[Optional[str], typer.Option(help="auto, cpu, cuda, cuda:1, ...")]


@app.command("pretrain")
def pretrain_cmd(config: ConfigOpt = None,
                 domain: Annotated[Optional[list[str]], typer.Option(
                     "--domain", "-d", help="auxiliary domain (repeatable); default: the config's")] = None,
                 text_only: Annotated[bool, typer.Option(help="text-only model (the unisrec baseline)")] = False,
                 epochs: Epochs = None, batch_size: BatchSize = None, width: Width = None,
                 lr: LearningRate = None, device: Device = None) -> None:
    """Pre-train one model on the auxiliary domains; prints its version as JSON."""
    overrides = _training_overrides("pretrain", epochs, batch_size, width, lr, device)
    try:
        load_config(config, **overrides)
        from flows.train import pretrain
        result = pretrain(str(config) if config else None, domain, overrides, text_only)
    except USER_ERRORS as exc:
        _fail(exc)
    typer.echo(json.dumps({k: result[k] for k in ("version", "path", "domains", "best_epoch", "valid")}))


@app.command("adapt")
def adapt_cmd(target: Annotated[str, typer.Option(help="target domain")],
              method: Annotated[str, typer.Option(help=", ".join(METHODS))] = "relearn",
              pretrained: Annotated[Optional[str], typer.Option(help="pre-trained version (default: newest)")] = None,
              config: ConfigOpt = None, seed: Annotated[Optional[int], typer.Option()] = None,
              epochs: Epochs = None, batch_size: BatchSize = None, width: Width = None,
              lr: LearningRate = None, device: Device = None) -> None:
    """Train one method on a target domain; prints its test metrics as one JSON line."""
    if method not in METHODS:
        raise typer.BadParameter(f"{method!r}: one of {', '.join(METHODS)}", param_hint="--method")
    overrides = _training_overrides("adapt", epochs, batch_size, width, lr, device)
    try:
        load_config(config, **overrides)
        from flows.train import adapt
        result = adapt(target, method, str(config) if config else None, pretrained, seed, overrides)[0]
    except USER_ERRORS + (CheckpointError,) as exc:
        _fail(exc)
    typer.echo(json.dumps({"method": method, "target": target,
                           **{k: round(result[k], 6) for k in ("recall@10", "ndcg@10", "recall@50", "ndcg@50")}}))


@app.command()
def run(config: ConfigOpt = None) -> None:
    """The end-to-end pipeline: ingest, features, pre-training, every method on every target,
    then the transfer report."""
    try:
        cfg = load_config(config)
        if not cfg.targets or not cfg.auxiliary:
            raise ConfigError(f"config {config or '(defaults)'} needs auxiliary and targets categories")
        from flows.pipeline import pipeline
        report = pipeline(str(config) if config else None)
    except USER_ERRORS + (CheckpointError,) as exc:
        _fail(exc)
    typer.echo(report)
    typer.echo(f"Artifacts: {Path(cfg.home).resolve() / 'artifacts'}")


models_app = typer.Typer(no_args_is_help=True, help="The model registry: list, show, promote.")
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list(target: Annotated[Optional[str], typer.Option(help="only this target's models")] = None,
                config: ConfigOpt = None) -> None:
    """Every registered model, oldest first."""
    from warehouse import registry
    try:
        rows = registry.models(Warehouse(load_config(config).home), target)
    except USER_ERRORS as exc:
        _fail(exc)
    _print_table(["version", "kind", "target", "method", "seed", "valid recall@10", "test recall@10", "created_at"],
                 [(r["version"], r["kind"], r["target"], r["method"], r["seed"],
                   _metric(r["valid"]), _metric(r["test"]), str(r["created_at"])[:19]) for r in rows])


def _metric(metrics: dict | None) -> str:
    return f"{metrics['recall@10']:.4f}" if metrics else ""


@models_app.command("show")
def models_show(version: str, config: ConfigOpt = None) -> None:
    """A model's lineage, metrics and files, as JSON."""
    from warehouse import registry
    try:
        record = registry.get(Warehouse(load_config(config).home), version)
    except USER_ERRORS as exc:
        _fail(exc)
    if record is None:
        _fail(WarehouseError(f"no model version {version!r}: see `ant models list`"))
    typer.echo(json.dumps(record, indent=2, default=str))


@models_app.command("promote")
def models_promote(version: str, config: ConfigOpt = None) -> None:
    """Serve `version` for its target (`ant recommend` uses the promoted model)."""
    from warehouse import registry
    try:
        record = registry.promote(Warehouse(load_config(config).home), version, "promoted by hand")
    except USER_ERRORS as exc:
        _fail(exc)
    typer.echo(f"{record['target']}: {version} ({record['method']}) promoted")


@app.command()
def recommend(target: Annotated[str, typer.Option(help="target domain")],
              history: Annotated[str, typer.Option(help="comma-separated item ids, oldest first")],
              k: Annotated[int, typer.Option("-k", help="how many items")] = 10,
              config: ConfigOpt = None) -> None:
    """Top-k next items for a history, from the target's promoted model."""
    from tasks.recommend import recommend as top_k
    try:
        rows = top_k(load_config(config), target, [h.strip() for h in history.split(",") if h.strip()], k)
    except USER_ERRORS + (CheckpointError,) as exc:
        _fail(exc)
    _print_table(["rank", "item_id", "score", "title"],
                 [(n, r["item_id"], f"{r['score']:.4f}", r["title"] or "") for n, r in enumerate(rows, 1)])


@app.command()
def report(target: Annotated[Optional[str], typer.Option(help="only this target's section")] = None,
           config: ConfigOpt = None) -> None:
    """Print the latest transfer report of `ant run` (its chart is next to it)."""
    from tasks.report import report_dir
    try:
        path = report_dir(load_config(config)) / "latest" / "report.md"
    except USER_ERRORS as exc:
        _fail(exc)
    if not path.exists():
        _fail(WarehouseError(f"no report at {path}: run `ant run` first"))
    text = path.read_text()
    if target:
        sections = [s for s in text.split("## ") if s.startswith(f"{target}\n")]
        if not sections:
            _fail(WarehouseError(f"no target {target!r} in {path}"))
        text = "## " + sections[0]
    typer.echo(text)
    if not target:
        typer.echo(f"Report folder: {path.parent}")


@app.command()
def sql(query: Annotated[str, typer.Argument(help="a read-only SQL query")],
        as_csv: Annotated[bool, typer.Option("--csv", help="print CSV instead of a table")] = False,
        config: ConfigOpt = None) -> None:
    """Run a read-only query on the warehouse (tables and views: see README)."""
    try:
        wh = Warehouse(load_config(config).home)
        with wh.reader() as con:
            cursor = con.execute(query)
            columns = [d[0] for d in cursor.description or []]
            rows = cursor.fetchall()
    except USER_ERRORS as exc:
        _fail(exc)
    except Exception as exc:  # noqa: BLE001 - a bad query is the user's to fix, show it plainly
        _fail(exc)
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
        return
    _print_table(columns, rows)


def _print_table(columns: list[str], rows: list[tuple]) -> None:
    cells = [columns] + [["NULL" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for n, row in enumerate(cells):
        typer.echo("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
        if n == 0:
            typer.echo("  ".join("-" * w for w in widths))
    typer.echo(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")


if __name__ == "__main__":
    app()

"""`ant`: the command line.

Interactive commands (`sql`, `models`, `report`, `recommend`, `pretrain`, `adapt`,
`import-atomic`, `export-atomic`) call the services directly: no Prefect, no server, and only
the libraries they need (torch only to train or recommend), so the quick ones answer at once.
The DAG commands (`ingest`, `features`, `run`) run the Prefect flows. Known failures print one
`error:` line and exit 1 (`-v` adds the traceback).
"""
from __future__ import annotations

import atexit
import csv
import errno
import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Optional

import typer

from ant_config.errors import ConfigError, UserError
from ant_config.protocol import METHODS, METRICS, MODALITIES

# Plain help (no rich): `ant --help` answers before rich's import would have finished.
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None, pretty_exceptions_enable=False,
                  help="ANT: transferable multi-modal sequential recommendation on Amazon reviews.")

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config file")]
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FLOW_COMMANDS = ("ingest", "features", "run", "demo")
_verbose = False


class _HeldPrefectErrors(logging.Filter):
    """Without -v, Prefect's ERROR records (a failed task or flow run, with its traceback) are
    held back: a known failure then ends in one `error:` line that says it all (`_fail` drops
    them), and any other ending prints them at exit. The Prefect UI keeps every record."""

    def __init__(self, handler: logging.Handler):
        super().__init__()
        self.handler, self.held = handler, []
        atexit.register(self.release)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("prefect") and record.levelno >= logging.ERROR:
            self.held.append(record)
            return False
        return True

    def release(self) -> None:
        self.handler.removeFilter(self)
        for record in self.held:
            self.handler.handle(record)
        self.held.clear()


_held: _HeldPrefectErrors | None = None


def _load_config(path: Path | None, **overrides):
    """`ant_config.load_config`, imported on first use: building the pydantic models is most of
    the start-up of a command that needs no config (`--help`)."""
    from ant_config import load_config
    return load_config(path, **overrides)


def _fail(exc: BaseException) -> None:
    if _verbose:
        traceback.print_exception(exc)
    if _held is not None:
        _held.held.clear()  # the error line below says what they said
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(1)


@app.callback()
def _main(ctx: typer.Context, verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    global _verbose, _held
    _verbose = verbose
    handler = logging.StreamHandler()
    if ctx.invoked_subcommand in FLOW_COMMANDS:  # name the task or flow run of each line
        # Prefect reads these at import: our own loggers join the run logs, and its API gets
        # time to start on a loaded machine. Users can override them.
        os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "warehouse,ant_model,services,tasks,flows,encoders")
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
        from prefect.logging.formatters import PrefectFormatter
        handler.setFormatter(PrefectFormatter(
            LOG_FORMAT, task_run_fmt="%(asctime)s %(levelname)s task run %(task_run_name)r: %(message)s",
            flow_run_fmt="%(asctime)s %(levelname)s flow run %(flow_run_name)r: %(message)s"))
        if not verbose:
            _held = _HeldPrefectErrors(handler)
            handler.addFilter(_held)
    else:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _flow_api(cfg):
    """The Prefect API a flow command runs under (flows.server.prefect_api), started only once
    the home is known to be writable: otherwise one error line and no server."""
    from flows.server import prefect_api
    from warehouse.store import Warehouse
    Warehouse(cfg.home).ensure_home()
    return prefect_api(cfg.home, cfg.orchestration.server_idle_s)


def _context(config: Path | None, **overrides):
    from services.context import Context
    return Context.of(_load_config(config, **overrides))


def _modalities(spec: str | None) -> list[str] | None:
    if spec is None:
        return None
    chosen = [m.strip() for m in spec.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in MODALITIES]
    if unknown or not chosen:
        raise typer.BadParameter(f"{spec!r}: a comma-separated list of {', '.join(MODALITIES)}",
                                 param_hint="--modalities")
    return chosen


def _name(value):
    """The one check of every domain or target name given on the command line (a name becomes a
    folder name): a usage error, before anything runs."""
    from ant_config.releases import BadName, check_name
    try:
        return [check_name(v) for v in value] if isinstance(value, list) else \
            (value if value is None else check_name(value))
    except BadName as exc:
        raise typer.BadParameter(str(exc)) from exc


Modalities = Annotated[Optional[str], typer.Option(
    help="item features to read, e.g. text,image (default: from the data)")]


def _overrides(section: str | None = None, *, epochs=None, batch_size=None, width=None, lr=None, device=None,
               modalities: str | None = None) -> dict:
    """Command-line settings as a nested config override."""
    out: dict = {}
    train = {k: v for k, v in {"epochs": epochs, "batch_size": batch_size, "lr": lr, "device": device}.items()
             if v is not None}
    if train and section:
        out[section] = train
    model = {"width": width, "ffn_width": width} if width is not None else {}
    if modalities is not None:
        model["modalities"] = _modalities(modalities)
    if model:
        out["model"] = model
    return out


Epochs = Annotated[Optional[int], typer.Option(help="override the config's epochs")]
BatchSize = Annotated[Optional[int], typer.Option(help="target positions (prefix → next item examples) per batch")]
Width = Annotated[Optional[int], typer.Option(help="model width (and feed-forward width)")]
LearningRate = Annotated[Optional[float], typer.Option("--lr", help="learning rate")]
Device = Annotated[Optional[str], typer.Option(help="auto, cpu, cuda, cuda:1, ...")]


# -- the DAG: Prefect flows --------------------------------------------------------------------
@app.command()
def ingest(config: ConfigOpt = None,
           release: Annotated[Optional[str], typer.Option(help="2018 or 2023")] = None,
           domain: Annotated[Optional[list[str]], typer.Option(
               "--domain", "-d", callback=_name, help="category to ingest (repeatable); default: the config's")] = None,
           allow_shrink: Annotated[bool, typer.Option(
               help="publish a domain even when it comes out empty or much smaller than the published one")] = False
           ) -> None:
    """Download Amazon review files and build clean sequences in the warehouse."""
    try:
        overrides = {"ingest": {"allow_shrink": True}} if allow_shrink else {}
        cfg = _load_config(config, release=release, **overrides)
        from ant_config.releases import check_categories
        check_categories(cfg.release, domain or cfg.categories)  # fail before Prefect or any download starts
        from flows.ingest import ingest as ingest_flow
        with _flow_api(cfg):
            summaries = ingest_flow(str(config) if config else None, release, domain, overrides)
    except UserError as exc:
        _fail(exc)
    for s in summaries:
        if "raw_reviews" in s:
            typer.echo(f"{s['domain']}: {s['status']}, {s['users']} users, {s['items']} items, "
                       f"{s['interactions']} interactions ({s['rejected']} rejected lines)")
        else:
            typer.echo(f"{s['domain']}: {s['status']} (import), {s['users']} users, {s['items']} items, "
                       f"{s['interactions']} interactions")


@app.command()
def features(config: ConfigOpt = None,
             domain: Annotated[Optional[list[str]], typer.Option(
                 "--domain", "-d", callback=_name, help="domain to encode (repeatable); default: the config's")] = None) -> None:
    """Frozen text, image and price vectors of every item of the domains."""
    try:
        cfg = _load_config(config)  # a bad config fails here, before Prefect starts
        from flows.features import features as features_flow
        with _flow_api(cfg):
            summaries = features_flow(str(config) if config else None, domain)
    except UserError as exc:
        _fail(exc)
    for s in summaries:
        typer.echo(f"{s['domain']} {s['modality']}: {s['status']}, {s['with_feature']}/{s['items']} items, "
                   f"{s['encoded']} encoded, {s['reused']} unchanged ({s['encoder_id']})")


def _run_pipeline(config: Path | None, overrides: dict) -> None:
    try:
        cfg = _load_config(config, **overrides)
        if not cfg.targets or not cfg.auxiliary:
            raise ConfigError(f"config {config or '(defaults)'} needs auxiliary and targets categories")
        from flows.pipeline import pipeline
        with _flow_api(cfg):
            report = pipeline(str(config) if config else None, overrides)
    except UserError as exc:
        _fail(exc)
    typer.echo(report)
    typer.echo(f"Report and charts: {Path(cfg.home).resolve() / 'artifacts' / 'reports' / 'latest'}")


@app.command()
def run(config: ConfigOpt = None, modalities: Modalities = None) -> None:
    """The end-to-end pipeline: ingest, features, pre-training, every method on every target,
    promotion, recommendations, then the transfer report."""
    _run_pipeline(config, _overrides(modalities=modalities))


@app.command()
def demo(home: Annotated[Path, typer.Option(help="where the demo keeps everything")] = Path("ant-demo")) -> None:
    """The whole pipeline offline on the bundled real fixtures (MiniLM text, prices, no image
    download), in a few minutes; ends with the transfer report and its charts."""
    try:
        from flows.demo import demo_config
        config = demo_config(home)
    except UserError as exc:
        _fail(exc)
    # the command line outranks ANT_HOME and the mirror variables: the demo stays in its folder
    _run_pipeline(config, {"home": str(home.resolve()), "sources": {"amazon_2018_url": str(home.resolve() / "mirror")}})


# -- training: the services, no Prefect ------------------------------------------------------
@app.command("pretrain")
def pretrain_cmd(config: ConfigOpt = None,
                 domain: Annotated[Optional[list[str]], typer.Option(
                     "--domain", "-d", callback=_name, help="auxiliary domain (repeatable); default: the config's")] = None,
                 text_only: Annotated[bool, typer.Option(help="text-only model (the unisrec baseline)")] = False,
                 modalities: Modalities = None, epochs: Epochs = None, batch_size: BatchSize = None,
                 width: Width = None, lr: LearningRate = None, device: Device = None) -> None:
    """Pre-train one model on the auxiliary domains; prints its version as JSON."""
    try:
        ctx = _context(config, **_overrides("pretrain", epochs=epochs, batch_size=batch_size, width=width,
                                            lr=lr, device=device, modalities=modalities))
        from services.planning import pretrain_plan
        from services.training import run_pretrain
        plan = pretrain_plan(ctx, domain or ctx.config.auxiliary_domains, "text-only" if text_only else "ant")
        result = run_pretrain(ctx, plan)
    except UserError as exc:
        _fail(exc)
    typer.echo(json.dumps({k: result[k] for k in ("version", "domains", "modalities", "best_epoch", "epochs_run",
                                                  "stopped_by", "valid")}))


@app.command("adapt")
def adapt_cmd(target: Annotated[str, typer.Option(callback=_name, help="target domain")],
              method: Annotated[str, typer.Option(help=", ".join(METHODS))] = "relearn",
              pretrained: Annotated[Optional[str], typer.Option(
                  help="pre-trained version (default: the newest with this config's architecture)")] = None,
              config: ConfigOpt = None, seed: Annotated[Optional[int], typer.Option()] = None,
              modalities: Modalities = None, epochs: Epochs = None, batch_size: BatchSize = None,
              width: Width = None, lr: LearningRate = None, device: Device = None) -> None:
    """Train one method on a target domain; prints its test metrics as one JSON line."""
    if method not in METHODS:
        raise typer.BadParameter(f"{method!r}: one of {', '.join(METHODS)}", param_hint="--method")
    try:
        section = "sasrec" if method == "sasrec" else "adapt"
        ctx = _context(config, **_overrides(section, epochs=epochs, batch_size=batch_size, width=width, lr=lr,
                                            device=device, modalities=modalities))
        from services.planning import adapt_plan
        from services.training import run_adapt
        result = run_adapt(ctx, adapt_plan(ctx, ctx.config.domain(target), method, seed, pretrained))
    except UserError as exc:
        _fail(exc)
    typer.echo(json.dumps({"method": method, "target": result["target"], "version": result["version"],
                           "seed": result["seed"], **{k: round(result[k], 6) for k in METRICS},
                           **{k: result[k] for k in ("best_epoch", "epochs_run", "stopped_by", "modalities")}}))


# -- the warehouse and the registry --------------------------------------------------------------
def _feature_file(spec: str):
    from warehouse.atomic import FeatureFile
    modality, _, rest = spec.partition("=")
    path, _, dim = rest.rpartition(":")
    if modality not in MODALITIES or not path or not dim.isdigit() or int(dim) < 1:
        raise typer.BadParameter(f"{spec!r}: expected MODALITY=FILE:DIM with MODALITY one of "
                                 f"{', '.join(MODALITIES)}, e.g. text=Scientific.feat1CLS:768")
    return FeatureFile(modality, Path(path), int(dim))


@app.command("import-atomic")
def import_atomic_cmd(
        directory: Annotated[Path, typer.Argument(help="folder with <D>.train.inter, ...")],
        domain: Annotated[str, typer.Option("--domain", "-d", callback=_name, help="warehouse domain name")],
        feature: Annotated[Optional[list[str]], typer.Option(
            "--feature", "-f", help="MODALITY=FILE:DIM, raw float32 rows per item index")] = None,
        allow_shrink: Annotated[bool, typer.Option(
            help="replace a published domain even with an empty or much smaller one")] = False,
        replace_category: Annotated[bool, typer.Option(
            help="let the import replace a downloaded Amazon category of the same name")] = False,
        config: ConfigOpt = None) -> None:
    """Load a processed RecBole/UniSRec atomic dataset as a domain, keeping its split."""
    files = [_feature_file(spec) for spec in feature or []]
    try:
        ctx = _context(config, **({"ingest": {"allow_shrink": True}} if allow_shrink else {}))
        from warehouse.atomic import import_atomic
        with ctx.warehouse.write_lock(ctx.config.orchestration.lock_timeout_s):
            summary = import_atomic(ctx.warehouse, directory, domain, files, ctx.config.ingest, replace_category)
    except UserError as exc:
        _fail(exc)
    except Exception as exc:  # noqa: BLE001 - an import never ends in a bare traceback
        failure = RuntimeError(f"importing {directory}: {type(exc).__name__}: {exc} "
                               f"(run `ant -v import-atomic ...` for the traceback)")
        failure.__cause__ = exc
        _fail(failure)
    typer.echo(f"{summary.domain}: {summary.status} {summary.users} users, {summary.items} items, "
               f"{summary.interactions} interactions, features {summary.features or 'none'}"
               + (f", {summary.rejected} .text lines rejected" if summary.rejected else "")
               + (f", {summary.short_users} users without a training item left out" if summary.short_users else "")
               + (f", stored {'/'.join(summary.kept_features)} vectors kept (same items)" if summary.kept_features else "")
               + (f", stored {'/'.join(summary.dropped_features)} vectors dropped (the items changed; run "
                  f"`ant features`)" if summary.dropped_features else ""))


@app.command("export-atomic")
def export_atomic_cmd(
        directory: Annotated[Path, typer.Argument(help="folder to write <DOMAIN>.{train,valid,test}.inter, ... into")],
        domain: Annotated[str, typer.Option("--domain", "-d", callback=_name, help="warehouse domain")],
        force: Annotated[bool, typer.Option(help="replace a folder that is not empty")] = False,
        config: ConfigOpt = None) -> None:
    """Write a domain in RecBole/UniSRec atomic format (split, id maps, text, feature files),
    so peer implementations train on exactly the same data."""
    try:
        ctx = _context(config)
        from warehouse.atomic import export_atomic
        written = export_atomic(ctx.warehouse, domain, directory, ctx.config.model.max_seq_len, force)
    except UserError as exc:
        _fail(exc)
    for path in written:
        typer.echo(str(path))


models_app = typer.Typer(no_args_is_help=True, help="The model registry: list, show, promote.")
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list(target: Annotated[Optional[str], typer.Option(callback=_name, help="only this target's models")] = None,
                config: ConfigOpt = None) -> None:
    """Every registered model, oldest first."""
    try:
        from warehouse import registry
        rows = registry.models(_context(config).warehouse, target)
    except UserError as exc:
        _fail(exc)
    _print_table(["version", "kind", "target", "method", "seed", "valid recall@10", "test recall@10",
                  "best epoch", "stopped by", "created_at"],
                 [(r["version"], r["kind"], r["target"], r["method"], r["seed"], _metric(r["valid"]),
                   _metric(r["test"]), (r["training"] or {}).get("best_epoch"), (r["training"] or {}).get("stopped_by"),
                   str(r["created_at"])[:19]) for r in rows])


def _metric(metrics: dict | None) -> str:
    return f"{metrics['recall@10']:.4f}" if metrics else ""


@models_app.command("show")
def models_show(version: str, config: ConfigOpt = None) -> None:
    """A model's lineage, metrics and files, as JSON."""
    try:
        from warehouse import registry
        from warehouse.store import WarehouseError
        record = registry.get(_context(config).warehouse, version)
        if record is None:
            raise WarehouseError(f"no model version {version!r}: see `ant models list`")
    except UserError as exc:
        _fail(exc)
    typer.echo(json.dumps(record, indent=2, default=str))


@models_app.command("promote")
def models_promote(version: str, config: ConfigOpt = None) -> None:
    """Serve `version` for its target (`ant recommend` uses the promoted model)."""
    try:
        from warehouse import registry
        record = registry.promote(_context(config).warehouse, version, "promoted by hand")
    except UserError as exc:
        _fail(exc)
    typer.echo(f"{record['target']}: {version} ({record['method']}) promoted")


@app.command()
def recommend(target: Annotated[str, typer.Option(callback=_name, help="target domain")],
              history: Annotated[Optional[str], typer.Option(help="comma-separated item ids, oldest first")] = None,
              all_users: Annotated[bool, typer.Option("--all", help="every user of the target, into the "
                                                                   "`recommendations` table")] = False,
              k: Annotated[int, typer.Option("-k", min=1, help="how many items (at least 1)")] = 10,
              config: ConfigOpt = None) -> None:
    """Top-k next items for a history (or for every user, with --all) from the target's promoted model."""
    if (history is None) == (not all_users):
        raise typer.BadParameter("give either --history or --all")
    try:
        ctx = _context(config)
        from services import recommend as service
        if all_users:
            summary = service.recommend_all(ctx, ctx.config.domain(target), k, ctx.config.adapt.eval_batch_size)
        else:
            rows = service.recommend(ctx, ctx.config.domain(target),
                                     [h.strip() for h in history.split(",") if h.strip()], k)
    except UserError as exc:
        _fail(exc)
    if all_users:
        typer.echo(f"{summary['target']}: top {summary['k']} for {summary['users']} users from "
                   f"{summary['version']} in the `recommendations` table")
        return
    _print_table(["rank", "item_id", "score", "title"],
                 [(n, r["item_id"], f"{r['score']:.4f}", r["title"] or "") for n, r in enumerate(rows, 1)])


@app.command()
def report(target: Annotated[Optional[str], typer.Option(callback=_name, help="only this target's section")] = None,
           config: ConfigOpt = None) -> None:
    """Print the latest transfer report of `ant run` (its charts are next to it)."""
    try:
        from warehouse.store import WarehouseError
        path = _context(config).reports / "latest" / "report.md"
        if not path.exists():
            raise WarehouseError(f"no report at {path}: run `ant run` first")
        text = path.read_text()
        if target:
            sections = [s for s in text.split("## ") if s.startswith(f"{target}\n")]
            if not sections:
                raise WarehouseError(f"no target {target!r} in {path}")
            text = "## " + sections[0]
    except UserError as exc:
        _fail(exc)
    typer.echo(text)
    if not target:
        typer.echo(f"Report folder: {path.parent}")


@app.command()
def sql(query: Annotated[str, typer.Argument(help="one read-only query (SELECT, WITH, DESCRIBE, SHOW, ...)")],
        as_csv: Annotated[bool, typer.Option("--csv", help="print CSV instead of a table")] = False,
        limit: Annotated[Optional[int], typer.Option(
            min=1, help="rows to print (default: sql.max_rows; with --csv into a pipe: all)")] = None,
        config: ConfigOpt = None) -> None:
    """Run one read-only query on the warehouse (tables and views: see README)."""
    try:
        from warehouse.query import read_only_query
        from warehouse.store import Warehouse
        cfg = _load_config(config)
        if limit is None and not (as_csv and not sys.stdout.isatty()):
            limit = cfg.sql.max_rows
        with read_only_query(Warehouse(cfg.home), query, cfg.sql.memory_limit,
                             None if limit is None else limit + 1) as (columns, rows):
            if as_csv:
                writer = csv.writer(sys.stdout, lineterminator="\n")
                writer.writerow(columns)
                shown = 0
                for row in rows:  # streamed: memory does not grow with the result
                    if limit is not None and shown == limit:
                        break
                    writer.writerow(row)
                    shown += 1
                more = limit is not None and next(rows, None) is not None
            else:
                table = list(rows)
                more = limit is not None and len(table) > limit
                _print_table(columns, table[:limit])
    except UserError as exc:
        _fail(exc)
    if more:
        typer.echo(f"(the first {limit} rows; --limit N for more)", err=True)


@app.command()
def doctor(config: ConfigOpt = None) -> None:
    """Check every published file against the warehouse's manifest: it exists, its Parquet
    footer reads, it holds the rows recorded, its bytes have the sha256 recorded at publish;
    says how to repair each damaged domain."""
    try:
        from warehouse.store import Warehouse
        wh = Warehouse(_load_config(config).home)
        problems = wh.check_files(checksums=True)
        with wh.reader() as con:
            files, unhashed = con.execute("SELECT count(*), count(*) FILTER (WHERE sha256 IS NULL) "
                                          "FROM parquet_files").fetchone()
            releases = dict(con.execute("SELECT domain, release FROM domains").fetchall())
    except UserError as exc:
        _fail(exc)
    if unhashed:
        typer.echo(f"{unhashed} of {files} files were published before checksums were recorded: footers and "
                   f"rows checked, bytes not; re-ingesting, re-importing or re-encoding their domain records one",
                   err=True)
    if not problems:
        typer.echo(f"{wh.home}: {files} published files, all present and whole"
                   f"{' (checksums match)' if unhashed < files else ''}")
        return
    for table, domain, path, problem in problems:
        typer.echo(f"{domain} {table}: {path}: {problem}")
    for domain in sorted({d for _, d, _, _ in problems}):
        tables = {t for t, d, _, _ in problems if d == domain}
        fix = ("`ant features --domain {d}`" if tables <= {"text_features", "image_features", "price_features"}
               else "`ant import-atomic DIR --domain {d}`" if releases.get(domain) == "atomic"
               else "`ant ingest --domain {d}`").format(d=domain)
        typer.echo(f"repair {domain}: {fix} rebuilds its files", err=True)
    raise typer.Exit(1)


def _print_table(columns: list[str], rows: list[tuple]) -> None:
    cells = [columns] + [["NULL" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for n, row in enumerate(cells):
        typer.echo("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
        if n == 0:
            typer.echo("  ".join("-" * w for w in widths))
    typer.echo(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")


def main() -> None:
    """The `ant` entry point: the app, with a full disk at any step as one error line (every
    write publishes new files in one transaction, so what was published before is intact)."""
    try:
        app()
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        if _verbose:
            traceback.print_exception(exc)
        typer.echo(f"error: no space left on the device{f' writing {exc.filename}' if exc.filename else ''}: "
                   f"nothing half-written was published and what was published before is intact; free "
                   f"some space and run the command again", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()

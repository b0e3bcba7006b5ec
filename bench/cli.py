"""How long the everyday commands take, start to exit, as a user types them.

    python bench/cli.py [--runs 5]

Builds a small warehouse from the Gift_Cards fixture (ingested, no models) with a report in
place, then times `ant --help`, `ant sql`, `ant models list` and `ant report` (target: under
0.5 s each, torch never imported) and, for reference, `ant sql` on a 100k-row table: best and
median of --runs runs, with the peak RSS of each. Then the import profile of the `ant sql`
path (`python -X importtime`): its top entries by cumulative time. Last, a flow command's
start-up: seconds from launch to the start of its first task (the task's first log line; the
task's own work, fitting the price encoder, is not start-up) for `ant features` (prices only)
on a new home, (a) on a new machine (a new PREFECT_HOME: the API's database is created),
(b) with the API stopped, (c) with the API still up from the command before (another new home);
targets (b) 10 s, (c) 3 s.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
ANT = [str(Path(sys.executable).parent / "ant")]
TASK_START = "Gift_Cards: encoding"  # the features task's first log line (services/features.py)


def prepare(home: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.test_ingest import FIXTURES, ingest_files  # the tests' own ingest helper
    from warehouse.store import Warehouse
    wh = Warehouse(home)
    src = FIXTURES / "amazon-2018"
    ingest_files(wh, "2018", "Gift_Cards", src / "Gift_Cards_5.json.gz", src / "meta_Gift_Cards.json.gz")
    latest = home / "artifacts" / "reports" / "latest"
    latest.mkdir(parents=True)
    (latest / "report.md").write_text("## Gift_Cards\n\n| method | R@10 |\n|---|---|\n| relearn | 0.4 |\n")


# Runs one command and reports its seconds and its own peak RSS (the wrapper's start-up is not timed).
MEASURE = """
import json, resource, subprocess, sys, time
started = time.monotonic()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
seconds = time.monotonic() - started
if done.returncode:
    sys.exit(done.stderr[-500:])
print(json.dumps([seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024]))
"""


def timed(args: list[str], env: dict, runs: int) -> tuple[float, float, float]:
    """(best seconds, median seconds, peak RSS MB) of `runs` runs."""
    measured = [json.loads(subprocess.run([sys.executable, "-c", MEASURE, *args], env=env, check=True,
                                          capture_output=True, text=True).stdout) for _ in range(runs)]
    seconds = [s for s, _ in measured]
    return min(seconds), statistics.median(seconds), max(rss for _, rss in measured)


def import_profile(args: list[str], env: dict, top: int = 8) -> list[tuple[float, str]]:
    """The `top` imports of a command by cumulative milliseconds (`-X importtime`, best of 3:
    the first run may also pay for compiling and caching bytecode)."""
    runs = []
    for _ in range(3):
        stderr = subprocess.run([sys.executable, "-X", "importtime", *args], env=env, capture_output=True,
                                text=True, cwd=ROOT).stderr
        rows = [line.split("|") for line in stderr.splitlines() if line.startswith("import time:")
                and "cumulative" not in line]
        runs.append({name.rstrip(): int(cumulative) / 1000 for _, cumulative, name in rows})
    best = {name: min(run.get(name, float("inf")) for run in runs) for name in runs[0]}
    return sorted(((ms, name) for name, ms in best.items()), reverse=True)[:top]


def first_task_s(home: Path, template: Path, env: dict, idle_s: float) -> float:
    """Seconds from launching `ant features` on a copy of `template` at `home` to its task's
    first log line (TASK_START, the task body's first statement)."""
    shutil.copytree(template, home)
    config = home / "config.yaml"
    config.write_text(yaml.safe_dump({"home": str(home), "features": {"modalities": ["price"]},
                                      "orchestration": {"server_idle_s": idle_s}}))
    started = time.monotonic()
    command = subprocess.Popen([*ANT, "features", "--config", str(config), "--domain", "Gift_Cards"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = None
    for line in command.stderr:
        if seconds is None and TASK_START in line:
            seconds = time.monotonic() - started
    if command.wait():
        sys.exit(f"ant features failed on {home}")
    if seconds is None:
        sys.exit(f"ant features on {home} logged no {TASK_START!r} line: the start of its task cannot be timed")
    return seconds


def flow_start_up(template: Path) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="ant-flow-"))
    env = {**os.environ, "PREFECT_HOME": str(scratch / "prefect-home")}
    env.pop("PREFECT_API_URL", None)
    env.pop("ANT_HOME", None)
    cases = [("a new machine (a new PREFECT_HOME)", 0), ("the API stopped", 120),
             ("the API up from the command before (target 3 s)", 0)]
    print("\nflow command start-up, launch to first task (`ant features`, prices, a new home each; target (b) 10 s):")
    for n, (case, idle_s) in enumerate(cases):
        print(f"  ({'abc'[n]}) {case}: {first_task_s(scratch / f'home{n}', template, env, idle_s):.1f} s", flush=True)
    known = scratch / "prefect-home" / "ant-server" / "server.json"
    if known.exists():  # (c) ran with idle 0, so it is gone; this only guards a failed run
        os.kill(json.loads(known.read_text())["pid"], signal.SIGTERM)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="ant-cli-"))
    prepare(home)
    env = {**os.environ, "ANT_HOME": str(home)}
    commands = {
        "ant --help": [*ANT, "--help"],
        "ant sql": [*ANT, "sql", "SELECT domain, users, items FROM domain_stats"],
        "ant models list": [*ANT, "models", "list"],
        "ant report": [*ANT, "report"],
        "ant sql (100k rows, --csv)": [*ANT, "sql", "SELECT * FROM range(100000)", "--csv"],
    }
    print("| command | best | median | peak RSS |\n|---|---:|---:|---:|")
    for name, command in commands.items():
        best, median, rss = timed(command, env, args.runs)
        print(f"| `{name}` | {best:.2f} s | {median:.2f} s | {rss:,.0f} MB |", flush=True)
    probe = subprocess.run([sys.executable, "-c", "import sys, flows.cli; print('torch' in sys.modules)"],
                           capture_output=True, text=True, cwd=ROOT)
    print(f"torch imported by `import flows.cli`: {probe.stdout.strip()}")
    print("\nimports of `ant sql` (cumulative ms, best of 3):")
    for ms, name in import_profile([ANT[0], "sql", "SELECT 1"], env):
        print(f"  {ms:7.1f}  {name}")
    flow_start_up(home)


if __name__ == "__main__":
    main()

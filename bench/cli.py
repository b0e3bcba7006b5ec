"""How long the everyday commands take, start to exit, as a user types them.

    python bench/cli.py [--runs 5]

Builds a small warehouse from the Gift_Cards fixture (ingested, no models) with a report in
place, then times `ant --help`, `ant sql`, `ant models list` and `ant report` (target: under
0.5 s each, torch never imported) and, for reference, `ant sql` on a 100k-row table: best and
median of --runs runs, with the peak RSS of each.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ANT = [str(Path(sys.executable).parent / "ant")]


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


if __name__ == "__main__":
    main()

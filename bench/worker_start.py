"""Cold worker start: seconds from `workbench worker` to its "ready" line (fork server up, imports paid),
interleaved across checkouts so that they are compared side by side.

    python bench/worker_start.py [CHECKOUT ...] [--repeats 3]     (default: this checkout)

    e.g.  git worktree add /tmp/old c3b00a1 && ln -s $PWD/.venv /tmp/old/.venv
          python bench/worker_start.py /tmp/old .
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def start_seconds(root: Path) -> float:
    home = tempfile.mkdtemp(prefix="wb-start-")
    env = dict(os.environ, WORKBENCH_HOME=home, WORKBENCH_LOCK_DIR=f"{home}/locks")
    env.pop("WORKBENCH_DB_URL", None)
    t0 = time.monotonic()
    p = subprocess.Popen(
        [sys.executable, "-m", "workbench", "worker", "--devices", "cpu", "--idle-exit", "0"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    for line in p.stdout:
        if line.rstrip().endswith("ready"):
            break
    seconds = time.monotonic() - t0
    p.wait()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkouts", nargs="*", default=[str(Path(__file__).resolve().parents[1])])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[float]] = {c: [] for c in args.checkouts}
    for _ in range(args.repeats):
        for c in args.checkouts:
            times[c].append(start_seconds(Path(c).resolve()))
    for c, ts in times.items():
        print(f"{c}: {' / '.join(f'{t:.1f}' for t in ts)} s, median {statistics.median(ts):.1f} s")


if __name__ == "__main__":
    main()

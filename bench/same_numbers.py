"""Does a refactor leave every number the same? Runs one spec in-process (no worker) under two checkouts
of workbench, each on a fresh store of its own, and compares the runs' summaries and result tables
exactly, timings left out.

    python bench/same_numbers.py SPEC OLD_CHECKOUT NEW_CHECKOUT     # e.g. a `git worktree` of main

Exit 0 and `same` when every value matches (the same seeds, so the same draws); else the first keys
that differ. Each side trains what the spec trains: a smoke spec takes a minute or two on 2 vCPUs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ONE_RUN = """
import json, math, os, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from workbench.jobs.context import RunContext
from workbench.jobs.jobfile import load_job_file, spec_from_dict
from workbench.jobs.kinds import load_kind
from workbench.store import queue
from workbench.store.db import Store
from workbench.store.queries import show

store = Store()
job = load_job_file(Path(sys.argv[1]))
_, ids = queue.submit(store, name=job.name, kind=job.kind, spec_text=job.text, sweep=job.sweep,
                      runs=[queue.NewRun(n, s.model_dump(mode="json")) for n, s in job.runs])
queue.claim(store, "same-numbers", "cpu")
ctx = RunContext(store, ids[0])
spec = spec_from_dict(ctx.spec)
load_kind(spec.kind).run(ctx, spec)
ctx.close()
rec = show(store, ids[0])
TIMINGS = ("seconds", "per_second", "time")

def clean(v):
    if isinstance(v, dict):
        return {k: clean(x) for k, x in v.items() if not any(t in k for t in TIMINGS)}
    if isinstance(v, list):
        return [clean(x) for x in v]
    return "nan" if isinstance(v, float) and math.isnan(v) else v

rec = rec if isinstance(rec, dict) else {"summary": rec.summary, "tables": rec.tables}  # older: a dict
print(json.dumps({"summary": clean(rec["summary"]), "tables": clean(rec["tables"])}, sort_keys=True, default=str))
"""


def numbers(spec: Path, checkout: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="same-numbers-") as home:
        env = dict(os.environ, WORKBENCH_HOME=home, PYTHONPATH=str(checkout))
        env.pop("WORKBENCH_DB_URL", None)
        out = subprocess.run(
            [sys.executable, "-c", ONE_RUN, str(spec)], env=env, cwd=home, capture_output=True, text=True
        )
        if out.returncode:
            sys.exit(f"{checkout}: the run failed\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.splitlines()[-1])


def differences(a, b, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in differences(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{path}[{i}]")
        ]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def main() -> None:
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    spec, old, new = (Path(a).resolve() for a in sys.argv[1:])
    found = differences(numbers(spec, old), numbers(spec, new))
    print("same" if not found else "\n".join(found[:20]))
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()

"""Queue stress: P processes submit S specs each while W workers drain the queue.

Checks that every run executed exactly once (one start event, attempt 1, succeeded) and that
the database is intact, and prints the throughput. The issue's full size is the default:

    python bench/queue_stress.py                 # 8 x 250 = 2000 runs, 4 workers
    python bench/queue_stress.py --submitters 4 --specs 25 --workers 2
    python bench/queue_stress.py --db-url postgresql+psycopg://me@dbhost/wb_stress   # an empty database
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def submitter(home: str, specs: int, db_url: str | None) -> None:
    from workbench.jobs.jobfile import load_job
    from workbench.store import queue
    from workbench.store.db import Store

    store = Store(db_url, home=Path(home))
    for i in range(specs):  # the same functions `workbench submit` uses
        job = load_job(f"kind: sleep\nseed: {i}\n", f"stress-{os.getpid()}-{i}.yaml")
        queue.submit(
            store,
            name=job.name,
            kind=job.kind,
            spec_text=job.text,
            sweep=job.sweep,
            runs=[queue.NewRun(n, s.model_dump(mode="json")) for n, s in job.runs],
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--submitters", type=int, default=8)
    parser.add_argument("--specs", type=int, default=250)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--db-url", help="an empty database to use instead of a new SQLite file")
    args = parser.parse_args(argv)

    from sqlalchemy import func, select

    from workbench.store.db import Store
    from workbench.store.models import Run, RunEvent

    home = tempfile.mkdtemp(prefix="wb-stress-")
    env = dict(os.environ, WORKBENCH_HOME=home)
    env.pop("WORKBENCH_DB_URL", None)
    if args.db_url:
        env["WORKBENCH_DB_URL"] = args.db_url
    t0 = time.perf_counter()
    workers = [  # each its own device-lock folder, as on separate hosts: only the claim keeps them apart
        subprocess.Popen(
            [sys.executable, "-m", "workbench", "worker", "--devices", "cpu", "--idle-exit", "10"],
            env=dict(env, WORKBENCH_LOCK_DIR=os.path.join(home, f"locks-{i}")),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        for i in range(args.workers)
    ]
    ctx = multiprocessing.get_context("spawn")
    subs = [
        ctx.Process(target=submitter, args=(home, args.specs, args.db_url)) for _ in range(args.submitters)
    ]
    for p in subs:
        p.start()
    for p in subs:
        p.join()
    t_submit = time.perf_counter() - t0
    for w in workers:
        w.wait()
    elapsed = time.perf_counter() - t0 - 10  # the workers idle 10 s before they exit

    store = Store(args.db_url, home=Path(home))
    expected = args.submitters * args.specs
    with store.read() as s:
        runs = s.scalars(select(Run)).all()
        starts = dict(
            s.execute(
                select(RunEvent.run_id, func.count())
                .where(RunEvent.message.like("started on%"))
                .group_by(RunEvent.run_id)
            ).all()
        )
    ok = (
        len(runs) == expected
        and all(r.status == "succeeded" and r.attempt == 1 for r in runs)
        and all(starts.get(r.id) == 1 for r in runs)
    )
    by_worker: dict[str, int] = {}
    for r in runs:
        by_worker[r.worker_id] = by_worker.get(r.worker_id, 0) + 1
    print(
        f"{len(runs)} runs stored (expected {expected}); submitted in {t_submit:.1f} s by {args.submitters} processes"
    )
    print(
        f"drained by {args.workers} workers in about {elapsed:.1f} s ({len(runs) / elapsed:.1f} runs/s); "
        f"per worker: {sorted(by_worker.values())}"
    )
    print(f"each run executed exactly once: {ok}; integrity_check: {store.integrity_check()}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Kill -9 a ddpm run's process or its worker at random moments, retry each time, and check that
nothing was lost: integrity_check ok, every metric point flushed before a kill still there, each
attempt resumed from its checkpoint (no step before it redone), and the run finally succeeds.

    python bench/kill_resume.py [--kills 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPEC = """kind: ddpm
dataset: gaussians
train: {steps: 3000, checkpoint_every: 250}
sample: {eval_sets: 1, samplers: [{name: ddpm, steps: 1000}, {name: ddim, steps: 50}]}
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    from sqlalchemy import select

    from workbench.store.db import Store
    from workbench.store.models import MetricPoint
    from workbench.store.queries import events, get_run, show

    home = Path(tempfile.mkdtemp(prefix="wb-kill-"))
    env = dict(
        os.environ,
        WORKBENCH_HOME=str(home),
        WORKBENCH_HEARTBEAT_TIMEOUT="3",
        WORKBENCH_BUSY_TIMEOUT_MS="1000",
    )
    env.pop("WORKBENCH_DB_URL", None)
    (home / "job.yaml").write_text(SPEC)
    wb = [sys.executable, "-m", "workbench"]
    rid = json.loads(
        subprocess.run(
            [*wb, "submit", str(home / "job.yaml"), "--no-worker", "--json"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
            cwd=ROOT,
        ).stdout
    )["run_ids"][0]
    store = Store(home=home)

    def points() -> set:
        with store.read() as s:
            return set(
                s.execute(
                    select(MetricPoint.key, MetricPoint.step, MetricPoint.attempt).where(
                        MetricPoint.run_id == rid
                    )
                ).all()
            )

    def wait(pred, timeout=120):
        end = time.monotonic() + timeout
        while time.monotonic() < end and not pred():
            time.sleep(0.1)
        return pred()

    ok = True
    kills = 0
    worker = subprocess.Popen(
        [*wb, "worker", "--devices", "cpu"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL
    )
    while True:
        wait(lambda: get_run(store, rid).status == "running" and get_run(store, rid).pid)
        if kills == args.kills:
            wait(lambda: get_run(store, rid).status not in ("queued", "running"), 600)
            break
        time.sleep(rng.uniform(1.0, 15.0))
        run = get_run(store, rid)
        if run.status != "running":
            break
        victim = rng.choice(["child", "worker"])
        before = points()
        os.kill(run.pid if victim == "child" else worker.pid, signal.SIGKILL)
        kills += 1
        if victim == "worker":  # only workers reap: a new one marks the orphaned run once its lease lapses
            worker.wait()
            worker = subprocess.Popen(
                [*wb, "worker", "--devices", "cpu"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL
            )
        reaped = wait(lambda: get_run(store, rid).status == "interrupted", 30)
        integrity = store.integrity_check()
        kept = before <= points()
        ok &= bool(reaped) and integrity == "ok" and kept
        print(
            f"kill {kills}: {victim:6s} at progress {run.progress[0]}/{run.progress[1]}: "
            f"interrupted={bool(reaped)} integrity={integrity} metrics kept={kept}"
        )
        subprocess.run(
            [*wb, "retry", str(rid), "--no-worker"], env=env, cwd=ROOT, check=True, capture_output=True
        )
    worker.terminate()
    rec = show(store, rid).as_json()
    resumes = [e.message for e in events(store, rid) if e.message.startswith("resumed from")]
    with store.read() as s:
        for attempt, message in zip(range(2, rec["attempt"] + 1), resumes, strict=False):
            step = int(message.rsplit(" ", 1)[1])
            first = min(
                s.scalars(
                    select(MetricPoint.step).where(MetricPoint.run_id == rid, MetricPoint.attempt == attempt)
                ),
                default=None,
            )
            redone = first is not None and first <= step
            ok &= not redone
            print(f"attempt {attempt}: {message}; first step logged {first} (nothing redone: {not redone})")
    ok &= rec["status"] == "succeeded"
    print(
        f"final: {rec['status']} after {rec['attempt']} attempts; "
        f"guided_accuracy {rec['summary'].get('guided_accuracy')}; all checks passed: {ok}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

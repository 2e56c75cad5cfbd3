"""Overhead of the machinery around a run, measured side by side in one process tree.

1. Submit-to-start latency with an idle, warmed-up worker: submit -> claimed (status running),
   and submit -> the run's own code executing (its first logged point).
2. The cost of RunContext.log() per training step, against one smoke-size ddpm training step
   (the quickstart's MLP, batch 512), both on this machine.

    python bench/overhead.py [--runs 20]
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def submit_latency(n: int) -> None:
    from workbench.jobs.jobfile import load_job
    from workbench.store import queue
    from workbench.store.db import Store
    from workbench.store.queries import get_run, metric_series

    home = Path(tempfile.mkdtemp(prefix="wb-bench-"))
    env = dict(os.environ, WORKBENCH_HOME=str(home))
    env.pop("WORKBENCH_DB_URL", None)
    worker = subprocess.Popen(
        [sys.executable, "-m", "workbench", "worker", "--devices", "cpu"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    for line in worker.stdout:  # wait until the worker is warm
        if "ready" in line:
            break
    store = Store(home=home)
    job = load_job("kind: sleep\nsteps: 1\n", "bench.yaml")
    claim, first_log = [], []
    try:
        for _ in range(n):
            (rid,) = queue.submit(
                store,
                name="bench",
                kind="sleep",
                spec_text=job.text,
                sweep={},
                runs=[queue.NewRun("bench", job.runs[0][1].model_dump(mode="json"))],
            )[1]
            while (run := get_run(store, rid)).status in ("queued", "running"):
                time.sleep(0.01)
            claim.append(run.started_at - run.created_at)
            with store.read() as s:
                from sqlalchemy import select

                from workbench.store.models import MetricPoint

                wall = s.scalar(select(MetricPoint.wall_time).where(MetricPoint.run_id == rid))
            first_log.append(wall - run.created_at)
            assert metric_series(store, rid, "loss")
    finally:
        worker.terminate()
        worker.wait()
    print(
        f"submit -> claimed (running):      median {statistics.median(claim) * 1000:7.1f} ms, "
        f"max {max(claim) * 1000:7.1f} ms   (goal <= 1000 ms)"
    )
    print(
        f"submit -> run code executing:     median {statistics.median(first_log) * 1000:7.1f} ms, "
        f"max {max(first_log) * 1000:7.1f} ms"
    )


def log_overhead() -> None:
    import torch

    from workbench.jobs.context import RunContext
    from workbench.jobs.diffusion.denoisers import MLPDenoiser
    from workbench.jobs.diffusion.schedules import make_schedule
    from workbench.jobs.diffusion.train import diffusion_loss
    from workbench.store import queue
    from workbench.store.db import Store

    torch.set_num_threads(2)
    model = MLPDenoiser(2, 64, 3, num_classes=8)
    sched = make_schedule("linear")
    opt = torch.optim.AdamW(model.parameters(), 2e-3)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(512, 2), torch.randint(0, 8, (512,))

    def step() -> float:
        loss = diffusion_loss(model, sched, x, y, 0.1, 8, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(20):
        step()
    n = 300
    t = time.perf_counter()
    for _ in range(n):
        step()
    step_s = (time.perf_counter() - t) / n

    store = Store(home=Path(tempfile.mkdtemp(prefix="wb-bench-")))
    (rid,) = queue.submit(
        store, name="b", kind="sleep", spec_text="", sweep={}, runs=[queue.NewRun("b", {"kind": "sleep"})]
    )[1]
    queue.claim(store, "w", "cpu")
    ctx = RunContext(store, rid)
    calls = 200_000
    t = time.perf_counter()
    for i in range(calls):  # two scalars per call, flushes included (about once a second)
        ctx.log(i, loss=0.5, lr=1e-3)
    ctx.flush()
    log_s = (time.perf_counter() - t) / calls
    print(f"smoke ddpm training step:         {step_s * 1e3:7.3f} ms")
    print(f"ctx.log(step, loss=, lr=):        {log_s * 1e6:7.2f} us per call, flushes included")
    print(
        f"log() / training step:            {log_s / step_s * 100:7.3f} %   (goal <= 1 %; "
        "the training loop calls it once per 10 steps by default)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    submit_latency(args.runs)
    log_overhead()

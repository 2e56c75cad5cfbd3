"""TUI responsiveness on a big store: 10 000 runs, 1 000 000 metric points (100 000 in one run).

Reports the time to open the app and show the runs table, and to refresh the loss curve of the
100 000-point run (incremental read of new points + downsampling + plot). Goal: <= 150 ms a refresh.

    python bench/tui_bench.py [--runs 10000] [--points 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def fill(store, n_runs: int, n_points: int, big: int) -> int:
    from store import queue

    t = time.perf_counter()
    per_exp = 100
    ids: list[int] = []
    for e in range(0, n_runs, per_exp):
        ids += queue.submit(
            store,
            name=f"exp{e // per_exp}",
            kind="sleep",
            spec_text="",
            sweep={},
            runs=[
                queue.NewRun(f"exp{e // per_exp} seed={i}", {"kind": "sleep", "seed": i})
                for i in range(min(per_exp, n_runs - e))
            ],
        )[1]
    big_run = ids[-1]
    rest = n_points - big
    rows = [(big_run, "loss", s, 1.0 / (s + 1), 0.0, 1) for s in range(big)]
    per_run = max(1, rest // (len(ids) - 1))
    for rid in ids[:-1]:
        rows += [(rid, "loss", s, 1.0 / (s + 1), 0.0, 1) for s in range(per_run)]
    with store.write() as s:
        s.connection().exec_driver_sql(
            "INSERT INTO metric_points (run_id, key, step, value, wall_time, attempt) VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
    print(f"filled {len(ids)} runs and {len(rows)} metric points in {time.perf_counter() - t:.1f} s")
    return big_run


async def measure(store, big_run: int) -> None:
    from jobs.context import RunContext
    from store import queue
    from workbench.tui.app import WorkbenchApp
    from workbench.tui.screens.runs import PAGE

    t0 = time.perf_counter()
    app = WorkbenchApp(store, image_mode="halfcell", poll_interval=3600, auto_worker=False)
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.screen.query_one("#runs-table")
        while not app.screen.rows or table.row_count < min(len(app.screen.rows), PAGE):
            await pilot.pause(0.01)
        await pilot.pause(0)
        print(
            f"open the app, load {len(app.screen.rows)} runs, show the first {table.row_count}: "
            f"{(time.perf_counter() - t0) * 1000:8.0f} ms"
        )

        t = time.perf_counter()
        await pilot.press("slash", *"seed=7", "enter")  # filter over all 10 000 runs
        await pilot.pause(0)
        print(
            f"filter them by text ({table.row_count} match):     {(time.perf_counter() - t) * 1000:8.0f} ms"
        )
        await pilot.press("escape")

        t = time.perf_counter()
        worker = app.screen.poll()
        await worker.wait()
        await pilot.pause(0)
        print(f"poll the runs table with nothing new:        {(time.perf_counter() - t) * 1000:8.1f} ms")

        t = time.perf_counter()
        app.open_run(big_run)
        await pilot.pause(0)
        screen = app.screen
        while "loss" not in screen.metrics.series:
            await pilot.pause(0.01)
        screen.query_one("#tabs").active = "tab-curves"
        await pilot.pause(0)
        await pilot.pause(0)
        print(f"open the 100 000-point run and plot it:      {(time.perf_counter() - t) * 1000:8.0f} ms")
        await pilot.pause(0.5)  # let the first frame of the curves tab finish before timing refreshes

        queue.claim(store, "bench", "cpu")
        ctx = RunContext(store, big_run)
        times = []
        step = max(screen.metrics.series["loss"]) + 1
        for _ in range(10):
            for _ in range(100):
                ctx.log(step, loss=0.001)
                step += 1
            ctx.flush()
            t = time.perf_counter()
            changed = screen.metrics.poll()  # what the poll worker does off the UI thread ...
            assert changed
            screen.draw_curve()  # ... and what the UI thread does with it
            await pilot.pause(0)
            times.append(time.perf_counter() - t)
        print("refresh times ms:", [round(t * 1000) for t in times])
        print(
            f"refresh the curve (+100 points, of 100 000): median {statistics.median(times) * 1000:6.1f} ms, "
            f"max {max(times) * 1000:6.1f} ms (goal <= 150 ms)"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=1_000_000)
    args = parser.parse_args()
    from store.db import Store

    store = Store(home=Path(tempfile.mkdtemp(prefix="wb-tui-bench-")))
    big_run = fill(store, args.runs, args.points, big=100_000)
    asyncio.run(measure(store, big_run))


if __name__ == "__main__":
    main()

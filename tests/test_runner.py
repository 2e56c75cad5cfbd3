"""The worker through real processes: run, cancel, kill -9 (child or worker), retry, concurrency."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from sqlalchemy import select

from tests.conftest import subprocess_env, wb_command, write_spec
from workbench.store import queue
from workbench.store.artifacts import run_dir
from workbench.store.db import Store
from workbench.store.models import MetricPoint, RunEvent
from workbench.store.queries import get_run, show

HEARTBEAT_TIMEOUT = "4"  # short, so the kill test does not wait long; the default is 15 s


@pytest.fixture
def env(home):
    return subprocess_env(home)


def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def start_worker(env, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        wb_command("worker", "--devices", "cpu", *args),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def submit(env, spec_path, *args: str) -> list[int]:
    import json

    out = subprocess.run(
        wb_command("submit", spec_path, "--no-worker", "--json", *args),
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)["run_ids"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def diagnose(store: Store, run_id: int, worker: subprocess.Popen | None = None) -> str:
    """What a failed wait needs to be understood: the run's state, its events and both logs."""
    rec = show(store, run_id).as_json()
    lines = [f"run {run_id}: status {rec['status']}, progress {rec['progress']}"]
    with store.read() as s:
        lines += [
            f"  {e.time:.3f} {e.level} {e.message}"
            for e in s.scalars(select(RunEvent).where(RunEvent.run_id == run_id).order_by(RunEvent.id))
        ]
    log = run_dir(store.home, run_id) / "output.log"
    if log.exists():
        lines += ["output.log:", log.read_text()[-3000:]]
    if worker is not None and worker.poll() is not None:
        lines += [f"worker exited {worker.returncode}:", worker.stdout.read()[-3000:]]
    return "\n".join(lines)


def points(store: Store, run_id: int) -> set[tuple[str, int]]:
    with store.read() as s:
        return set(
            s.execute(select(MetricPoint.key, MetricPoint.step).where(MetricPoint.run_id == run_id)).all()
        )


def test_worker_once_drains_the_queue(env, home, tmp_path):
    ids = submit(env, write_spec(tmp_path, "kind: sleep\nseconds: 0.2\nsweep:\n  seed: [1, 2, 3]\n"))
    done = subprocess.run(
        wb_command("worker", "--devices", "cpu", "--once"),
        env=env,
        timeout=120,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    store = Store(home=home)
    assert [get_run(store, r).status for r in ids] == ["succeeded"] * 3
    assert all(get_run(store, r).attempt == 1 for r in ids)


def test_failed_run_stores_error_and_traceback(env, home, tmp_path):
    (rid,) = submit(env, write_spec(tmp_path, "kind: sleep\nsteps: 5\nfail_at_step: 3\n"))
    subprocess.run(
        wb_command("worker", "--devices", "cpu", "--once"),
        env=env,
        timeout=120,
        check=True,
        capture_output=True,
    )
    rec = show(Store(home=home), rid).as_json()
    assert rec["status"] == "failed"
    assert "failing at step 3" in rec["error"] and "Traceback" in rec["traceback"]


def test_cancel_stops_a_running_run(env, home, tmp_path):
    (rid,) = submit(env, write_spec(tmp_path, "kind: sleep\nseconds: 120\nsteps: 1200\n"))
    worker = start_worker(env, "--once")
    store = Store(home=home)
    try:
        wait_for(lambda: get_run(store, rid).progress[0] > 5, 60, "the run to make progress")
        t0 = time.monotonic()
        assert subprocess.run(wb_command("cancel", rid), env=env, capture_output=True).returncode == 0
        try:
            wait_for(lambda: get_run(store, rid).status == "cancelled", 30, "the run to be cancelled")
        except AssertionError:
            worker.kill()
            raise AssertionError(diagnose(store, rid, worker)) from None
        # The worker terminates a child that ignores the stop after 3 s and kills it after 5 s; the
        # rest is slack for a loaded 2-core CI machine (a checkpoint's fsync can stall there).
        assert time.monotonic() - t0 < 15, diagnose(store, rid, worker)
        assert any(a["kind"] == "checkpoint" for a in show(store, rid).as_json()["artifacts"])
        assert worker.wait(timeout=30) == 0
    finally:
        worker.kill()


@pytest.mark.parametrize("victim", ["child", "worker"])
def test_kill_9_then_retry_resumes_without_losing_metrics(victim, env, home, tmp_path):
    env = dict(env, WORKBENCH_HEARTBEAT_TIMEOUT=HEARTBEAT_TIMEOUT, WORKBENCH_BUSY_TIMEOUT_MS="1000")
    (rid,) = submit(env, write_spec(tmp_path, "kind: sleep\nseconds: 8\nsteps: 80\ncheckpoint_every: 5\n"))
    worker = start_worker(env)
    store = Store(home=home)
    try:
        wait_for(lambda: get_run(store, rid).progress[0] >= 25, 60, "progress")
        child = get_run(store, rid).pid
        before = points(store, rid)
        assert before, "metrics are flushed about once a second"
        os.kill(child if victim == "child" else worker.pid, signal.SIGKILL)
        if victim == "worker":
            worker.wait()
            wait_for(lambda: not alive(child), 10, "the orphaned run process to exit")

            # Nobody renews the lease any more: readers show the run as stale and change nothing ...
            def listed():
                out = subprocess.run(
                    wb_command("runs", "--json"), env=env, capture_output=True, text=True
                ).stdout
                return next(r for r in json.loads(out) if r["id"] == rid)

            row = wait_for(lambda: (r := listed())["stale"] and r, 3 * float(HEARTBEAT_TIMEOUT) + 12, "stale")
            assert row["status"] == "running" and row["label"] == "running (stale)"
            assert get_run(store, rid).status == "running", "a reader reaped the run"
            # ... and the next worker reaps it.
            worker = start_worker(env)
            wait_for(
                lambda: get_run(store, rid).status == "interrupted", 30, "the new worker to reap the run"
            )
        else:
            wait_for(lambda: get_run(store, rid).status == "interrupted", 10, "the worker to notice")
        assert store.integrity_check() == "ok"
        assert (
            subprocess.run(wb_command("retry", rid, "--no-worker"), env=env, capture_output=True).returncode
            == 0
        )
        wait_for(lambda: get_run(store, rid).status == "succeeded", 60, "the retried run to succeed")
        rec = show(store, rid).as_json()
        resumed_from = rec["summary"]["resumed_from"]
        assert resumed_from >= 20 and rec["attempt"] == 2
        assert before <= points(store, rid), "a metric flushed before the kill was lost"
        with store.read() as s:
            redone = s.scalars(
                select(MetricPoint.step).where(MetricPoint.run_id == rid, MetricPoint.attempt == 2)
            )
            assert min(redone) == resumed_from + 1, "steps before the checkpoint were redone"
            started = s.scalars(
                select(RunEvent.message).where(RunEvent.run_id == rid, RunEvent.message.like("resumed from%"))
            ).all()
            assert started == [f"resumed from checkpoint at step {resumed_from}"]
    finally:
        worker.kill()


def test_concurrent_submitters_and_workers_run_each_once(db_url, home, tmp_path):
    env = subprocess_env(home, db_url)
    spec = write_spec(tmp_path, "kind: sleep\nsweep:\n  seed: [1, 2, 3, 4, 5]\n")
    # Three hosts' workers (each its own device locks): the claim alone must keep them from sharing a run.
    workers = [
        start_worker(dict(env, WORKBENCH_LOCK_DIR=str(tmp_path / f"host{i}")), "--idle-exit", "5")
        for i in range(3)
    ]
    script = (
        "import subprocess, sys\n"
        f"for _ in range(4): subprocess.run({wb_command('submit', spec, '--no-worker')!r}, check=True,"
        " stdout=subprocess.DEVNULL)\n"
    )
    submitters = [subprocess.Popen([wb_command()[0], "-c", script], env=env) for _ in range(3)]
    try:
        assert all(p.wait(timeout=120) == 0 for p in submitters)
        for w in workers:
            assert w.wait(timeout=120) == 0
        store = Store(home=home)
        with store.read() as s:
            from workbench.store.models import Run

            runs = s.scalars(select(Run)).all()
            starts = s.scalars(select(RunEvent.run_id).where(RunEvent.message.like("started on%"))).all()
        assert len(runs) == 3 * 4 * 5
        assert all(r.status == "succeeded" and r.attempt == 1 for r in runs)
        assert sorted(starts) == sorted(r.id for r in runs)  # each started exactly once
        assert len({r.worker_id for r in runs}) >= 2  # the work was actually shared
    finally:
        for p in workers + submitters:
            p.kill()


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_the_full_queue_stress_runs_each_run_exactly_once(db_url, home):
    """bench/queue_stress.py at the issue's size: 8 submitters x 250 specs, 4 workers (as on 4 hosts):
    every run executed exactly once, on SQLite and on PostgreSQL."""
    import bench.queue_stress

    assert bench.queue_stress.main(["--db-url", db_url] if db_url else []) == 0


def test_a_run_waiting_for_a_device_another_worker_holds_says_so(env, home, tmp_path, monkeypatch):
    """The CPU slot's host-wide lock is held by another process (this test, as a second worker would):
    the worker starts nothing, and `runs`, `show` and the queue's worker row say the run waits for
    `device cpu-0 held by worker PID <ours>`. Freed, the run starts and the reason goes. Before, the run
    sat `queued` with nothing said."""
    from workbench.jobs.devices import DeviceLock

    monkeypatch.setenv("WORKBENCH_LOCK_DIR", env["WORKBENCH_LOCK_DIR"])
    lock = DeviceLock("cpu-0")
    assert lock.acquire() and lock.holder() == os.getpid()
    spec = write_spec(tmp_path, "kind: sleep\nseconds: 0.1\nsteps: 2\n")
    (run_id,) = submit(env, spec)
    worker = start_worker(env)
    try:
        why = f"device cpu-0 held by worker PID {os.getpid()} on this host"

        def runs_text() -> str:
            return subprocess.run(
                wb_command("runs"), env=dict(env, COLUMNS="200"), capture_output=True, text=True
            ).stdout

        wait_for(lambda: f"queued ({why})" in runs_text(), 30, "the reason in `runs`")
        shown = subprocess.run(wb_command("show", run_id), env=env, capture_output=True, text=True).stdout
        assert f"queued ({why})" in shown
        store = Store()
        assert [w.waiting for w in queue.live_workers(store)] == [why]
        lock.release()
        wait_for(lambda: get_run(store, run_id).status == "succeeded", 60, "the run to run")
        wait_for(lambda: [w.waiting for w in queue.live_workers(store)] == [None], 10, "the reason to go")
        store.dispose()
    finally:
        lock.release()
        worker.terminate()
        worker.wait(30)


def test_a_running_run_reports_what_it_uses(home, tmp_path):
    """The run's process samples its CPU and memory (every 0.3 s here, 10 s by default) into its own
    `system/` curves: `show` of the running run says `uses: CPU ... % of a core, ... GB`, and the points
    stay with the run. Sampling is not progress: the kind's own steps are what the watchdog sees."""
    env = subprocess_env(home, WORKBENCH_RESOURCE_SECONDS="0.3")
    (run_id,) = submit(env, write_spec(tmp_path, "kind: sleep\nseconds: 4\nsteps: 8\n"))
    worker = start_worker(env, "--once")
    try:
        store = Store()

        def shown() -> str:
            return subprocess.run(wb_command("show", run_id), env=env, capture_output=True, text=True).stdout

        line = wait_for(
            lambda: next((x for x in shown().splitlines() if x.startswith("uses: CPU")), None), 30
        )
        assert "% of a core" in line and "GB" in line
        wait_for(lambda: get_run(store, run_id).status == "succeeded", 60, "the run to end")
        with store.read() as s:
            keys = set(s.scalars(select(MetricPoint.key).where(MetricPoint.run_id == run_id)))
        assert {"system/cpu_percent", "system/memory_gb"} <= keys
        store.dispose()
    finally:
        worker.terminate()
        worker.wait(30)

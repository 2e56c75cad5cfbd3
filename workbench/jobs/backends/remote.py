"""The body of a run on a cluster (a Ray task, a Slurm job): no pipe reaches it, so it reads what the
local child hears through its pipe from the store instead, once a second:

- its attempt no longer owns the run (reaped, retried elsewhere) -> exit at once, writing nothing;
- cancel requested -> stop at the next step, ending `cancelled`;
- stop requested (its worker is shutting down) -> checkpoint and end `interrupted`;
- its lease not renewed for the lease lapse (queue.lease_lapse: the worker is gone) -> flush and exit, as a local
  child does when its worker dies; a worker will mark the run interrupted, resumable;
- no step, metric or event from the kind for `no_progress_minutes` (hung: a deadlock, a dead collective)
  -> record the run failed with that reason and exit, as the worker does to a hung local run. No worker
  can see a remote process's liveness, so the process watches itself.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

from workbench.jobs.backends import DEFAULT_NO_PROGRESS_MINUTES, Outcome
from workbench.jobs.backends.attempt import limit_threads, redirect_output, run_attempt
from workbench.store.models import RunStatus

LOST_EXIT_CODE = 75
HUNG_EXIT_CODE = 76


def execute_run(
    db_url: str, home: str, run_id: int, attempt: int, gpu: bool, threads: int, backend: str
) -> Outcome:
    """Run one claimed attempt in this process; returns its outcome (see attempt.run_attempt)."""
    if not gpu:  # the cluster gave this task no GPU: the run must not find one
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    if not Path(home).is_dir():
        return Outcome(
            RunStatus.FAILED,
            f"the artifact folder {home} does not exist on {socket.gethostname()}: mount the shared "
            "$WORKBENCH_HOME at the same path on every host",
        )
    redirect_output(Path(home), run_id)
    limit_threads(threads)

    from workbench.jobs.context import RunContext
    from workbench.store import queue
    from workbench.store.db import Store

    store = Store(db_url, Path(home))
    active = [time.monotonic()]  # the kind's last step, metric or event
    ctx = RunContext(
        store, run_id, attempt=attempt, on_activity=lambda _step: active.__setitem__(0, time.monotonic())
    )
    no_progress_s = 60 * float(ctx.spec.get("no_progress_minutes") or DEFAULT_NO_PROGRESS_MINUTES)
    stop_reason: list[str] = []
    # scancel and submitit's local cancel signal first: checkpoint and end, as a stopped local run does
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: (stop_reason.append("shutdown"), ctx.request_stop()))
    done = threading.Event()

    def watch_store() -> None:
        while not done.wait(queue.HEARTBEAT_INTERVAL):
            try:
                lease = queue.lease_of(store, run_id, attempt)
            except Exception:  # noqa: BLE001 - a store fault is no reason to stop; the next read may work
                continue
            if not lease.held:
                os._exit(LOST_EXIT_CODE)
            if lease.cancel and not stop_reason:
                stop_reason.append("cancel")
                ctx.request_stop()
            elif lease.stop and not stop_reason:
                stop_reason.append("shutdown")
                ctx.request_stop()
            elif lease.age > queue.lease_lapse():
                try:
                    ctx.flush()
                finally:
                    os._exit(LOST_EXIT_CODE)
            elif time.monotonic() - active[0] > no_progress_s:
                try:
                    ctx.flush(raise_fault=False)
                    queue.finish(
                        store,
                        run_id,
                        None,
                        RunStatus.FAILED,
                        f"no progress for {no_progress_s / 60:g} min (no step or report from the run); its "
                        f"{backend} process ended itself",
                        attempt=attempt,
                    )
                finally:
                    os._exit(HUNG_EXIT_CODE)

    threading.Thread(target=watch_store, daemon=True, name="watch-store").start()
    where = (
        f"{backend} on {socket.gethostname()}, process {os.getpid()}: "
        f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}; {threads} CPU thread(s)"
    )
    queue.set_pid(store, run_id, pid=os.getpid(), attempt=attempt)
    result = run_attempt(ctx, "0" if gpu else "cpu", where)
    done.set()
    if result.status == RunStatus.CANCELLED and stop_reason[:1] == ["shutdown"]:
        return Outcome(RunStatus.INTERRUPTED, "the worker was stopped")
    return result

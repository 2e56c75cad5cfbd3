"""The local backend: each run a child process on this host, forked from a warm fork server.

The fork server has torch and the kinds imported without touching the CUDA runtime (jobs.preload), so
a run starts in milliseconds and can still pin itself to its GPU: the child's first statement sets
CUDA_VISIBLE_DEVICES. Each child holds one end of a pipe to the worker: the worker sends "stop" through
it (cancel, Ctrl-C, shutdown), the child sends "alive" as it makes progress and its result at the end;
when the worker dies the child reads EOF and exits, so no run outlives its worker.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

from workbench.jobs.backends import Backend, Ended, Execution, Outcome
from workbench.jobs.backends.attempt import limit_threads, redirect_output, run_attempt


def _fork_is_poisoned() -> bool:
    """In a forked process: had its parent initialised CUDA before forking (torch's own record)?"""
    import torch

    return bool(getattr(torch._C, "_cuda_isInBadFork", lambda: False)())


def _probe_fork_server(conn) -> None:
    """The worker's first fork: report whether the fork server had initialised CUDA."""
    conn.send(_fork_is_poisoned())
    conn.close()


def _child_main(conn, db_url: str, home: str, run_id: int, attempt: int, slot: str, threads: int) -> None:
    # First, before anything can initialise CUDA: pin the run to its slot's GPU, or to none.
    os.environ["CUDA_VISIBLE_DEVICES"] = "" if slot == "cpu" else slot
    # Ctrl-C in a terminal reaches the whole process group; the worker decides what a run does about it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    poisoned = _fork_is_poisoned()
    redirect_output(Path(home), run_id)
    limit_threads(threads)
    send_lock = threading.Lock()

    def send(message: tuple | Outcome) -> None:
        with send_lock:
            try:
                conn.send(message)
            except OSError:
                pass

    from workbench.jobs.context import RunContext
    from workbench.store.db import Store

    ctx = RunContext(
        Store(db_url, Path(home)),
        run_id,
        attempt=attempt,
        on_activity=lambda step: send(("alive", step, time.time())),
    )
    signal.signal(signal.SIGTERM, lambda *_: ctx.request_stop())  # a plain `kill` saves first, too

    def watch_parent() -> None:
        while True:
            try:
                if conn.recv() == "stop":
                    ctx.request_stop()
            except (EOFError, OSError):  # the worker died: save what we have and go
                try:
                    ctx.flush()
                finally:
                    os._exit(75)

    threading.Thread(target=watch_parent, daemon=True, name="watch-worker").start()
    where = (
        f"process {os.getpid()} in slot {slot}: CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r} "
        f"set before CUDA could start; fork server {'HAD STARTED CUDA' if poisoned else 'never touched CUDA'}; "
        f"{threads} CPU thread(s)"
    )
    refuse = None
    if poisoned and slot != "cpu":
        refuse = (
            "the worker's fork server initialised CUDA before forking this run, so it cannot use its GPU; "
            "report this as a workbench bug"
        )
    send(run_attempt(ctx, slot, where, refuse))
    conn.close()


class LocalBackend(Backend):
    """Child processes on this host, one per device slot (`--devices`)."""

    name = "local"
    watches_progress = True

    def __init__(self, store, devices: list[str]):
        self.store, self.devices = store, devices
        self.mp = multiprocessing.get_context("forkserver")
        self.mp.set_forkserver_preload(["workbench.jobs.preload"])

    def slots(self) -> list[str]:
        return list(self.devices)

    def slot_has_gpu(self, slot: str) -> bool:
        return slot != "cpu"

    def prepare(self, log) -> None:
        """Start the fork server now (a claimed run never waits for its imports) and check it left CUDA alone."""
        parent, child = self.mp.Pipe(duplex=False)
        probe = self.mp.Process(target=_probe_fork_server, args=(child,))
        probe.start()
        child.close()
        poisoned = parent.recv() if parent.poll(600) else True
        probe.join()
        if poisoned:
            log(
                "warning: the fork server initialised CUDA before forking; GPU runs would fail, so runs "
                "start as fresh processes instead (slower starts)"
            )
            self.mp = multiprocessing.get_context("spawn")

    def start(self, run, slot: str, threads: int) -> Execution:
        parent_end, child_end = self.mp.Pipe(duplex=True)
        proc = self.mp.Process(
            target=_child_main,
            name=f"workbench-run-{run.id}",
            daemon=False,
            args=(child_end, self.store.url, str(self.store.home), run.id, run.attempt, slot, threads),
        )
        proc.start()
        child_end.close()
        return Execution(
            run.id,
            run.attempt,
            job=(proc, parent_end),
            pid=proc.pid,
        )

    def receive(self, ex: Execution) -> None:
        """Take the child's messages: progress ("alive", step, sent) and, last, its result."""
        conn = ex.job[1]
        try:
            while ex.result is None and conn.poll():
                message = conn.recv()
                if isinstance(message, Outcome):
                    ex.result = message
                    continue
                ex.last_alive = time.monotonic()
                _, step, sent = message
                if step is None:
                    continue
                if ex.last_step is not None and step > ex.last_step[0]:
                    per_step = (sent - ex.last_step[1]) / (step - ex.last_step[0])
                    ex.step_seconds = (
                        per_step if not ex.step_seconds else 0.7 * ex.step_seconds + 0.3 * per_step
                    )
                if ex.last_step is None or step != ex.last_step[0]:
                    ex.last_step = (step, sent)
        except (EOFError, OSError):
            pass

    def poll(self, ex: Execution) -> Ended | None:
        proc = ex.job[0]
        self.receive(ex)
        if proc.is_alive():
            return None
        proc.join()
        self.receive(ex)
        code = proc.exitcode
        how = f"killed by signal {-code}" if code and code < 0 else f"exited with code {code}"
        ex.job[1].close()
        return Ended(ex.result, f"run process {how}")

    def stop(self, ex: Execution) -> None:
        try:
            ex.job[1].send("stop")
        except OSError:
            pass

    def kill(self, ex: Execution) -> None:
        if ex.job[0].is_alive():
            ex.job[0].kill()

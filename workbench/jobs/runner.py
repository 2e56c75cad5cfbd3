"""The worker: claim a run -> start it on the backend -> renew its lease -> record how it ended.

Where a run executes is the backend's business (jobs.backends): a child process on this host (local,
the default), a Ray task, or a Slurm job. Whatever the backend, the worker holds the run's lease while
the execution lives, relays cancel and stop to it, kills it when it ignores a stop past its grace, and
records its outcome; a run ends as `interrupted` (resumable) whenever it ended without saying how.

Ownership: a run is held under a lease (worker, attempt) that a separate thread renews every second,
so a main loop waiting on a locked database cannot lose it. When a renewal says the run was taken
(reaped while this worker was slow, then retried), the thread kills the run's process at once and
the worker records nothing for it. Store faults (locked past the timeout, disk full, read-only) are
logged and retried with back-off; they never end the worker, and never fail a run.

Devices: each slot holds a host-wide file lock on its device (gpu-N, cpu-K; jobs.devices) while it runs
a run, so two workers on one host never put two runs on one GPU, or on the CPU slot another worker uses.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from workbench.jobs.backends import DEFAULT_NO_PROGRESS_MINUTES, Backend, Ended, Execution, Outcome
from workbench.jobs.devices import DeviceLock, lock_dir
from workbench.store import queue
from workbench.store.db import DatabaseError, Store
from workbench.store.models import RunStatus

DEFAULT_STOP_GRACE = 10.0  # seconds a stopped run gets to checkpoint, plus two of its steps
POLL_INTERVAL = 0.1
REAP_INTERVAL = 2.0
FAULT_BACKOFF_MAX = 10.0


# --- the worker ----------------------------------------------------------------------------------


@dataclass
class Slot:
    device: str
    lock: DeviceLock | None  # local slots hold their device host-wide; a cluster schedules its own
    run_id: int | None = None
    attempt: int = 0
    ex: Execution | None = None
    no_progress_s: float = DEFAULT_NO_PROGRESS_MINUTES * 60
    stop_sent_at: float | None = None
    stop_reason: str | None = None  # cancel | shutdown | hung
    cancel_seen: bool = False  # set by the lease thread; the main loop sends the stop
    lost: bool = False  # the lease thread found the run taken from this worker and killed its execution
    outcome: Outcome | None = None  # decided, not yet recorded
    held_by: int | None = None  # the PID holding its device lock at its last try (0: unknown)

    def free(self) -> None:
        self.run_id = self.ex = None
        self.stop_sent_at = self.stop_reason = self.outcome = None
        self.cancel_seen = self.lost = False
        if self.lock is not None:
            self.lock.release()


class Worker:
    def __init__(
        self,
        store: Store,
        devices: list[str],
        *,
        once: bool = False,
        max_jobs: int | None = None,
        idle_exit: float | None = None,
        threads: int | None = None,
        stop_grace: float = DEFAULT_STOP_GRACE,
        backend: Backend | None = None,
        log=print,
    ):
        """`devices`: the local backend's slots (parse_devices); a cluster backend brings its own."""
        from workbench.jobs.backends.local import LocalBackend

        self.store = store
        self.backend = backend or LocalBackend(store, devices)
        devices = self.backend.slots()
        local = self.backend.name == "local"
        cpu_index = iter(range(len(devices)))
        self.slots = [
            Slot(d, DeviceLock(f"cpu-{next(cpu_index)}" if d == "cpu" else f"gpu-{d}") if local else None)
            for d in devices
        ]
        self.once, self.max_jobs, self.idle_exit = once, max_jobs, idle_exit
        self.stop_grace = stop_grace
        self.threads = threads
        self.log = log
        self.started = 0
        self._waiting: str | None = None  # what the store last heard of why the free slots wait
        self.stopping = False
        self.forced = False
        cores = os.cpu_count() or 1
        n_cpu_slots = max(1, sum(s.device == "cpu" for s in self.slots))
        # CPU runs side by side split the cores; a GPU run's CPU work shares them with its neighbours.
        self.cpu_threads = threads or max(1, cores // n_cpu_slots)
        self.gpu_threads = threads or max(1, cores // len(self.slots))
        self._slots_lock = threading.Lock()
        self._closing = threading.Event()
        self._faults: dict[str, float] = {}

    def request_stop(self, *_args) -> None:
        """First Ctrl-C / SIGTERM: runs checkpoint and end as interrupted. A second Ctrl-C: stop them now."""
        if self.stopping:
            self.forced = True
        self.stopping = True

    # --- the loop ------------------------------------------------------------------------------

    def run(self) -> int:
        b = self.backend
        self.id = self._retrying(
            "registering",
            lambda: queue.register_worker(self.store, [s.device for s in self.slots], b.name, b.address),
        )
        where = f"device locks in {lock_dir()}" if b.name == "local" else f"{b.name} at {b.address}"
        self.log(
            f"worker {self.id} on {', '.join(s.device for s in self.slots)} (db {self.store.safe_url}, {where})"
        )
        b.prepare(self.log)
        self.log("ready")
        lease_thread = threading.Thread(target=self._renew_leases, daemon=True, name="leases")
        lease_thread.start()
        last_reap = 0.0
        idle_since = time.monotonic()
        backoff = 0.0
        try:
            while True:
                try:
                    if time.monotonic() - last_reap >= REAP_INTERVAL:
                        last_reap = time.monotonic()
                        for rid in queue.reap_stale(self.store, spare=self.id):
                            self.log(f"run {rid}: lease lapsed, marked interrupted")
                    for s in self._busy():
                        self._poll(s)
                    if not self.stopping and (self.max_jobs is None or self.started < self.max_jobs):
                        for s in self.slots:
                            if s.run_id is None and (self.max_jobs is None or self.started < self.max_jobs):
                                if self._start(s):
                                    idle_since = time.monotonic()
                        self._say_why_waiting()
                    backoff = 0.0
                except (DatabaseError, OSError) as e:
                    self._fault("the main loop", e)
                    backoff = min(FAULT_BACKOFF_MAX, max(0.5, backoff * 2))
                    time.sleep(backoff)
                if busy := self._busy():
                    idle_since = time.monotonic()
                    if self.stopping and all(b.outcome is not None for b in busy):
                        # Stopping with outcomes the store would not take: exit anyway. Their leases lapse and
                        # the next worker marks them interrupted, resumable from their last checkpoint.
                        self.log(
                            f"exiting with {len(busy)} run(s) the store could not record; they will be "
                            "marked interrupted once their leases lapse"
                        )
                        return 0
                elif (
                    self.stopping
                    or (self.max_jobs is not None and self.started >= self.max_jobs)
                    or self.once
                ):
                    return 0
                elif self.idle_exit is not None and time.monotonic() - idle_since >= self.idle_exit:
                    self.log(f"idle for {self.idle_exit:.0f} s, exiting")
                    return 0
                time.sleep(POLL_INTERVAL)
        finally:
            self._closing.set()
            for s in self._busy():  # only after a forced stop: their leases lapse and a worker reaps them
                if s.ex is not None and s.outcome is None:
                    self.backend.kill(s.ex)
            self.backend.close()
            try:
                queue.stop_worker(self.store, self.id)
            except DatabaseError as e:
                self._fault("stopping", e)

    def _say_why_waiting(self) -> None:
        """When every free slot found its device held by another worker on the host, the store says so
        (a queued run then reads `queued (device cpu-0 held by worker PID 4242 on this host)`); one write
        a change, not a poll."""
        free = [s for s in self.slots if s.run_id is None]
        why = None
        if free and all(s.held_by is not None for s in free):
            why = "; ".join(
                f"device {s.lock.name} held by "
                + (f"worker PID {s.held_by}" if s.held_by else "another worker")
                + " on this host"
                for s in free
            )
        if why != self._waiting:
            queue.set_waiting(self.store, self.id, why)
            self._waiting = why

    def _busy(self) -> list[Slot]:
        return [s for s in self.slots if s.run_id is not None]

    def _retrying(self, what: str, fn):
        """fn() until the store takes it, backing off (a worker must start even while the store is busy)."""
        delay = 0.5
        while True:
            try:
                return fn()
            except DatabaseError as e:
                if self.stopping:
                    raise
                self._fault(what, e)
                time.sleep(delay)
                delay = min(FAULT_BACKOFF_MAX, delay * 2)

    def _fault(self, what: str, e: BaseException) -> None:
        """Log a store fault, at most every 30 s per kind of fault."""
        text = str(getattr(e, "orig", None) or e).splitlines()[0]
        key = f"{what}: {text}"
        if time.monotonic() - self._faults.get(key, -1e9) >= 30.0:
            self._faults[key] = time.monotonic()
            self.log(f"store fault while {what}: {text}; backing off and retrying")

    def _renew_leases(self) -> None:
        """The lease thread: database waits in the main loop cannot stop it from renewing."""
        while not self._closing.wait(queue.HEARTBEAT_INTERVAL):
            with self._slots_lock:
                held = {s.run_id: s.attempt for s in self.slots if s.run_id is not None and s.outcome is None}
            try:
                renewal = queue.renew_leases(self.store, self.id, held)
            except DatabaseError as e:
                self._fault("renewing leases", e)
                continue
            lost = []
            with self._slots_lock:
                for s in self.slots:
                    if s.run_id is None or held.get(s.run_id) != s.attempt or s.outcome is not None:
                        continue
                    if s.run_id not in renewal.kept and not s.lost:
                        s.lost = True
                        lost.append((s.run_id, s.attempt, s.ex))
                    elif s.run_id in renewal.cancelled:
                        s.cancel_seen = True
            for run_id, attempt, ex in lost:  # at once, and outside the lock: a kill may be slow (scancel)
                if ex is not None:  # still starting: _start kills it once the backend hands it over
                    self.backend.kill(ex)
                self.log(
                    f"run {run_id}: attempt {attempt} was taken from this worker (or ended itself); killed"
                )

    def _start(self, slot: Slot) -> bool:
        if slot.lock is not None and not slot.lock.acquire():
            slot.held_by = slot.lock.holder() or 0
            return False  # another worker on this host uses the device
        slot.held_by = None
        try:
            run = queue.claim(
                self.store, self.id, slot.device, has_gpu=self.backend.slot_has_gpu(slot.device)
            )
        except BaseException:
            if slot.lock is not None:
                slot.lock.release()
            raise
        if run is None:
            if slot.lock is not None:
                slot.lock.release()
            return False
        self.started += 1
        gpu = self.backend.slot_has_gpu(slot.device)
        threads = int(  # the spec's, else --threads, else the backend's share, else this host's
            run.spec.get("threads")
            or self.threads
            or self.backend.default_threads(slot.device)
            or (self.gpu_threads if gpu else self.cpu_threads)
        )
        with self._slots_lock:  # from here the lease thread renews the run, however long its start takes
            slot.run_id, slot.attempt = run.id, run.attempt
            slot.no_progress_s = 60 * float(
                run.spec.get("no_progress_minutes") or DEFAULT_NO_PROGRESS_MINUTES
            )
        try:  # outside the lock: a start may take seconds (sbatch), and the lease thread needs the lock
            ex = self.backend.start(run, slot.device, threads)
        except Exception as e:  # noqa: BLE001 - the cluster refused it: the run ends, the worker goes on
            with self._slots_lock:
                slot.ex = Execution(run.id, run.attempt)
                slot.outcome = Outcome(
                    RunStatus.INTERRUPTED, f"the {self.backend.name} backend could not start it: {e}"
                )
            self.log(f"run {run.id}: {slot.outcome.error}")
            return True
        with self._slots_lock:
            slot.ex, lost = ex, slot.lost
        if lost:  # taken from this worker while it started
            self.backend.kill(ex)
        where = f"pid {slot.ex.pid}" if slot.ex.pid else f"job {slot.ex.job_id}"
        self.log(
            f"run {run.id} ({run.kind} {run.name!r}) attempt {run.attempt} started on {slot.device}, "
            f"{where}, {threads} thread(s)"
        )
        queue.set_pid(self.store, run.id, slot.ex.pid, slot.ex.job_id)
        return True

    def _send_stop(self, slot: Slot, reason: str) -> None:
        slot.stop_sent_at, slot.stop_reason = time.monotonic(), reason
        if reason == "shutdown":  # a run on another host hears it through the store
            queue.request_stop(self.store, slot.run_id, slot.attempt)
        self.backend.stop(slot.ex)

    def _grace(self, slot: Slot) -> float:
        return self.stop_grace + 2 * (slot.ex.step_seconds if slot.ex else 0.0)

    def _poll(self, slot: Slot) -> None:
        if slot.outcome is None:
            ended = self.backend.poll(slot.ex)
            if ended is None:
                now = time.monotonic()
                if slot.stop_sent_at is None:
                    if slot.cancel_seen:
                        self._send_stop(slot, "cancel")
                    elif self.stopping:
                        self._send_stop(slot, "shutdown")
                    elif self._never_began(slot, now):
                        slot.stop_sent_at, slot.stop_reason = now, "unscheduled"
                        self.backend.kill(slot.ex)
                        self.log(f"run {slot.run_id}: {self._unscheduled(slot)}; cancelled its job")
                    elif self.backend.watches_progress and now - slot.ex.last_alive > slot.no_progress_s:
                        slot.stop_sent_at, slot.stop_reason = now, "hung"
                        self.backend.kill(slot.ex)
                        self.log(
                            f"run {slot.run_id}: no progress for {slot.no_progress_s / 60:g} min; killed"
                        )
                if slot.stop_sent_at is not None and (
                    self.forced or now - slot.stop_sent_at >= self._grace(slot)
                ):
                    self.backend.kill(slot.ex)
                return
            slot.outcome = self._outcome(slot, ended)
        o = slot.outcome
        if slot.lost or o.lost:
            self.log(
                f"run {slot.run_id}: attempt {slot.attempt} ended after losing the run; nothing recorded"
            )
        elif queue.finish(
            self.store, slot.run_id, self.id, o.status, o.error, o.traceback, attempt=slot.attempt
        ):  # may fault
            self.log(f"run {slot.run_id} {o.status}" + (f": {o.error}" if o.error else ""))
        else:
            self.log(
                f"run {slot.run_id}: ended {o.status}, but attempt {slot.attempt} no longer holds it "
                "(reaped or retried meanwhile); nothing recorded"
            )
        with self._slots_lock:
            slot.free()

    def _never_began(self, slot: Slot, now: float) -> bool:
        """Past the backend's pending limit and its process still not started (read once it is due)."""
        limit = self.backend.pending_limit
        if slot.ex.began or limit is None or now - slot.ex.started_at < limit:
            return False
        slot.ex.began = queue.has_begun(self.store, slot.run_id, slot.attempt)
        return not slot.ex.began

    def _unscheduled(self, slot: Slot) -> str:
        return (
            f"the {self.backend.name} cluster did not start it within {self.backend.pending_limit / 60:g} min "
            "(does any node have the CPUs and GPUs it asks for?)"
        )

    def _outcome(self, slot: Slot, ended: Ended) -> Outcome:
        """The run's own report, unless the worker stopped it for a reason of its own; `interrupted`
        (resumable) whenever it ended without saying how."""
        result = ended.result
        if slot.stop_reason == "unscheduled":
            return Outcome(RunStatus.INTERRUPTED, self._unscheduled(slot))
        if slot.stop_reason == "hung":
            return Outcome(
                RunStatus.FAILED,
                f"no progress for {slot.no_progress_s / 60:g} min (no step or report from the run)",
            )
        if result is not None and result.status != RunStatus.CANCELLED:
            return result
        if result is not None and slot.stop_reason != "shutdown":
            return result  # cancelled, and not by this worker's shutdown
        if slot.stop_sent_at is not None:
            if slot.stop_reason == "cancel":
                return Outcome(RunStatus.CANCELLED)
            return Outcome(RunStatus.INTERRUPTED, "the worker was stopped")
        return Outcome(RunStatus.INTERRUPTED, f"{ended.how} before reporting a result")


# --- starting a worker in the background ---------------------------------------------------------


def hold_exclusive_lock(home: Path):
    """Take the auto-worker lock, or return None when another auto-started worker holds it."""
    f = open(Path(home) / "worker.lock", "w")  # noqa: SIM115 - held for the life of the process
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


def ensure_worker(store: Store, idle_exit: float = 600.0) -> bool:
    """Start a detached local worker unless one is alive. Returns True when it started one."""
    if queue.live_workers(store):
        return False
    logs = store.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, WORKBENCH_HOME=str(store.home), WORKBENCH_DB_URL=store.url)
    if kinds_path := env.get("WORKBENCH_KINDS_PATH"):  # relative folders meant the submitter's directory
        env["WORKBENCH_KINDS_PATH"] = os.pathsep.join(
            str(Path(p).resolve()) for p in kinds_path.split(os.pathsep)
        )
    # -P and a fixed directory: nothing in the folder where `submit` was typed is ever imported (a user's
    # own `workbench/` package included), by the worker, its fork server or its runs.
    with open(logs / "worker.log", "ab") as out:
        subprocess.Popen(
            [
                sys.executable,
                "-P",
                "-m",
                "workbench",
                "worker",
                "--devices",
                "auto",
                "--idle-exit",
                str(idle_exit),
                "--exclusive",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=env,
            cwd=store.home,
            start_new_session=True,
        )
    return True


def install_signal_handlers(worker: Worker) -> None:
    """SIGINT (Ctrl-C) and SIGTERM stop the worker gracefully; a second Ctrl-C stops its runs at once."""
    signal.signal(signal.SIGTERM, worker.request_stop)
    signal.signal(signal.SIGINT, worker.request_stop)

"""The worker: claim a run -> run its kind in a child process -> renew its lease -> finish.

Children are forked from a fork server that has torch and the kinds imported without touching the
CUDA runtime (jobs.preload), so a run starts in milliseconds and can still pin itself to its GPU:
the child's first statement sets CUDA_VISIBLE_DEVICES. Each child holds one end of a pipe to the
worker: the worker sends "stop" through it (cancel, Ctrl-C, shutdown), the child sends "alive" as it
makes progress and its result at the end; when the worker dies the child reads EOF and exits, so no
run outlives its worker.

Ownership: a run is held under a lease (worker, attempt) that a separate thread renews every second,
so a main loop waiting on a locked database cannot lose it. When a renewal says the run was taken
(reaped while this worker was slow, then retried), the thread kills the run's process at once and
the worker records nothing for it. Store faults (locked past the timeout, disk full, read-only) are
logged and retried with back-off; they never end the worker, and never fail a run.

Devices: each slot holds a host-wide file lock on its device (gpu-N, cpu-K) while it runs a run, so
two workers on one host never put two runs on one GPU, or on the CPU slot another worker uses.
"""

from __future__ import annotations

import fcntl
import multiprocessing
import multiprocessing.connection
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from jobs.context import LostOwnership, RunCancelled, RunContext, is_store_fault
from store import queue
from store.artifacts import run_dir
from store.db import DatabaseError, Store

DEFAULT_STOP_GRACE = 10.0  # seconds a stopped run gets to checkpoint, plus two of its steps
POLL_INTERVAL = 0.1
REAP_INTERVAL = 2.0
FAULT_BACKOFF_MAX = 10.0
DEFAULT_NO_PROGRESS_MINUTES = 30.0


def parse_devices(devices: str) -> list[str]:
    """`cpu`, `cpu:2` (two CPU slots), `0,1` (GPU indices) or `auto` -> one entry per slot."""
    if devices == "auto":
        n = gpu_count()
        return [str(i) for i in range(n)] or ["cpu"]
    slots: list[str] = []
    for part in devices.split(","):
        part = part.strip()
        if part == "cpu" or part.startswith("cpu:"):
            count = part.partition(":")[2] or "1"
            if not count.isdigit() or int(count) < 1:
                raise ValueError(f"--devices: bad CPU slot count in {part!r}")
            slots += ["cpu"] * int(count)
        elif part.isdigit():
            slots.append(part)
        else:
            raise ValueError(f"--devices: {part!r} is neither 'cpu', 'cpu:N', a GPU index nor 'auto'")
    if len(set(s for s in slots if s != "cpu")) != len([s for s in slots if s != "cpu"]):
        raise ValueError("--devices: a GPU index is listed twice (one run per GPU)")
    return slots


def gpu_count() -> int:
    """GPUs on this host, from NVML where it answers (it does not initialise CUDA in the worker)."""
    import torch

    if not torch.cuda._is_compiled():
        return 0
    n = torch.cuda._device_count_nvml()
    return n if n >= 0 else torch.cuda.device_count()


def resolve_device(requested: str, slot: str) -> str:
    """The torch device a run uses inside its slot (its GPU is always cuda:0 there)."""
    import torch

    if requested == "cpu" or (requested == "auto" and slot == "cpu"):
        if requested == "auto" and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if requested.startswith("cuda") or requested == "auto":
        if slot == "cpu" or not torch.cuda.is_available():
            if requested == "auto":
                return "cpu"
            raise RuntimeError(f"the spec asks for device {requested!r} but this worker slot has no GPU")
        return "cuda:0"
    return requested


def lock_dir() -> Path:
    """Where device locks live: one folder per host, shared by every user's workers."""
    d = Path(os.environ.get("WORKBENCH_LOCK_DIR") or "/tmp/workbench-devices")
    if not d.is_dir():
        d.mkdir(parents=True, exist_ok=True)
        try:
            d.chmod(0o1777)  # like /tmp: any user's worker can lock, none can remove another's lock
        except OSError:
            pass
    return d


class DeviceLock:
    """A host-wide exclusive lock on one device slot (flock: released by the kernel if the worker dies)."""

    def __init__(self, name: str):
        self.name = name
        self.path = lock_dir() / f"{name}.lock"
        self._file = None

    def acquire(self) -> bool:
        if self._file is not None:
            return True
        f = open(self.path, "a")  # noqa: SIM115 - held while the slot runs a run
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return False
        self._file = f
        return True

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the flock
            self._file = None


# --- the child -----------------------------------------------------------------------------------


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
    import torch

    poisoned = _fork_is_poisoned()
    log_path = run_dir(Path(home), run_id) / "output.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab", buffering=0) as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
    torch.set_num_threads(threads)
    # numpy's BLAS and scikit-learn's OpenMP keep their own pools, one thread per core: left alone, a
    # probe's small matrix products beside another run were 10x slower than on one thread.
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
    send_lock = threading.Lock()

    def send(message: tuple) -> None:
        with send_lock:
            try:
                conn.send(message)
            except OSError:
                pass

    store = Store(db_url, Path(home))
    ctx = RunContext(
        store, run_id, attempt=attempt, on_activity=lambda step: send(("alive", step, time.time()))
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
    import jobs.context

    jobs.context._active = ctx
    try:
        from jobs.kinds import load_kind
        from jobs.spec import spec_from_dict

        ctx.event(
            f"process {os.getpid()} in slot {slot}: CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r} "
            f"set before CUDA could start; fork server {'HAD STARTED CUDA' if poisoned else 'never touched CUDA'}; "
            f"{threads} CPU thread(s)"
        )
        if poisoned and slot != "cpu":
            raise RuntimeError(
                "the worker's fork server initialised CUDA before forking this run, so it cannot use "
                "its GPU; report this as a workbench bug"
            )
        if removed := ctx.remove_partial_files():
            ctx.event(f"removed {removed} partly written file(s) an earlier attempt left")
        spec = spec_from_dict(ctx.spec)
        ctx.device = resolve_device(spec.device, slot)
        try:
            load_kind(spec.kind).run(ctx, spec)
            result: tuple = ("succeeded",)
        except RunCancelled:
            result = ("cancelled",)
        ctx.close()
    except LostOwnership as e:
        result = ("lost", str(e), None)
    except BaseException as e:  # noqa: BLE001 - everything a kind raises fails its run, store faults excepted
        fault = is_store_fault(e) or (e.__cause__ is not None and is_store_fault(e.__cause__))
        result = (
            "interrupted" if fault else "failed",
            f"store fault: {e}" if fault else f"{type(e).__name__}: {e}",
            traceback.format_exc(),
        )
        try:
            ctx.flush()
        except Exception:  # noqa: BLE001
            pass
    try:  # output.log may sit on the very disk that is full: the result must reach the worker anyway
        if result[0] != "succeeded" and len(result) > 2 and result[2]:
            sys.stderr.write(result[2])
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:
        pass
    send(result)
    conn.close()


# --- the worker ----------------------------------------------------------------------------------


@dataclass
class Slot:
    device: str
    lock: DeviceLock
    run_id: int | None = None
    attempt: int = 0
    process: multiprocessing.Process | None = None
    conn: multiprocessing.connection.Connection | None = None
    no_progress_s: float = DEFAULT_NO_PROGRESS_MINUTES * 60
    last_alive: float = 0.0  # monotonic time of the run's last sign of progress
    last_step: tuple[int, float] | None = None  # (step, time) of the last alive message with a step
    step_seconds: float = 0.0
    stop_sent_at: float | None = None
    stop_reason: str | None = None  # cancel | shutdown | hung
    cancel_seen: bool = False  # set by the lease thread; the main loop sends the stop
    lost: bool = False  # the lease thread found the run taken from this worker and killed its process
    result: tuple | None = field(default=None)
    outcome: tuple[str, str | None, str | None] | None = None  # decided, not yet recorded

    def free(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.run_id = self.process = self.conn = None
        self.stop_sent_at = self.stop_reason = self.result = self.outcome = None
        self.cancel_seen = self.lost = False
        self.last_step, self.step_seconds = None, 0.0
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
        log=print,
    ):
        self.store = store
        cpu_index = iter(range(len(devices)))
        self.slots = [
            Slot(d, DeviceLock(f"cpu-{next(cpu_index)}" if d == "cpu" else f"gpu-{d}")) for d in devices
        ]
        self.once, self.max_jobs, self.idle_exit = once, max_jobs, idle_exit
        self.stop_grace = stop_grace
        self.log = log
        self.started = 0
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
        self.mp = multiprocessing.get_context("forkserver")
        self.mp.set_forkserver_preload(["jobs.preload"])

    def request_stop(self, *_args) -> None:
        """First Ctrl-C / SIGTERM: runs checkpoint and end as interrupted. A second Ctrl-C: stop them now."""
        if self.stopping:
            self.forced = True
        self.stopping = True

    # --- the loop ------------------------------------------------------------------------------

    def run(self) -> int:
        self.id = self._retrying(
            "registering", lambda: queue.register_worker(self.store, [s.device for s in self.slots])
        )
        self.log(
            f"worker {self.id} on {', '.join(s.device for s in self.slots)} (db {self.store.url}, "
            f"device locks in {lock_dir()})"
        )
        self._check_fork_server()
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
                        for rid in queue.reap_stale(self.store):
                            self.log(f"run {rid}: lease lapsed, marked interrupted")
                    for s in self._busy():
                        self._poll(s)
                    if not self.stopping and (self.max_jobs is None or self.started < self.max_jobs):
                        for s in self.slots:
                            if s.run_id is None and (self.max_jobs is None or self.started < self.max_jobs):
                                if self._start(s):
                                    idle_since = time.monotonic()
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
                if s.process is not None and s.process.is_alive():
                    s.process.kill()
            try:
                queue.stop_worker(self.store, self.id)
            except DatabaseError as e:
                self._fault("stopping", e)

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

    def _check_fork_server(self) -> None:
        """Start the fork server now (a claimed run never waits for its imports) and check it left CUDA alone."""
        parent, child = self.mp.Pipe(duplex=False)
        probe = self.mp.Process(target=_probe_fork_server, args=(child,))
        probe.start()
        child.close()
        poisoned = parent.recv() if parent.poll(600) else True
        probe.join()
        if poisoned:
            self.log(
                "warning: the fork server initialised CUDA before forking; GPU runs would fail, so runs "
                "start as fresh processes instead (slower starts)"
            )
            self.mp = multiprocessing.get_context("spawn")

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
            with self._slots_lock:
                for s in self.slots:
                    if s.run_id is None or held.get(s.run_id) != s.attempt or s.outcome is not None:
                        continue
                    if s.run_id not in renewal.kept and not s.lost:
                        s.lost = True
                        if s.process is not None and s.process.is_alive():
                            s.process.kill()  # at once: the run has a new owner
                        self.log(
                            f"run {s.run_id}: attempt {s.attempt} was taken from this worker; process killed"
                        )
                    elif s.run_id in renewal.cancelled:
                        s.cancel_seen = True

    def _start(self, slot: Slot) -> bool:
        if not slot.lock.acquire():
            return False  # another worker on this host uses the device
        try:
            run = queue.claim(self.store, self.id, slot.device)
        except BaseException:
            slot.lock.release()
            raise
        if run is None:
            slot.lock.release()
            return False
        self.started += 1
        threads = int(
            run.spec.get("threads") or (self.cpu_threads if slot.device == "cpu" else self.gpu_threads)
        )
        parent_end, child_end = self.mp.Pipe(duplex=True)
        proc = self.mp.Process(
            target=_child_main,
            name=f"workbench-run-{run.id}",
            daemon=False,
            args=(child_end, self.store.url, str(self.store.home), run.id, run.attempt, slot.device, threads),
        )
        with self._slots_lock:
            slot.run_id, slot.attempt, slot.conn = run.id, run.attempt, parent_end
            slot.no_progress_s = 60 * float(
                run.spec.get("no_progress_minutes") or DEFAULT_NO_PROGRESS_MINUTES
            )
            slot.last_alive = time.monotonic()
            proc.start()
            slot.process = proc
        child_end.close()
        self.log(
            f"run {run.id} ({run.kind} {run.name!r}) attempt {run.attempt} started on {slot.device}, "
            f"pid {proc.pid}, {threads} thread(s)"
        )
        queue.set_pid(self.store, run.id, proc.pid)
        return True

    def _send_stop(self, slot: Slot, reason: str) -> None:
        slot.stop_sent_at, slot.stop_reason = time.monotonic(), reason
        try:
            slot.conn.send("stop")
        except OSError:
            pass

    def _grace(self, slot: Slot) -> float:
        return self.stop_grace + 2 * slot.step_seconds

    def _receive(self, slot: Slot) -> None:
        try:
            while slot.result is None and slot.conn.poll():
                message = slot.conn.recv()
                if message[0] == "alive":  # ("alive", step or None, the run's time.time() when sent)
                    slot.last_alive = time.monotonic()
                    _, step, sent = message
                    if step is not None:
                        if slot.last_step is not None and step > slot.last_step[0]:
                            per_step = (sent - slot.last_step[1]) / (step - slot.last_step[0])
                            slot.step_seconds = (
                                per_step
                                if not slot.step_seconds
                                else 0.7 * slot.step_seconds + 0.3 * per_step
                            )
                        if slot.last_step is None or step != slot.last_step[0]:
                            slot.last_step = (step, sent)
                else:
                    slot.result = message
        except (EOFError, OSError):
            pass

    def _poll(self, slot: Slot) -> None:
        proc = slot.process
        if slot.outcome is None:
            self._receive(slot)
            if proc.is_alive():
                now = time.monotonic()
                if slot.stop_sent_at is None:
                    if slot.cancel_seen:
                        self._send_stop(slot, "cancel")
                    elif self.stopping:
                        self._send_stop(slot, "shutdown")
                    elif now - slot.last_alive > slot.no_progress_s:
                        slot.stop_sent_at, slot.stop_reason = now, "hung"
                        proc.kill()
                        self.log(
                            f"run {slot.run_id}: no progress for {slot.no_progress_s / 60:g} min; killed"
                        )
                if slot.stop_sent_at is not None and (
                    self.forced or now - slot.stop_sent_at >= self._grace(slot)
                ):
                    proc.kill()
                return
            proc.join()
            self._receive(slot)
            slot.outcome = self._outcome(slot, proc.exitcode)
        status, error, tb = slot.outcome
        if slot.lost or status == "lost":
            self.log(
                f"run {slot.run_id}: attempt {slot.attempt} ended after losing the run; nothing recorded"
            )
        else:
            queue.finish(
                self.store, slot.run_id, self.id, status, error, tb, attempt=slot.attempt
            )  # may fault: retried
            self.log(f"run {slot.run_id} {status}" + (f": {error}" if error else ""))
        with self._slots_lock:
            slot.free()

    def _outcome(self, slot: Slot, exitcode: int | None) -> tuple[str, str | None, str | None]:
        result = slot.result
        if slot.stop_reason == "hung":
            return (
                "failed",
                f"no progress for {slot.no_progress_s / 60:g} min (no step or report from the run)",
                None,
            )
        if result and result[0] in ("succeeded", "failed", "interrupted", "lost"):
            return result[0], *(list(result[1:]) + [None, None])[:2]
        if result and result[0] == "cancelled" and slot.stop_reason != "shutdown":
            return "cancelled", None, None
        if slot.stop_sent_at is not None:
            if slot.stop_reason == "cancel":
                return "cancelled", None, None
            return "interrupted", "the worker was stopped", None
        how = f"killed by signal {-exitcode}" if exitcode and exitcode < 0 else f"exited with code {exitcode}"
        return "interrupted", f"run process {how} before reporting a result", None


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
    with open(logs / "worker.log", "ab") as out:
        subprocess.Popen(
            [
                sys.executable,
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
            start_new_session=True,
        )
    return True


def install_signal_handlers(worker: Worker) -> None:
    """SIGINT (Ctrl-C) and SIGTERM stop the worker gracefully; a second Ctrl-C stops its runs at once."""
    signal.signal(signal.SIGTERM, worker.request_stop)
    signal.signal(signal.SIGINT, worker.request_stop)

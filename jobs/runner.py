"""The worker: claim a run -> run its kind in a child process -> heartbeat -> finish.

Children are forked from a forkserver that has torch and the kinds imported already, so a run
starts in milliseconds, and the forkserver itself never touched CUDA or the database. Each child
holds one end of a pipe to the worker: the worker sends "stop" through it to cancel, and when the
worker dies the child reads EOF and exits, so no run outlives its worker.
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

from jobs.context import RunCancelled, RunContext
from jobs.kinds import kind_names, load_kind, preload_modules
from store import queue
from store.artifacts import run_dir
from store.db import Store

CANCEL_GRACE = 3.0  # seconds a child gets to stop by itself before it is terminated
KILL_GRACE = 2.0
POLL_INTERVAL = 0.1
REAP_INTERVAL = 2.0


def parse_devices(devices: str) -> list[str]:
    """`cpu`, `cpu:2` (two CPU slots), `0,1` (GPU indices) or `auto` -> one entry per slot."""
    if devices == "auto":
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
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


# --- the child -----------------------------------------------------------------------------------

def _noop() -> None:
    pass


def _child_main(conn, db_url: str, home: str, run_id: int, attempt: int, slot: str, threads: int) -> None:
    os.environ["CUDA_VISIBLE_DEVICES"] = "" if slot == "cpu" else slot
    log_path = run_dir(Path(home), run_id) / "output.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab", buffering=0) as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
    import torch

    torch.set_num_threads(threads)
    store = Store(db_url, Path(home))
    ctx = RunContext(store, run_id, attempt=attempt)

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
    try:
        from jobs.spec import spec_from_dict

        spec = spec_from_dict(ctx.spec)
        ctx.device = resolve_device(spec.device, slot)
        load_kind(spec.kind).run(ctx, spec)
        ctx.close()
        result: tuple = ("succeeded",)
    except RunCancelled:
        ctx.close()
        result = ("cancelled",)
    except BaseException as e:  # noqa: BLE001 - everything a kind raises fails its run
        try:
            ctx.flush()
        except Exception:  # noqa: BLE001
            pass
        traceback.print_exc()
        result = ("failed", f"{type(e).__name__}: {e}", traceback.format_exc())
    sys.stdout.flush()
    sys.stderr.flush()
    conn.send(result)
    conn.close()


# --- the worker ----------------------------------------------------------------------------------

@dataclass
class Slot:
    device: str
    run_id: int | None = None
    process: multiprocessing.Process | None = None
    conn: multiprocessing.connection.Connection | None = None
    stop_sent_at: float | None = None
    cancel: bool = False  # True when the user cancelled (vs. the worker shutting down)
    terminated: bool = False
    result: tuple | None = field(default=None)


class Worker:
    def __init__(self, store: Store, devices: list[str], *, once: bool = False, max_jobs: int | None = None,
                 idle_exit: float | None = None, log=print):
        self.store = store
        self.slots = [Slot(d) for d in devices]
        self.once, self.max_jobs, self.idle_exit = once, max_jobs, idle_exit
        self.log = log
        self.started = 0
        self.stopping = False
        n_cpu_slots = max(1, sum(s.device == "cpu" for s in self.slots))
        self.threads = max(1, (os.cpu_count() or 1) // n_cpu_slots)
        self.mp = multiprocessing.get_context("forkserver")
        self.mp.set_forkserver_preload(["jobs.context", "jobs.spec", *preload_modules()]
                                       + [f"jobs.kinds.{k}" for k in kind_names()])

    def request_stop(self, *_args) -> None:
        self.stopping = True

    def run(self) -> int:
        self.id = queue.register_worker(self.store, [s.device for s in self.slots])
        self.log(f"worker {self.id} on {', '.join(s.device for s in self.slots)} (db {self.store.url})")
        # Pay the forkserver's imports now, before claiming: a claimed run must never wait for them.
        warmup = self.mp.Process(target=_noop)
        warmup.start()
        warmup.join()
        self.log("ready")
        last_beat = last_reap = 0.0
        idle_since = time.monotonic()
        try:
            while True:
                now = time.monotonic()
                busy = [s for s in self.slots if s.run_id is not None]
                if now - last_beat >= queue.HEARTBEAT_INTERVAL:
                    last_beat = now
                    cancelled = queue.heartbeat_runs(self.store, self.id, [s.run_id for s in busy])
                    for s in busy:
                        if s.run_id in cancelled and s.stop_sent_at is None:
                            self._send_stop(s, cancel=True)
                if now - last_reap >= REAP_INTERVAL:
                    last_reap = now
                    for rid in queue.reap_stale(self.store):
                        self.log(f"run {rid}: heartbeat lost, marked interrupted")
                if self.stopping:
                    for s in busy:
                        if s.stop_sent_at is None:
                            self._send_stop(s, cancel=False)
                for s in busy:
                    self._poll(s)
                can_claim = not self.stopping and (self.max_jobs is None or self.started < self.max_jobs)
                for s in self.slots:
                    if s.run_id is None and can_claim:
                        if self._start(s):
                            idle_since = time.monotonic()
                        can_claim = self.max_jobs is None or self.started < self.max_jobs
                busy = [s for s in self.slots if s.run_id is not None]
                if busy:
                    idle_since = time.monotonic()
                elif self.stopping or (self.max_jobs is not None and self.started >= self.max_jobs):
                    return 0
                elif self.once:
                    return 0
                elif self.idle_exit is not None and time.monotonic() - idle_since >= self.idle_exit:
                    self.log(f"idle for {self.idle_exit:.0f} s, exiting")
                    return 0
                time.sleep(POLL_INTERVAL)
        finally:
            queue.stop_worker(self.store, self.id)

    def _start(self, slot: Slot) -> bool:
        run = queue.claim(self.store, self.id, slot.device)
        if run is None:
            return False
        self.started += 1
        parent_end, child_end = self.mp.Pipe(duplex=True)
        proc = self.mp.Process(
            target=_child_main, name=f"workbench-run-{run.id}", daemon=False,
            args=(child_end, self.store.url, str(self.store.home), run.id, run.attempt, slot.device,
                  self.threads if slot.device == "cpu" else max(1, (os.cpu_count() or 1) // len(self.slots))))
        proc.start()
        child_end.close()
        queue.set_pid(self.store, run.id, proc.pid)
        slot.run_id, slot.process, slot.conn = run.id, proc, parent_end
        slot.stop_sent_at, slot.cancel, slot.terminated, slot.result = None, False, False, None
        self.log(f"run {run.id} ({run.kind} {run.name!r}) started on {slot.device}, pid {proc.pid}")
        return True

    def _send_stop(self, slot: Slot, cancel: bool) -> None:
        slot.stop_sent_at, slot.cancel = time.monotonic(), cancel
        try:
            slot.conn.send("stop")
        except OSError:
            pass

    def _poll(self, slot: Slot) -> None:
        proc = slot.process
        try:
            if slot.result is None and slot.conn.poll():
                slot.result = slot.conn.recv()
        except (EOFError, OSError):
            pass
        if proc.is_alive():
            if slot.stop_sent_at is not None:
                waited = time.monotonic() - slot.stop_sent_at
                if waited >= CANCEL_GRACE + KILL_GRACE:
                    proc.kill()
                elif waited >= CANCEL_GRACE and not slot.terminated:
                    slot.terminated = True
                    proc.terminate()
            return
        proc.join()
        status, error, tb = self._outcome(slot, proc.exitcode)
        queue.finish(self.store, slot.run_id, self.id, status, error, tb)
        self.log(f"run {slot.run_id} {status}" + (f": {error}" if error else ""))
        slot.conn.close()
        slot.run_id = slot.process = slot.conn = None

    def _outcome(self, slot: Slot, exitcode: int | None) -> tuple[str, str | None, str | None]:
        result = slot.result
        if result and result[0] == "succeeded":
            return "succeeded", None, None
        if result and result[0] == "failed":
            return "failed", result[1], result[2]
        if slot.stop_sent_at is not None:
            if slot.cancel:
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
            [sys.executable, "-m", "workbench", "worker", "--devices", "auto", "--idle-exit", str(idle_exit),
             "--exclusive"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, start_new_session=True)
    return True


def install_signal_handlers(worker: Worker) -> None:
    signal.signal(signal.SIGTERM, worker.request_stop)
    signal.signal(signal.SIGINT, worker.request_stop)

"""The run queue: submit, atomic claim, lease renewal, cancel, finish, reap, retry.

All state changes are single BEGIN IMMEDIATE transactions; a claim is one UPDATE ... RETURNING, so
no two workers can ever get the same run. A claimed run is held under a lease: (worker, attempt),
renewed by the worker's heartbeat and measured on the database's clock. Only workers reap lapsed
leases; readers show such a run as stale. Whoever holds a run's current attempt is its only writer.
"""

from __future__ import annotations

import os
import re
import socket
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, func, literal_column, not_, or_, select, update

from workbench.store.db import Store, StoreError, busy_timeout_ms
from workbench.store.models import (
    FINAL_STATES,
    RETRYABLE_STATES,
    Experiment,
    Run,
    RunEvent,
    RunStatus,
    Worker,
)

HEARTBEAT_INTERVAL = 1.0


def heartbeat_timeout() -> float:
    """Seconds without a heartbeat after which a worker counts as gone (`workbench workers`)."""
    return float(os.environ.get("WORKBENCH_HEARTBEAT_TIMEOUT", "15"))


def lease_lapse() -> float:
    """Seconds without a renewal after which a running run's lease has lapsed (it is reaped as interrupted,
    and a remote run gives itself up): the heartbeat timeout plus the longest a write may wait for the
    database's lock, so that a lock held by a long write (a VACUUM, a large flush, a schema upgrade, a slow
    disk), which stops every renewal while it lasts, never costs a healthy run its lease."""
    return heartbeat_timeout() + busy_timeout_ms() / 1000


@dataclass(frozen=True)
class NewRun:
    name: str
    spec: dict[str, Any]


class UnknownRun(StoreError):
    def __init__(self, run_id: int):
        super().__init__(f"no run with id {run_id}")


def db_now(store: Store):
    """The database's clock as a SQL expression (see store.db.db_now_sql)."""
    return literal_column(store.now_sql)


def needs_gpu(spec: dict[str, Any]) -> bool:
    return str(spec.get("device", "auto")).startswith("cuda")


def is_stale(run: Run, now: float) -> bool:
    """A running run whose lease lapsed (`now` from Store.now()): its worker or process is gone or stuck."""
    return (
        run.status == RunStatus.RUNNING
        and run.heartbeat_at is not None
        and now - run.heartbeat_at > lease_lapse()
    )


def _event(session, run_id: int, message: str, level: str = "info") -> None:
    session.add(RunEvent(run_id=run_id, time=time.time(), level=level, message=message))


def submit(
    store: Store,
    *,
    name: str,
    kind: str,
    spec_text: str,
    sweep: dict[str, Any],
    runs: list[NewRun],
    priority: int = 0,
) -> tuple[int, list[int]]:
    """Store one experiment and its runs as queued; returns (experiment id, run ids)."""
    now = time.time()
    with store.write() as s:
        exp = Experiment(name=name, kind=kind, spec_text=spec_text, sweep=sweep, created_at=now)
        s.add(exp)
        s.flush()
        objs = [
            Run(
                experiment_id=exp.id,
                name=r.name,
                kind=kind,
                spec=r.spec,
                priority=priority,
                created_at=now,
                status=RunStatus.QUEUED,
            )
            for r in runs
        ]
        s.add_all(objs)
        s.flush()
        for r in objs:
            _event(s, r.id, f"queued (priority {priority})")
        return exp.id, [r.id for r in objs]


@dataclass(frozen=True, slots=True)
class Claim:
    """A run a worker slot just took: what the worker and its backend need to start it (read once; the
    ORM row stays in the store)."""

    id: int
    attempt: int  # this attempt's number: the run's only writer from now on
    kind: str
    name: str
    spec: dict[str, Any]


def claim(store: Store, worker_id: str, device: str, *, has_gpu: bool | None = None) -> Claim | None:
    """Atomically take the highest-priority, oldest queued run this slot can run and mark it running.

    A slot without a GPU (`device` "cpu" unless `has_gpu` says otherwise) never takes a run whose spec
    says `device: cuda`. The run's attempt goes up by one: the new attempt is the run's only writer from
    now on. On PostgreSQL the candidate row is locked with SKIP LOCKED, so concurrent claimers on many
    hosts each take a different run instead of queueing behind one row (SQLite serialises writers).
    """
    now = time.time()
    with store.write() as s:
        runnable = [Run.status == RunStatus.QUEUED]
        if not (has_gpu if has_gpu is not None else device != "cpu"):
            runnable.append(not_(func.coalesce(Run.spec["device"].as_string(), "auto").like("cuda%")))
        next_id = (
            select(Run.id)
            .where(*runnable)
            .order_by(Run.priority.desc(), Run.id)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        run = s.execute(
            update(Run)
            .where(Run.id == next_id, Run.status == RunStatus.QUEUED)
            .values(
                status=RunStatus.RUNNING,
                worker_id=worker_id,
                device=device,
                started_at=now,
                heartbeat_at=db_now(store),
                attempt=Run.attempt + 1,
                finished_at=None,
                pid=None,
                job_id=None,
                stop_requested=False,
            )
            .returning(Run)
        ).scalar_one_or_none()
        if run is None:
            return None
        _event(s, run.id, f"started on {device} by {worker_id} (attempt {run.attempt})")
        return Claim(run.id, run.attempt, run.kind, run.name, dict(run.spec or {}))


def set_pid(
    store: Store, run_id: int, pid: int | None = None, job_id: str | None = None, attempt: int | None = None
) -> None:
    """Where the run executes: its process, its backend job (Ray task, Slurm job id), or both (each
    given value is set; the others are left)."""
    values = {k: v for k, v in (("pid", pid), ("job_id", job_id)) if v is not None}
    held = [Run.id == run_id] + ([Run.attempt == attempt] if attempt is not None else [])
    if values:
        with store.write() as s:
            s.execute(update(Run).where(*held).values(**values))


def has_begun(store: Store, run_id: int, attempt: int) -> bool:
    """Whether the attempt's own process has started (it records its pid; a claim clears it)."""
    with store.read() as s:
        return s.scalar(select(Run.pid).where(Run.id == run_id, Run.attempt == attempt)) is not None


def request_stop(store: Store, run_id: int, attempt: int) -> None:
    """Ask a run's attempt to checkpoint and end interrupted (its worker is stopping); a run on another
    host (Ray, Slurm) reads this from the store, as it reads a cancel."""
    with store.write() as s:
        s.execute(
            update(Run)
            .where(Run.id == run_id, Run.attempt == attempt, Run.status == RunStatus.RUNNING)
            .values(stop_requested=True)
        )


@dataclass(frozen=True, slots=True)
class Lease:
    """What a run's own process needs to know about its lease (see jobs.backends.remote)."""

    held: bool  # this attempt still owns the run
    cancel: bool
    stop: bool
    age: float  # seconds since the worker last renewed it (the database's clock)


def lease_of(store: Store, run_id: int, attempt: int) -> Lease:
    with store.read() as s:
        row = s.execute(
            select(
                Run.status,
                Run.attempt,
                Run.cancel_requested,
                Run.stop_requested,
                db_now(store) - Run.heartbeat_at,
            ).where(Run.id == run_id)
        ).first()
    if row is None or row[0] != RunStatus.RUNNING or row[1] != attempt:
        return Lease(False, False, False, 0.0)
    return Lease(True, bool(row[2]), bool(row[3]), float(row[4] or 0.0))


@dataclass(frozen=True)
class Renewal:
    kept: set[int]  # runs whose lease this worker still holds, renewed now
    cancelled: set[int]  # of those, the ones the user asked to cancel


def renew_leases(store: Store, worker_id: str, held: dict[int, int]) -> Renewal:
    """Renew the worker's heartbeat and its runs' leases ({run id: attempt}).

    A run missing from `kept` was taken from this worker (reaped while it was slow, then retried):
    its process must stop at once, and must not record an outcome. Waits QUICK_LOCK_WAIT_MS for the
    database's lock at most: the caller tries again a second later.
    """
    with store.write(quick=True) as s:
        s.execute(update(Worker).where(Worker.id == worker_id).values(heartbeat_at=db_now(store)))
        if not held:
            return Renewal(set(), set())
        mine = [and_(Run.id == rid, Run.attempt == attempt) for rid, attempt in held.items()]
        rows = s.execute(
            update(Run)
            .where(or_(*mine), Run.status == RunStatus.RUNNING, Run.worker_id == worker_id)
            .values(heartbeat_at=db_now(store))
            .returning(Run.id, Run.cancel_requested)
        ).all()
        return Renewal({r for r, _ in rows}, {r for r, c in rows if c})


def request_cancel(store: Store, run_id: int) -> str:
    """Cancel a queued run at once, or ask a running one to stop. Returns the resulting status."""
    with store.write() as s:
        run = s.get(Run, run_id, with_for_update=True)  # a claim waits, then finds it no longer queued
        if run is None:
            raise UnknownRun(run_id)
        if run.status == RunStatus.QUEUED:
            run.status, run.finished_at = RunStatus.CANCELLED, time.time()
            _event(s, run_id, "cancelled while queued")
        elif run.status == RunStatus.RUNNING:
            run.cancel_requested = True
            _event(s, run_id, "cancel requested")
        else:
            raise StoreError(f"run {run_id} is {run.status}; only queued or running runs can be cancelled")
        return run.status


def finish(
    store: Store,
    run_id: int,
    worker_id: str | None,
    status: RunStatus,
    error: str | None = None,
    traceback: str | None = None,
    attempt: int | None = None,
) -> bool:
    """Record the end of a run this worker holds; False if it no longer holds it (reaped meanwhile).
    `worker_id` None: whichever worker holds it (a remote run ending itself; `attempt` says it is its)."""
    assert status in FINAL_STATES and (worker_id is not None or attempt is not None)
    held = [Run.id == run_id, Run.status == RunStatus.RUNNING]
    if worker_id is not None:
        held.append(Run.worker_id == worker_id)
    if attempt is not None:
        held.append(Run.attempt == attempt)
    with store.write() as s:
        done = s.execute(
            update(Run)
            .where(*held)
            .values(
                status=status,
                finished_at=time.time(),
                error=error,
                traceback=traceback,
                cancel_requested=False,
                stop_requested=False,
            )
        ).rowcount
        if done:
            _event(
                s,
                run_id,
                status + (f": {error}" if error else ""),
                "error" if status == RunStatus.FAILED else "info",
            )
        return bool(done)


def reap_stale(store: Store, timeout: float | None = None, spare: str | None = None) -> list[int]:
    """Mark running runs whose lease lapsed (lease_lapse(), or `timeout` s) as interrupted; returns their
    ids. Workers call this, readers never; `spare`: a worker's id, whose own runs it never reaps (it knows
    they are alive, and ends them itself when they are not).

    Ages are measured on the database's clock, so hosts whose clocks disagree cannot reap each other's runs.
    """
    cutoff = db_now(store) - (lease_lapse() if timeout is None else timeout)
    lapsed = [Run.status == RunStatus.RUNNING, Run.heartbeat_at < cutoff]
    if spare is not None:
        lapsed.append(or_(Run.worker_id.is_(None), Run.worker_id != spare))
    with store.read() as s:  # cheap check first, so a worker does not take the write lock for nothing
        if not s.scalar(select(func.count()).select_from(Run).where(*lapsed)):
            return []
    with store.write() as s:
        ids = list(
            s.scalars(
                update(Run)
                .where(*lapsed)
                .values(
                    status=RunStatus.INTERRUPTED,
                    finished_at=time.time(),
                    error="heartbeat lost (worker or run process died)",
                )
                .returning(Run.id)
            )
        )
        for rid in ids:
            _event(s, rid, "interrupted: heartbeat lost", "warning")
        return ids


def retry(store: Store, run_id: int | list[int]) -> None:
    """Queue failed, cancelled or interrupted runs again; each resumes from its last checkpoint. Several
    go in one transaction: all of them, or (StoreError naming every run refused, and why) none.

    A running run whose lease lapsed (stale) can be retried too: it is interrupted and queued in one
    transaction, on the same clock and condition a worker's reaper uses.
    """
    run_ids = [run_id] if isinstance(run_id, int) else list(run_id)
    with store.write() as s:
        now = float(s.scalar(select(db_now(store))))
        runs = {r: s.get(Run, r, with_for_update=True) for r in run_ids}
        if missing := [r for r, run in runs.items() if run is None]:
            raise UnknownRun(missing[0])
        refused = [
            f"run {r} is {run.status}"
            for r, run in runs.items()
            if run.status not in RETRYABLE_STATES
            and not (run.status == RunStatus.RUNNING and is_stale(run, now))
        ]
        if refused:
            raise StoreError(
                f"{'; '.join(refused)}: only {', '.join(RETRYABLE_STATES)} runs (or running ones whose lease "
                f"lapsed) can be retried{'; none was queued' if len(run_ids) > 1 else ''}"
            )
        for r, run in runs.items():
            if run.status == RunStatus.RUNNING:
                _event(s, r, "interrupted: lease lapsed (retried by the user)", "warning")
            run.status, run.error, run.traceback, run.cancel_requested = RunStatus.QUEUED, None, None, False
            run.stop_requested = False
            run.finished_at = None
            _event(s, r, "queued again (retry)")


def set_priority(store: Store, run_id: int, priority: int) -> None:
    with store.write() as s:
        if not s.execute(update(Run).where(Run.id == run_id).values(priority=priority)).rowcount:
            raise UnknownRun(run_id)


# --- the user's labels ----------------------------------------------------------------------------

TAG = re.compile(r"[\w.:+-]{1,40}")  # one word: letters, digits and . : + - _
MAX_TAGS = 32
MAX_NOTE = 4000


def annotate(
    store: Store,
    run_ids: list[int],
    *,
    add: list[str] = (),
    remove: list[str] = (),
    note: str | None = None,
    name: str | None = None,
    archived: bool | None = None,
) -> None:
    """Tags added and removed, a note (`""` clears it), a new name, archived or not: for every run in
    one transaction, each change an event (so live views see it). ValueError names a tag, note or name
    that cannot be stored; UnknownRun a missing run; nothing changes then. The run's results are untouched.
    """
    for tag in [*add, *remove]:
        if not TAG.fullmatch(tag):
            raise ValueError(f"tag {tag!r}: one word of at most 40 letters, digits or . : + - _")
    if note is not None and (len(note) > MAX_NOTE or not note.replace("\n", " ").isprintable()):
        raise ValueError(f"note: printable text of at most {MAX_NOTE} characters")
    if name is not None and not (0 < len(name) <= 300 and name.isprintable() and name.strip() == name):
        raise ValueError("name: printable text of 1 to 300 characters, without space at either end")
    with store.write() as s:
        runs = {r: s.get(Run, r, with_for_update=True) for r in dict.fromkeys(run_ids)}
        if missing := [r for r, run in runs.items() if run is None]:
            raise UnknownRun(missing[0])
        for r, run in runs.items():
            said = []
            if add or remove:
                tags = sorted((set(run.tags or []) | set(add)) - set(remove))
                if len(tags) > MAX_TAGS:
                    raise ValueError(f"run {r}: at most {MAX_TAGS} tags")
                if tags != list(run.tags or []):
                    run.tags = tags
                    said.append("tags: " + (" ".join(tags) or "none"))
            if note is not None and (note or None) != run.note:
                run.note = note or None
                said.append("note " + ("set" if note else "cleared"))
            if name is not None and name != run.name:
                said.append(f"renamed from {run.name!r}")
                run.name = name
            if archived is not None and archived != bool(run.archived):
                run.archived = archived
                said.append("archived" if archived else "restored from the archive")
            for words in said:
                _event(s, r, words)


# --- workers -------------------------------------------------------------------------------------


def register_worker(
    store: Store, devices: list[str], backend: str = "local", address: str | None = None
) -> str:
    now = store.now()
    worker_id = f"{socket.gethostname()}:{os.getpid()}:{int(time.time() * 1000) % 100000}"
    with store.write() as s:
        s.add(
            Worker(
                id=worker_id,
                hostname=socket.gethostname(),
                pid=os.getpid(),
                devices=devices,
                backend=backend,
                address=address,
                started_at=now,
                heartbeat_at=now,
            )
        )
    return worker_id


def stop_worker(store: Store, worker_id: str) -> None:
    with store.write() as s:
        s.execute(update(Worker).where(Worker.id == worker_id).values(stopped_at=time.time()))


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    """A worker process: its devices (slots) and its last heartbeat (the database's clock)."""

    id: str
    hostname: str
    pid: int
    devices: list[str]
    started_at: float
    heartbeat_at: float
    backend: str = "local"
    address: str | None = None
    waiting: str | None = None  # why its free slots start nothing (set_waiting)
    running: tuple[int, ...] = ()  # the runs it holds now


def live_workers(store: Store) -> list[WorkerRecord]:
    """Workers that have not stopped and whose heartbeat is recent, with the runs each holds."""
    cutoff = store.now() - heartbeat_timeout()
    with store.read() as s:
        rows = s.execute(
            select(
                Worker.id,
                Worker.hostname,
                Worker.pid,
                Worker.devices,
                Worker.started_at,
                Worker.heartbeat_at,
                Worker.backend,
                Worker.address,
                Worker.waiting,
            )
            .where(Worker.stopped_at.is_(None), Worker.heartbeat_at >= cutoff)
            .order_by(Worker.started_at)
        ).all()
        held: dict[str, list[int]] = {}
        for wid, rid in s.execute(
            select(Run.worker_id, Run.id)
            .where(Run.status == RunStatus.RUNNING, Run.worker_id.in_([r.id for r in rows]))
            .order_by(Run.id)
        ):
            held.setdefault(wid, []).append(rid)
        return [WorkerRecord(*row, running=tuple(held.get(row.id, ()))) for row in rows]


def set_waiting(store: Store, worker_id: str, why: str | None) -> None:
    """Say why the worker's free slots start nothing (None: they can start runs)."""
    with store.write() as s:
        s.execute(update(Worker).where(Worker.id == worker_id).values(waiting=why))


def queued_because(workers: list[WorkerRecord]) -> str | None:
    """Why a queued run waits, when every live worker has said its free slots cannot start one:
    `device cpu-0 held by worker PID 4242 on this host`. None when some worker can take it, or none lives
    (the CLI and the TUI say `no live worker` for that)."""
    if not workers or any(w.waiting is None for w in workers):
        return None
    return "; ".join(dict.fromkeys(w.waiting for w in workers))


def prune_workers(store: Store, keep_seconds: float = 86400.0) -> None:
    """Forget workers that stopped or went silent a day ago."""
    cutoff = time.time() - keep_seconds
    with store.write() as s:
        s.execute(
            delete(Worker).where(
                or_(
                    and_(Worker.stopped_at.is_not(None), Worker.stopped_at < cutoff),
                    Worker.heartbeat_at < cutoff,
                )
            )
        )

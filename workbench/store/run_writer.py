"""The writes of one attempt of one run: what jobs.context.RunContext stores, as the store's own SQL.

One writer per run: every write runs in its own transaction that first checks that this attempt is
still the run's current, running attempt. An attempt whose lease was taken (reaped while slow, then
retried) gets LostOwnership on its next write and never writes into the newer attempt's metrics, events,
artifacts or checkpoints. A write the store cannot take (locked past the busy timeout, disk full,
read-only, corrupt) raises StoreFault: the worker then ends the run as interrupted, resumable.
"""

from __future__ import annotations

import errno
import time
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import DataError, IntegrityError

from workbench.store.artifacts import place
from workbench.store.db import DatabaseError, Store
from workbench.store.models import Artifact, MetricPoint, ResultTable, Run, RunEvent, RunStatus

_INSERT_POINTS = (
    f"INSERT INTO {MetricPoint.__tablename__} (run_id, key, step, value, wall_time, attempt) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_STORE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG}


class LostOwnership(Exception):
    """This attempt is no longer the run's current one: another attempt owns the run now."""


class StoreFault(Exception):
    """The store could not take a write (locked past the timeout, disk full, read-only, corrupt)."""


class RefusedValue(ValueError):
    """The database refused a value of the run's own (a name longer than its column, a number out of
    range): the same write would fail on every retry, so the run fails with this reason, never a fault."""


def is_store_fault(e: BaseException) -> bool:
    """A fault of the store (database or artifact disk), not of the run's own code."""
    if isinstance(e, StoreFault | DatabaseError):
        return True
    return isinstance(e, OSError) and e.errno in _STORE_ERRNOS


def run_spec_and_attempt(store: Store, run_id: int) -> tuple[dict[str, Any], int]:
    """(the run's resolved spec, its current attempt); KeyError when there is no such run."""
    with store.read() as s:
        row = s.execute(select(Run.spec, Run.attempt).where(Run.id == run_id)).first()
    if row is None:
        raise KeyError(f"no run {run_id}")
    return row.spec, row.attempt


class RunWriter:
    """The store's side of one RunContext: each method is one owned transaction (see the module)."""

    def __init__(self, store: Store, run_id: int, attempt: int):
        self.store, self.run_id, self.attempt = store, run_id, attempt

    def _owned(self) -> _OwnedWrite:
        return _OwnedWrite(self)

    def check_owner(self) -> None:
        """LostOwnership unless this attempt owns the run (before a file write, which no transaction covers)."""
        with self._owned():
            pass

    def add_points(
        self, points: list[tuple[str, int, float | None, float]], progress: tuple[int, int] | None
    ):
        """Metric points as (key, step, value or None, wall time), and the run's progress if it moved."""
        rows = [(self.run_id, key, step, value, wall, self.attempt) for key, step, value, wall in points]
        with self._owned() as s:
            if rows:  # plain executemany: the ORM's bulk insert costs several times more per row
                s.connection().exec_driver_sql(self.store.driver_sql(_INSERT_POINTS), rows)
            if progress is not None:
                s.execute(
                    update(Run)
                    .where(Run.id == self.run_id)
                    .values(progress_done=progress[0], progress_total=progress[1])
                )

    def merge_summary(self, values: dict[str, Any]) -> None:
        with self._owned() as s:
            run = s.get(Run, self.run_id)
            run.summary = {**(run.summary or {}), **values}

    def replace_table(self, name: str, rows: list[dict[str, Any]]) -> None:
        with self._owned() as s:
            s.execute(delete(ResultTable).where(ResultTable.run_id == self.run_id, ResultTable.name == name))
            s.add(ResultTable(run_id=self.run_id, name=name, rows=rows, created_at=time.time()))

    def add_event(self, message: str, level: str) -> None:
        with self._owned() as s:
            s.add(RunEvent(run_id=self.run_id, time=time.time(), level=level, message=message))

    def add_artifact(
        self,
        name: str,
        kind: str,
        path: str,
        step: int | None,
        meta: dict[str, Any],
        replace: bool,
        temporary: Path | None = None,
    ) -> None:
        """A row for a file under the store's home (`path` relative to it); with `replace`, the row it
        supersedes goes: the run's one checkpoint row, or the same (name, step) of an image or file.
        `temporary`: the file's new content, renamed onto `path` inside the owned transaction, so an
        attempt that lost the run never replaces a file of the attempt that took it over (removed when
        this attempt no longer owns the run)."""
        try:
            self._add_artifact(name, kind, path, step, meta, replace, temporary)
        finally:
            if temporary is not None:
                temporary.unlink(missing_ok=True)

    def _add_artifact(self, name, kind, path, step, meta, replace, temporary) -> None:
        with self._owned() as s:
            if temporary is not None:  # the ownership check holds the run's row: no one takes it meanwhile
                place(temporary, self.store.home / path)
            if replace:
                same = [Artifact.run_id == self.run_id, Artifact.name == name, Artifact.kind == kind]
                if kind != "checkpoint":
                    same.append(Artifact.step.is_(None) if step is None else Artifact.step == step)
                s.execute(delete(Artifact).where(*same))
            s.add(
                Artifact(
                    run_id=self.run_id,
                    name=name,
                    kind=kind,
                    path=path,
                    step=step,
                    meta=meta,
                    created_at=time.time(),
                )
            )

    def last_checkpoint(self) -> tuple[str, int | None] | None:
        """(path relative to the home, step) of the run's checkpoint row, or None."""
        with self.store.read() as s:
            row = s.execute(
                select(Artifact.path, Artifact.step)
                .where(Artifact.run_id == self.run_id, Artifact.kind == "checkpoint")
                .order_by(Artifact.id.desc())
                .limit(1)
            ).first()
        return (row.path, row.step) if row is not None else None

    def cancel_requested(self) -> bool:
        """Whether someone asked to cancel the run; False when the store cannot be read (a store fault is
        not a reason to stop, and the worker relays cancels too)."""
        try:
            with self.store.read() as s:
                return bool(s.scalar(select(Run.cancel_requested).where(Run.id == self.run_id)))
        except DatabaseError:
            return False


class _OwnedWrite:
    """workbench.store.write() that refuses a superseded attempt and turns database errors into StoreFault."""

    def __init__(self, writer: RunWriter):
        self.writer = writer
        self._cm = writer.store.write()

    def __enter__(self):
        try:
            s = self._cm.__enter__()
            # FOR UPDATE (PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers): no reaper or
            # retry can change the run between this check and the commit
            row = s.execute(
                select(Run.status, Run.attempt).where(Run.id == self.writer.run_id).with_for_update()
            ).first()
        except DatabaseError as e:
            raise StoreFault(_short(e)) from e
        if row is None or row.status != RunStatus.RUNNING or row.attempt != self.writer.attempt:
            self._cm.__exit__(None, None, None)
            raise LostOwnership(
                f"run {self.writer.run_id} attempt {self.writer.attempt} no longer owns the run "
                f"({'deleted' if row is None else f'{row.status}, attempt {row.attempt}'})"
            )
        return s

    def __exit__(self, exc_type, exc, tb):
        try:
            self._cm.__exit__(exc_type, exc, tb)  # commits, or rolls back when the body raised
        except DatabaseError as e:
            raise _classified(e) from e
        if isinstance(exc, DatabaseError):
            raise _classified(exc) from exc
        return False


def _classified(e: DatabaseError) -> Exception:
    """A value the database refuses (SQL's data and integrity errors) is the run's; the rest the store's."""
    if isinstance(e, DataError | IntegrityError):
        return RefusedValue(f"the store refused a value: {_short(e).splitlines()[0]}")
    return StoreFault(_short(e))


def _short(e: DatabaseError) -> str:
    return str(e.orig) if getattr(e, "orig", None) is not None else str(e).splitlines()[0]

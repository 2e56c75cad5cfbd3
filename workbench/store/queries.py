"""Reads shared by the CLI and the TUI: one path to the data."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from workbench.store.db import Store
from workbench.store.models import (
    PHASE_EVENT,
    Artifact,
    Experiment,
    MetricPoint,
    ResultTable,
    Run,
    RunEvent,
    RunStatus,
)
from workbench.store.queue import UnknownRun, is_stale, needs_gpu


def iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def list_runs(
    store: Store,
    status: str | None = None,
    kind: str | None = None,
    after_id: int = 0,
    limit: int | None = None,
    archived: bool = False,
) -> list[RunRecord]:
    """Runs in id order as RunRecords (`workbench runs`); archived ones only when `archived`."""
    q = record_query().where(Run.id > after_id).order_by(Run.id)
    if not archived:
        q = q.where(Run.archived.is_(False))
    if status:
        q = q.where(Run.status == status)
    if kind:
        q = q.where(Run.kind == kind)
    if limit:
        q = q.limit(limit)
    with store.read() as s:
        rows = s.execute(q).all()
    now = store.now()
    return [run_record(r, now) for r in rows]


def run_specs(store: Store, run_ids: list[int]) -> dict[int, dict[str, Any]]:
    """{run id: its resolved spec}, for the runs list's spec columns (RunRecord leaves specs out)."""
    specs: dict[int, dict[str, Any]] = {}
    with store.read() as s:
        for start in range(0, len(run_ids), 500):  # bounded IN lists
            chunk = run_ids[start : start + 500]
            specs.update(
                (i, spec) for i, spec in s.execute(select(Run.id, Run.spec).where(Run.id.in_(chunk)))
            )
    return specs


def get_run(store: Store, run_id: int) -> RunRecord:
    """One run's record; UnknownRun when there is none."""
    with store.read() as s:
        row = s.execute(record_query().where(Run.id == run_id)).first()
    if row is None:
        raise UnknownRun(run_id)
    return run_record(row, store.now())


def newest_succeeded(
    store: Store, experiment: str, name: str | None = None, kinds: tuple[str, ...] | None = None
) -> int | None:
    """The id of the newest succeeded run (of one of `kinds`) of `experiment` named `name` (None: the
    experiment's own name), or None."""
    q = (
        select(Run.id)
        .join(Experiment, Run.experiment_id == Experiment.id)
        .where(
            Experiment.name == experiment,
            Run.name == (experiment if name is None else name),
            Run.status == RunStatus.SUCCEEDED,
        )
        .order_by(Run.id.desc())
        .limit(1)
    )
    if kinds:
        q = q.where(Run.kind.in_(kinds))
    with store.read() as s:
        return s.scalar(q)


def status_label(run: Run, now: float) -> str:
    """The status as a person should read it: a running run whose lease lapsed is `running (stale)`, a
    queued run that only a GPU slot may take is `queued (needs a GPU)`. `now` is Store.now()."""
    return _label(run.status, is_stale(run, now), (run.spec or {}).get("device"))


def _label(status: str, stale: bool, spec_device: str | None) -> str:
    if stale:
        return "running (stale)"
    if status == RunStatus.QUEUED and needs_gpu({"device": spec_device or "auto"}):
        return "queued (needs a GPU)"
    return status


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A run as the CLI and the TUI show it: read once, never attached to a session. Times are Unix
    seconds; `label` is status_label's (`running (stale)`, `queued (needs a GPU)`)."""

    id: int
    experiment: str
    experiment_id: int
    name: str
    kind: str
    status: RunStatus
    label: str
    stale: bool
    priority: int
    attempt: int
    device: str | None
    worker: str | None
    progress: tuple[int, int]
    created_at: float
    started_at: float | None
    finished_at: float | None
    summary: dict[str, Any]
    error: str | None = None  # why it failed (one line; `show` has the traceback)
    pid: int | None = None  # its process while it runs
    cancel_requested: bool = False
    tags: tuple[str, ...] = ()
    note: str | None = None
    archived: bool = False

    def duration(self, now: float) -> float | None:
        """Seconds it ran (so far, for a running run); None before it started."""
        if self.started_at is None:
            return None
        return max(0.0, (self.finished_at or now) - self.started_at)

    def as_json(self) -> dict[str, Any]:
        """The shape of `workbench runs --json` (ISO times)."""
        out = asdict(self)
        for internal in ("worker", "pid", "cancel_requested"):
            out.pop(internal)
        out["progress"] = list(self.progress)
        out["tags"] = list(self.tags)
        out["status"] = str(self.status)
        for k in ("created_at", "started_at", "finished_at"):
            out[k] = iso(out[k])
        return out


def record_query():
    """The columns a RunRecord needs, its experiment's name joined: selected as plain rows, not ORM
    objects, and without the spec (only its `device`), so 10 000 runs read in tens of milliseconds."""
    return select(
        Run.id,
        Run.experiment_id,
        Experiment.name.label("experiment"),
        Run.name,
        Run.kind,
        Run.status,
        Run.priority,
        Run.attempt,
        Run.device,
        Run.worker_id,
        Run.progress_done,
        Run.progress_total,
        Run.created_at,
        Run.started_at,
        Run.finished_at,
        Run.heartbeat_at,
        Run.summary,
        Run.error,
        Run.pid,
        Run.cancel_requested,
        Run.tags,
        Run.note,
        Run.archived,
        Run.spec["device"].as_string().label("spec_device"),
    ).join(Experiment, Experiment.id == Run.experiment_id)


def run_record(row, now: float) -> RunRecord:
    """A RunRecord from a row of record_query(); `now` is Store.now(): staleness is judged on the
    database's clock."""
    stale = is_stale(row, now)
    return RunRecord(
        row.id,
        row.experiment,
        row.experiment_id,
        row.name,
        row.kind,
        RunStatus(row.status),
        _label(row.status, stale, row.spec_device),
        stale,
        row.priority,
        row.attempt,
        row.device,
        row.worker_id,
        (row.progress_done, row.progress_total),
        row.created_at,
        row.started_at,
        row.finished_at,
        dict(row.summary or {}),
        error=row.error,
        pid=row.pid,
        cancel_requested=bool(row.cancel_requested),
        tags=tuple(row.tags or ()),
        note=row.note,
        archived=bool(row.archived),
    )


def active_runs(store: Store) -> list[RunRecord]:
    """Queued and running runs, running first, then by priority and age: the queue screen's list."""
    q = (
        record_query()
        .where(Run.status.in_((RunStatus.QUEUED, RunStatus.RUNNING)))
        .order_by(Run.status.desc(), Run.priority.desc(), Run.id)
    )
    with store.read() as s:
        rows = s.execute(q).all()
    now = store.now()
    return [run_record(r, now) for r in rows]


@dataclass(frozen=True, slots=True)
class ArtifactRecord:
    """A run's image, file or checkpoint: `path` is relative to the store's home."""

    id: int
    run_id: int
    name: str
    kind: str  # image | file | checkpoint
    path: str
    step: int | None
    meta: dict[str, Any]
    created_at: float


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A line of a run's event log."""

    id: int
    run_id: int
    time: float
    level: str
    message: str


def tables(store: Store, run_id: int) -> dict[str, list[dict[str, Any]]]:
    with store.read() as s:
        return {
            t.name: t.rows
            for t in s.scalars(
                select(ResultTable).where(ResultTable.run_id == run_id).order_by(ResultTable.id)
            )
        }


def artifacts(store: Store, run_id: int, kind: str | None = None) -> list[ArtifactRecord]:
    """The run's artifacts (of one kind), oldest first."""
    q = select(
        Artifact.id,
        Artifact.run_id,
        Artifact.name,
        Artifact.kind,
        Artifact.path,
        Artifact.step,
        Artifact.meta,
        Artifact.created_at,
    ).where(Artifact.run_id == run_id)
    if kind:
        q = q.where(Artifact.kind == kind)
    with store.read() as s:
        return [ArtifactRecord(*row) for row in s.execute(q.order_by(Artifact.id))]


def events(store: Store, run_id: int, after_id: int = 0) -> list[EventRecord]:
    """The run's events with ids above `after_id`, oldest first."""
    with store.read() as s:
        rows = s.execute(
            select(RunEvent.id, RunEvent.run_id, RunEvent.time, RunEvent.level, RunEvent.message)
            .where(RunEvent.run_id == run_id, RunEvent.id > after_id)
            .order_by(RunEvent.id)
        )
        return [EventRecord(*row) for row in rows]


@dataclass(frozen=True, slots=True)
class Phase:
    """The step a run is in (RunContext.phase): its name and when it began (Unix seconds)."""

    name: str
    since: float


def phases(store: Store, run_ids: list[int]) -> dict[int, Phase]:
    """{run id: its latest phase} for the runs that said one (the level-`phase` events)."""
    if not run_ids:
        return {}
    rows = _newest_per_run(
        store, RunEvent, run_ids, RunEvent.level == PHASE_EVENT, RunEvent.message, RunEvent.time
    )
    return {r: Phase(message, t) for r, message, t in rows}


def _newest_per_run(store: Store, model, run_ids: list[int], condition, *columns) -> list:
    """(run id, *columns) of each run's newest row of `model` (by id) where `condition` holds."""
    newest = select(func.max(model.id)).where(model.run_id.in_(run_ids), condition).group_by(model.run_id)
    with store.read() as s:
        return s.execute(select(model.run_id, *columns).where(model.id.in_(newest))).all()


def metric_keys(store: Store, run_id: int) -> list[str]:
    with store.read() as s:
        return list(
            s.scalars(
                select(MetricPoint.key)
                .where(MetricPoint.run_id == run_id)
                .distinct()
                .order_by(MetricPoint.key)
            )
        )


def metric_series(store: Store, run_id: int, key: str) -> list[tuple[int, float]]:
    """(step, value) sorted by step; where a resumed run logged a step twice, the newest value wins."""
    newest = (
        select(func.max(MetricPoint.id))
        .where(MetricPoint.run_id == run_id, MetricPoint.key == key)
        .group_by(MetricPoint.step)
    )
    with store.read() as s:
        rows = s.execute(
            select(MetricPoint.step, MetricPoint.value)
            .where(MetricPoint.id.in_(newest))
            .order_by(MetricPoint.step)
        ).all()
    return [(int(a), float(b) if b is not None else float("nan")) for a, b in rows]


def latest_metrics(store: Store, run_ids: list[int], key: str) -> dict[int, tuple[int, float]]:
    """The newest (step, value) of `key` for each run: what `submit --wait` shows."""
    rows = _newest_per_run(
        store, MetricPoint, run_ids, MetricPoint.key == key, MetricPoint.step, MetricPoint.value
    )
    return {r: (st, v) for r, st, v in rows}


@dataclass(frozen=True, slots=True)
class RunDetail(RunRecord):
    """Everything about one run (`workbench show RUN`): its record, plus the spec it ran with, its
    scheduler job, traceback, result tables and artifacts (oldest first). Read once; never attached."""

    spec: dict[str, Any] = field(default_factory=dict)
    job_id: str | None = None
    traceback: str | None = None
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    artifacts: tuple[ArtifactRecord, ...] = ()
    phase: Phase | None = None  # the step it said it is in last (RunContext.phase)

    def as_json(self) -> dict[str, Any]:
        """The shape of `workbench show RUN --json` (ISO times)."""
        return {
            "id": self.id,
            "experiment": self.experiment,
            "experiment_id": self.experiment_id,
            "name": self.name,
            "kind": self.kind,
            "status": str(self.status),
            "label": self.label,
            "stale": self.stale,
            "spec": self.spec,
            "priority": self.priority,
            "attempt": self.attempt,
            "device": self.device,
            "worker": self.worker,
            "pid": self.pid,
            "job_id": self.job_id,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "progress": list(self.progress),
            "error": self.error,
            "traceback": self.traceback,
            "summary": self.summary,
            "tables": self.tables,
            "artifacts": [
                {"name": a.name, "kind": a.kind, "path": a.path, "step": a.step, "meta": a.meta}
                for a in self.artifacts
            ],
            "phase": None
            if self.phase is None
            else {"name": self.phase.name, "since": iso(self.phase.since)},
            "tags": list(self.tags),
            "note": self.note,
            "archived": self.archived,
        }


def show(store: Store, run_id: int) -> RunDetail:
    """The full record of a run; UnknownRun when there is none."""
    q = record_query().add_columns(Run.spec, Run.job_id, Run.traceback).where(Run.id == run_id)
    with store.read() as s:
        row = s.execute(q).first()
    if row is None:
        raise UnknownRun(run_id)
    record = run_record(row, store.now())
    return RunDetail(
        **{f.name: getattr(record, f.name) for f in fields(RunRecord)},
        spec=row.spec or {},
        job_id=row.job_id,
        traceback=row.traceback,
        tables=tables(store, run_id),
        artifacts=tuple(artifacts(store, run_id)),
        phase=phases(store, [run_id]).get(run_id),
    )

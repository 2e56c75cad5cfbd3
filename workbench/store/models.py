"""SQLAlchemy 2.0 typed models of everything workbench stores.

Times are Unix seconds (REAL): heartbeats compare with arithmetic, and sorting is trivial.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Boolean, Enum, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class RunStatus(StrEnum):
    """A run's life cycle: queued -> running -> one of the final states; retry queues a final run again.
    Members are strings, so they compare equal to the stored values."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # stopped by the worker's side (a kill, a lost lease, a full disk): resumable

    @property
    def final(self) -> bool:
        return self in FINAL_STATES


RUN_STATES = tuple(RunStatus)
FINAL_STATES = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.INTERRUPTED)
RETRYABLE_STATES = (RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.INTERRUPTED)
# Stored as its value in a VARCHAR(16), as before it was typed (no CHECK, no database enum: no upgrade);
# read back as a RunStatus.
STATUS_COLUMN = Enum(
    RunStatus,
    native_enum=False,
    create_constraint=False,
    length=16,
    values_callable=lambda statuses: [s.value for s in statuses],
    validate_strings=True,
)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Experiment(Base):
    """One submitted spec; a sweep expands into several runs under it."""

    __tablename__ = "experiments"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(64))
    spec_text: Mapped[str] = mapped_column(Text)  # the YAML as the user wrote it
    sweep: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[float] = mapped_column(Float)
    runs: Mapped[list[Run]] = relationship(back_populates="experiment", cascade="all, delete-orphan")


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(64), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column()  # fully resolved: preset applied, sweep values set
    status: Mapped[RunStatus] = mapped_column(STATUS_COLUMN, default=RunStatus.QUEUED)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # The worker is stopping: checkpoint and end interrupted (how a run on Ray or Slurm hears it).
    stop_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    worker_id: Mapped[str | None] = mapped_column(String(100), default=None)
    device: Mapped[str | None] = mapped_column(String(32), default=None)
    pid: Mapped[int | None] = mapped_column(Integer, default=None)  # the run's child process
    job_id: Mapped[str | None] = mapped_column(String(100), default=None)  # its Ray task or Slurm job
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, default=None)
    finished_at: Mapped[float | None] = mapped_column(Float, default=None)
    heartbeat_at: Mapped[float | None] = mapped_column(Float, default=None)
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    traceback: Mapped[str | None] = mapped_column(Text, default=None)
    tags: Mapped[list[Any]] = mapped_column(default=list)  # the user's labels, sorted
    note: Mapped[str | None] = mapped_column(Text, default=None)  # the user's words about the run
    archived: Mapped[bool] = mapped_column(Boolean, default=False)  # hidden from lists, never deleted
    experiment: Mapped[Experiment] = relationship(back_populates="runs")

    __table_args__ = (Index("ix_runs_claim", "status", "priority", "id"),)


class MetricPoint(Base):
    """One scalar at one step. A resumed run may log a step again; readers keep the newest row."""

    __tablename__ = "metric_points"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(100))
    step: Mapped[int] = mapped_column(Integer)
    value: Mapped[float | None] = mapped_column(Float)
    wall_time: Mapped[float] = mapped_column(Float)
    attempt: Mapped[int] = mapped_column(Integer, default=1)

    __table_args__ = (
        Index("ix_metric_run_key_step", "run_id", "key", "step"),
        Index("ix_metric_run_id", "run_id", "id"),
    )


class Artifact(Base):
    __tablename__ = "artifacts"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(32))  # image | checkpoint | file
    path: Mapped[str] = mapped_column(String(500))  # relative to $WORKBENCH_HOME
    step: Mapped[int | None] = mapped_column(Integer, default=None)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_artifacts_run_name", "run_id", "name"),)


class ResultTable(Base):
    __tablename__ = "result_tables"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    rows: Mapped[list[Any]] = mapped_column()
    created_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (UniqueConstraint("run_id", "name"),)


PHASE_EVENT = "phase"  # the level of the event that says a run entered a phase (RunContext.phase)


class RunEvent(Base):
    """Life-cycle events and log lines of a run (level info, warning, error, or PHASE_EVENT)."""

    __tablename__ = "run_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    time: Mapped[float] = mapped_column(Float)
    level: Mapped[str] = mapped_column(String(16), default="info")
    message: Mapped[str] = mapped_column(Text)


class Worker(Base):
    __tablename__ = "workers"
    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    devices: Mapped[list[Any]] = mapped_column()
    backend: Mapped[str] = mapped_column(String(16), default="local")  # local | ray | slurm
    address: Mapped[str | None] = mapped_column(String(300), default=None)  # Ray address, Slurm partition
    started_at: Mapped[float] = mapped_column(Float)
    heartbeat_at: Mapped[float] = mapped_column(Float)
    stopped_at: Mapped[float | None] = mapped_column(Float, default=None)
    # Why its free slots start nothing, when none can: `device gpu-0 held by worker PID 4242 on this host`.
    waiting: Mapped[str | None] = mapped_column(Text, default=None)


class StoreMeta(Base):
    """Facts about the database itself: its schema version (see store.schema)."""

    __tablename__ = "store_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)

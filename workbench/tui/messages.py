"""Every message the TUI's screens and widgets exchange, typed, in one place.

Live screens read the store in a thread worker and post one of these to themselves; the handler
(`on_<message name>`, on the UI thread) applies it. Nothing else crosses from a thread to the UI.
Each is a dataclass (Textual's Message sets itself up in `__post_init__`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textual.message import Message

from workbench.store.queries import ArtifactRecord, EventRecord, Phase, RunDetail, RunRecord
from workbench.store.queue import WorkerRecord


@dataclass
class StoreUnreadable(Message):
    """A read failed (the database locked, or gone): shown, and tried again at the next poll."""

    error: str


@dataclass
class RunsPolled(Message):
    """Runs that are new or changed since the last poll, the ids of runs that were deleted, and whether
    every run has been read (the first poll of a big store reads the newest page only)."""

    changed: list[RunRecord]
    gone: set[int]
    complete: bool = True
    specs: dict[int, dict[str, Any]] = field(default_factory=dict)  # of runs new to the screen
    waiting: str | None = None  # why queued runs wait (queue.queued_because)
    phases: dict[int, Phase] = field(default_factory=dict)  # of the running runs that said one


@dataclass
class RunPolled(Message):
    """One run's record (`show`), its image artifacts and tables, its events since the last poll, and
    whether new metric points arrived (they are in the screen's MetricFeed)."""

    record: RunDetail
    images: list[ArtifactRecord]
    tables: dict[str, list[dict]]
    new_events: list[EventRecord]
    curves_changed: bool
    waiting: str | None = None  # why it waits, when it is queued (queue.queued_because)


@dataclass
class RunGone(Message):
    """The run shown was deleted underneath the screen."""

    run_id: int


@dataclass
class RunsCompared(Message):
    """The records (`show`) of the runs compared, their images, and whether new metric points arrived."""

    records: dict[int, RunDetail]
    images: dict[int, list[ArtifactRecord]]
    curves_changed: bool


@dataclass
class QueuePolled(Message):
    """Live workers and the queued and running runs."""

    workers: list[WorkerRecord]
    runs: list[RunRecord]
    now: float


@dataclass
class SpecChecked(Message):
    """The editor's spec validated: its problems (one per line, naming field and line), or `ok` text."""

    problems: list[str]
    ok: str | None


@dataclass
class JobSubmitted(Message):
    """The editor's job reached the queue (its experiment and runs), or the store refused it (`error`)."""

    experiment_id: int | None
    run_ids: list[int]
    error: str | None = None


@dataclass
class Exported(Message):
    """An export finished: the files written, or the error that stopped it."""

    written: list
    error: str | None = None


@dataclass
class Notice(Message):
    """A line for the user from a background task (a queue write done, or refused)."""

    text: str
    severity: str = "information"

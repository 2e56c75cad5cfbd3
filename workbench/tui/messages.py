"""Every message the TUI's screens and widgets exchange, typed, in one place.

Live screens read the store in a thread worker and post one of these to themselves; the handler
(`on_<message name>`, on the UI thread) applies it. Nothing else crosses from a thread to the UI.
"""

from __future__ import annotations

from typing import Any

from textual.message import Message

from workbench.store.queries import ArtifactRecord, EventRecord, RunRecord
from workbench.store.queue import WorkerRecord


class StoreUnreadable(Message):
    """A read failed (the database locked, or gone): shown, and tried again at the next poll."""

    def __init__(self, error: str):
        self.error = error
        super().__init__()


class RunsPolled(Message):
    """Runs that are new or changed since the last poll, the ids of runs that were deleted, and whether
    every run has been read (the first poll of a big store reads the newest page only)."""

    def __init__(self, changed: list[RunRecord], gone: set[int], complete: bool = True):
        self.changed, self.gone, self.complete = changed, gone, complete
        super().__init__()


class RunPolled(Message):
    """One run's record (`show`), its image artifacts and tables, its events since the last poll, and
    whether new metric points arrived (they are in the screen's MetricFeed)."""

    def __init__(
        self,
        record: dict[str, Any],
        images: list[ArtifactRecord],
        tables: dict[str, list[dict]],
        new_events: list[EventRecord],
        curves_changed: bool,
    ):
        self.record, self.images, self.tables = record, images, tables
        self.new_events, self.curves_changed = new_events, curves_changed
        super().__init__()


class RunGone(Message):
    """The run shown was deleted underneath the screen."""

    def __init__(self, run_id: int):
        self.run_id = run_id
        super().__init__()


class RunsCompared(Message):
    """The records (`show`) of the runs compared, their images, and whether new metric points arrived."""

    def __init__(
        self,
        records: dict[int, dict[str, Any]],
        images: dict[int, list[ArtifactRecord]],
        curves_changed: bool,
    ):
        self.records, self.images, self.curves_changed = records, images, curves_changed
        super().__init__()


class QueuePolled(Message):
    """Live workers and the queued and running runs."""

    def __init__(self, workers: list[WorkerRecord], runs: list[RunRecord], now: float):
        self.workers, self.runs, self.now = workers, runs, now
        super().__init__()


class SpecChecked(Message):
    """The editor's spec validated: its problems (one per line, naming field and line), or `ok` text."""

    def __init__(self, problems: list[str], ok: str | None):
        self.problems, self.ok = problems, ok
        super().__init__()


class Exported(Message):
    """An export finished: the files written, or the error that stopped it."""

    def __init__(self, written: list, error: str | None = None):
        self.written, self.error = written, error
        super().__init__()


class Notice(Message):
    """A line for the user from a background task (a queue write done, or refused)."""

    def __init__(self, text: str, severity: str = "information"):
        self.text, self.severity = text, severity
        super().__init__()

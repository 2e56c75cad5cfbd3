"""Run detail: spec and summary, live curves, image artifacts with step navigation, result tables,
and the event log (with the error and traceback of a failed run). Keys 1-5 switch tabs."""

from __future__ import annotations

import time

import yaml
from rich.console import Group
from rich.markup import escape
from rich.syntax import Syntax
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Footer, Header, Static, TabbedContent, TabPane

from workbench.jobs.resources import PREFIX
from workbench.report import cell, flatten, readable, resources_line, shown_status, status_line
from workbench.store import queue
from workbench.store.feeds import MetricFeed
from workbench.store.models import FINAL_STATES, RunStatus
from workbench.store.queries import RunDetail, UnknownRun, events, iso, show
from workbench.text import printable
from workbench.tui.components import STATUS_STYLE, CurvesView, ImagesView, Picture, ResultTables, plain
from workbench.tui.live import RunViewsScreen, view_bindings
from workbench.tui.messages import RunGone, RunPolled

TABS = ("overview", "curves", "images", "tables", "log")


class RunDetailScreen(RunViewsScreen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        *view_bindings(TABS),
        Binding("e", "export", "Export"),
        Binding("x", "cancel_run", "Cancel"),
        Binding("r", "retry_run", "Retry"),
        Binding("t", "tags", "Tags"),
        Binding("N", "note", "Note"),
        Binding("a", "archive", "Archive"),
    ]

    def __init__(self, run_id: int):
        super().__init__()
        self.run_id = run_id
        self.metrics = MetricFeed(None, run_id)
        self.last_event_id = 0
        self.status = ""
        self._overview: tuple | None = None  # what the Overview shows now
        self.gone = False
        self.record: RunDetail | None = None  # as the last poll read it
        self.event_lines: list[Text] = []
        self._seen: tuple | None = None  # what the last posted poll held (read() runs one at a time)

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(id="tabs"):
            with TabPane("Overview", id="tab-overview"), VerticalScroll():
                yield Static("", id="phase")
                yield Static("", id="summary")
                yield Static("", id="spec")
            with TabPane("Curves", id="tab-curves"):
                yield CurvesView({"": self.metrics}, title=lambda m: f"{m} (run {self.run_id})", id="curves")
            with TabPane("Images", id="tab-images"):
                yield ImagesView(self.app.image_mode, id="images")
            with TabPane("Tables", id="tab-tables"):
                yield ResultTables(id="tables")
            with TabPane("Log", id="tab-log"), VerticalScroll(id="events-scroll"):
                yield Static("", id="events")
        yield Footer()

    def on_mount(self) -> None:
        self.metrics.store = self.app.store

    # --- polling ---------------------------------------------------------------------------------

    def read(self) -> RunPolled | RunGone | None:
        if self.gone:
            return None
        store = self.app.store
        try:
            rec = show(store, self.run_id)
        except UnknownRun:
            return RunGone(self.run_id)
        polled = RunPolled(
            rec,
            [a for a in rec.artifacts if a.kind == "image"],
            rec.tables,
            events(store, self.run_id, self.last_event_id),
            self.metrics.poll(),
            queue.queued_because(queue.live_workers(store)) if rec.status == RunStatus.QUEUED else None,
        )
        # An artifact rewritten gets a new id.
        seen = (rec, [a.id for a in polled.images], polled.tables, polled.waiting)
        if seen == self._seen and not polled.new_events and not polled.curves_changed:
            return None  # a finished run: nothing for the UI thread to do
        self._seen = seen
        return polled

    def on_run_gone(self, message: RunGone) -> None:
        if not self.gone:
            self.gone = True
            self.notify(f"run {message.run_id} no longer exists", severity="error")

    def on_run_polled(self, message: RunPolled) -> None:
        rec = self.record = message.record
        running = rec.status == RunStatus.RUNNING
        now = self.query_one("#phase", Static)  # the step it is in, its progress, the time left, its use
        lines = []
        if running and rec.phase is not None:
            lines.append(f"[b]now[/] {escape(status_line(rec.progress, rec.phase, time.time()))}")
        if running and (use := resources_line(self.metrics.latest(PREFIX))):
            lines.append(f"[b]uses[/] {escape(use)}")
        now.display = bool(lines)
        now.update("\n".join(lines))
        shown = (rec.status, rec.name, rec.tags, rec.note, rec.archived, rec.error, message.waiting)
        if shown != self._overview:  # its state, or what the user wrote on it, changed
            self.status, self._overview = rec.status, shown
            self.show_overview(rec, message.waiting)
        # Two overlapping polls (an exclusive worker's thread is not stopped) can read the same events.
        new_events = [e for e in message.new_events if e.id > self.last_event_id]
        if new_events:
            for e in new_events:
                style = {"error": "red", "warning": "yellow"}.get(e.level, "")
                self.event_lines.append(plain(f"{_clock(e.time)} {e.message}", style=style))
            self.last_event_id = new_events[-1].id
            # Rendered as one renderable so it re-wraps with the pane instead of at write time.
            parts = [Text("\n").join(self.event_lines)]
            if rec.status == RunStatus.FAILED and rec.traceback:
                parts.append(Syntax(printable(rec.traceback, keep="\n"), "pytb", word_wrap=True))
            self.query_one("#events", Static).update(Group(*parts))
        if message.curves_changed:
            self.query_one(CurvesView).refresh_curves()
        home = self.app.store.home
        self.query_one(ImagesView).pictures = [
            Picture(a.name, a.step, home / a.path, a.id, a.meta) for a in message.images
        ]
        self.query_one(ResultTables).tables = message.tables

    def show_overview(self, rec: RunDetail, waiting: str | None = None) -> None:
        style = STATUS_STYLE.get(rec.status, "")
        self.sub_title = printable(f"run {rec.id} {rec.name} ({rec.kind}): {rec.label}")
        status = escape(printable(shown_status(rec, waiting)))
        lines = [
            f"[b]status[/] [{style}]{status}[/]   attempt {rec.attempt}   device {rec.device or '-'}",
            f"[b]created[/] {iso(rec.created_at)}   [b]started[/] {iso(rec.started_at) or '-'}   "
            f"[b]finished[/] {iso(rec.finished_at) or '-'}",
        ]
        if rec.error:
            lines.append(f"[red b]error[/] [red]{escape(printable(rec.error))}[/]")
        if rec.tags or rec.archived:
            lines.append(
                f"[b]tags[/] {escape(printable(' '.join(rec.tags)) or '-')}"
                + ("   (archived)" if rec.archived else "")
            )
        if rec.note:
            lines.append(f"[b]note[/] {escape(printable(rec.note))}")
        for k, v in readable(flatten(rec.summary)).items():  # estimates with their intervals and n
            lines.append(f"  [b]{escape(printable(k))}[/] {escape(cell(v))}")
        self.query_one("#summary", Static).update("\n".join(lines))
        spec_yaml = yaml.safe_dump(rec.spec, sort_keys=False)
        self.query_one("#spec", Static).update(Syntax(spec_yaml, "yaml", line_numbers=False, word_wrap=True))

    # --- actions ---------------------------------------------------------------------------------

    def action_export(self) -> None:
        self.app.open_export([self.run_id])

    def action_cancel_run(self) -> None:
        if self.app.confirmed(f"cancel run {self.run_id}"):
            self.app.queue_op(queue.request_cancel, self.run_id, f"run {self.run_id}: cancel requested")

    def action_retry_run(self) -> None:
        self.app.queue_op(queue.retry, self.run_id, f"run {self.run_id}: queued again")

    def action_tags(self) -> None:
        self.app.edit_tags([self.run_id])

    def action_note(self) -> None:
        self.app.edit_note(self.run_id, self.record.note if self.record else None)

    def action_archive(self) -> None:
        """Archive a finished run (hidden from the runs list, never deleted), or bring it back."""
        if self.record is None or self.record.status not in FINAL_STATES:
            self.notify("only a finished run can be archived", severity="warning")
            return
        self.app.set_archived([self.run_id], not self.record.archived)


def _clock(t: float) -> str:
    return time.strftime("%m-%d %H:%M:%S", time.gmtime(t))

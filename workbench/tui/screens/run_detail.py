"""Run detail: spec and summary, live curves, image artifacts with step navigation, result tables,
and the event log (with the error and traceback of a failed run)."""

from __future__ import annotations

from dataclasses import dataclass

import yaml
from rich.console import Group
from rich.markup import escape
from rich.syntax import Syntax
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import (
    DataTable,
    Footer,
    Header,
    OptionList,
    Select,
    Static,
    TabbedContent,
    TabPane,
)

from store import queue
from store.export import cell, flatten, readable, readable_rows
from store.models import Artifact
from store.queries import UnknownRun, artifacts, events, show, tables
from workbench.tui.feeds import MetricFeed
from workbench.tui.screens.runs import run_queue_op
from workbench.tui.widgets import STATUS_STYLE, ArtifactImage, CurvePlot


@dataclass
class Snapshot:
    record: dict
    images: list[Artifact]
    tables: dict[str, list[dict]]
    new_events: list
    curves_changed: bool


class RunDetailScreen(Screen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("l", "toggle_log", "Log y"),
        Binding("left_square_bracket", "image_step(-1)", "Prev step", key_display="["),
        Binding("right_square_bracket", "image_step(1)", "Next step", key_display="]"),
        Binding("e", "export", "Export"),
        Binding("x", "cancel_run", "Cancel"),
        Binding("r", "retry_run", "Retry"),
    ]

    def __init__(self, run_id: int):
        super().__init__()
        self.run_id = run_id
        self.metrics = MetricFeed(None, run_id)
        self.last_event_id = 0
        self.log_y = False
        self.metric: str | None = None
        self.images: list[Artifact] = []
        self.image_name: str | None = None
        self.image_index = -1  # index into the steps of image_name; -1 = latest
        self.tables: dict[str, list[dict]] = {}
        self.table_name: str | None = None
        self.status = ""
        self.gone = False
        self.event_lines: list[Text] = []

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(id="tabs"):
            with TabPane("Overview", id="tab-overview"), VerticalScroll():
                yield Static("", id="summary")
                yield Static("", id="spec")
            with TabPane("Curves", id="tab-curves"), Vertical():
                with Horizontal(id="curve-controls"):
                    yield Select([], id="metric", prompt="metric", allow_blank=True)
                yield CurvePlot(id="curve")
            with TabPane("Images", id="tab-images"), Horizontal():
                yield OptionList(id="image-list")
                yield ArtifactImage(self.app.image_mode, id="image")
            with TabPane("Tables", id="tab-tables"), Vertical():
                with Horizontal(id="table-controls"):
                    yield Select([], id="table-select", prompt="result table", allow_blank=True)
                yield DataTable(id="result-table", zebra_stripes=True)
            with TabPane("Log", id="tab-log"), VerticalScroll(id="events-scroll"):
                yield Static("", id="events")
        yield Footer()

    def on_mount(self) -> None:
        self.metrics.store = self.app.store
        self.poll()
        self.set_interval(self.app.poll_interval, self.poll)

    # --- polling ---------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="detail-poll", exit_on_error=False)
    def poll(self) -> None:
        store = self.app.store
        try:
            rec = show(store, self.run_id)
            snap = Snapshot(rec, artifacts(store, self.run_id, "image"), tables(store, self.run_id),
                            events(store, self.run_id, self.last_event_id), self.metrics.poll())
        except UnknownRun:
            if not self.gone:
                self.gone = True
                self.app.call_from_thread(self.notify, f"run {self.run_id} no longer exists", severity="error")
            return
        except Exception as e:  # noqa: BLE001 - a locked database: try again at the next poll
            self.app.call_from_thread(self.notify, f"store not readable: {e}", severity="warning", timeout=3, markup=False)
            return
        self.app.call_from_thread(self.apply, snap)

    def apply(self, snap: Snapshot) -> None:
        rec = snap.record
        if rec["status"] != self.status:
            self.status = rec["status"]
            self.show_overview(rec)
        # Two overlapping polls (an exclusive worker's thread is not stopped) can read the same events.
        new_events = [e for e in snap.new_events if e.id > self.last_event_id]
        if new_events:
            for e in new_events:
                style = {"error": "red", "warning": "yellow"}.get(e.level, "")
                self.event_lines.append(Text(f"{_clock(e.time)} {e.message}", style=style))
            self.last_event_id = new_events[-1].id
            # Rendered as one renderable so it re-wraps with the pane instead of at write time.
            parts = [Text("\n").join(self.event_lines)]
            if rec["status"] == "failed" and rec["traceback"]:
                parts.append(Syntax(rec["traceback"], "pytb", word_wrap=True))
            self.query_one("#events", Static).update(Group(*parts))
        if snap.curves_changed:
            self.update_metric_options()
            self.draw_curve()
        if [(a.id, a.path) for a in snap.images] != [(a.id, a.path) for a in self.images]:
            self.images = snap.images
            self.update_image_list()
        if snap.tables != self.tables:
            self.tables = snap.tables
            self.update_tables()

    # --- overview --------------------------------------------------------------------------------

    def show_overview(self, rec: dict) -> None:
        style = STATUS_STYLE.get(rec["status"], "")
        self.sub_title = f"run {rec['id']} {rec['name']} ({rec['kind']}): {rec['label']}"
        lines = [f"[b]status[/] [{style}]{rec['label']}[/]   attempt {rec['attempt']}   device {rec['device'] or '-'}",
                 f"[b]created[/] {rec['created_at']}   [b]started[/] {rec['started_at'] or '-'}   "
                 f"[b]finished[/] {rec['finished_at'] or '-'}"]
        if rec["error"]:
            lines.append(f"[red b]error[/] [red]{escape(rec['error'])}[/]")
        for k, v in readable(flatten(rec["summary"])).items():  # estimates with their intervals and n
            lines.append(f"  [b]{escape(k)}[/] {escape(cell(v))}")
        self.query_one("#summary", Static).update("\n".join(lines))
        spec_yaml = yaml.safe_dump(rec["spec"], sort_keys=False)
        self.query_one("#spec", Static).update(Syntax(spec_yaml, "yaml", line_numbers=False, word_wrap=True))

    # --- curves ----------------------------------------------------------------------------------

    def update_metric_options(self) -> None:
        keys = sorted(self.metrics.series)
        select = self.query_one("#metric", Select)
        if [k for k, _ in getattr(self, "_metric_options", [])] != keys:
            self._metric_options = [(k, k) for k in keys]
            select.set_options(self._metric_options)
            if self.metric is None and keys:
                self.metric = "loss" if "loss" in keys else keys[0]
            if self.metric in keys:
                select.value = self.metric

    @on(Select.Changed, "#metric")
    def metric_changed(self, event: Select.Changed) -> None:
        if isinstance(event.value, str) and event.value != self.metric:
            self.metric = event.value
            self.draw_curve()

    def draw_curve(self) -> None:
        if self.metric is None:
            return
        metric = self.metric
        self.query_one(CurvePlot).show(lambda n: {metric: self.metrics.xy(metric, n)},
                                       f"{metric} (run {self.run_id})" + ("  log y" if self.log_y else ""),
                                       self.log_y)

    def action_toggle_log(self) -> None:
        self.log_y = not self.log_y
        self.draw_curve()

    # --- images ----------------------------------------------------------------------------------

    def image_names(self) -> list[str]:
        return list(dict.fromkeys(a.name for a in self.images))

    def steps_of(self, name: str) -> list[Artifact]:
        return sorted((a for a in self.images if a.name == name), key=lambda a: (a.step is None, a.step or 0))

    def update_image_list(self) -> None:
        options = self.query_one("#image-list", OptionList)
        names = self.image_names()
        options.clear_options()
        options.add_options(names)
        if self.image_name not in names and names:
            self.image_name = names[0]
        if self.image_name:
            options.highlighted = names.index(self.image_name)
        self.show_image()

    @on(OptionList.OptionHighlighted, "#image-list")
    def image_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        name = str(event.option.prompt)
        if name != self.image_name:
            self.image_name, self.image_index = name, -1
            self.show_image()

    def show_image(self) -> None:
        widget = self.query_one("#image", ArtifactImage)
        if not self.image_name:
            widget.show(None, "no images yet")
            return
        steps = self.steps_of(self.image_name)
        index = self.image_index % len(steps)
        art = steps[index]
        where = f"step {art.step}" if art.step is not None else "no step"
        widget.show(self.app.store.home / art.path,
                    f"{art.name}  {where}  ({index + 1}/{len(steps)}; [ ] to move)  {art.path}")

    def action_image_step(self, delta: int) -> None:
        if self.image_name:
            n = len(self.steps_of(self.image_name))
            self.image_index = max(0, min(n - 1, (self.image_index % n) + delta))
            self.show_image()

    # --- tables ----------------------------------------------------------------------------------

    def update_tables(self) -> None:
        select = self.query_one("#table-select", Select)
        select.set_options([(n, n) for n in self.tables])
        if self.table_name not in self.tables:
            self.table_name = next(iter(self.tables), None)
        if self.table_name:
            select.value = self.table_name
        self.fill_table()

    @on(Select.Changed, "#table-select")
    def table_changed(self, event: Select.Changed) -> None:
        if isinstance(event.value, str) and event.value != self.table_name:
            self.table_name = event.value
            self.fill_table()

    def fill_table(self) -> None:
        fill_data_table(self.query_one("#result-table", DataTable), self.tables.get(self.table_name or "", []))

    # --- actions ---------------------------------------------------------------------------------

    def action_export(self) -> None:
        from workbench.tui.screens.export import ExportScreen

        self.app.push_screen(ExportScreen([self.run_id]))

    def action_cancel_run(self) -> None:
        run_queue_op(self, queue.request_cancel, self.run_id, f"run {self.run_id}: cancel requested")

    def action_retry_run(self) -> None:
        run_queue_op(self, queue.retry, self.run_id, f"run {self.run_id}: queued again")


def fill_data_table(table: DataTable, rows: list[dict]) -> None:
    table.clear(columns=True)
    rows = readable_rows(rows)
    cols = list(dict.fromkeys(k for r in rows for k in r))
    for c in cols:
        table.add_column(c, key=c)
    for r in rows:
        table.add_row(*(cell(r.get(c)) for c in cols))


def _clock(t: float) -> str:
    import time

    return time.strftime("%m-%d %H:%M:%S", time.gmtime(t))

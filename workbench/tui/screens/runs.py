"""Runs browser (home): every run, filtered, sorted, grouped by experiment, updated live."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.reactive import var
from textual.widgets import DataTable, Footer, Header, Input, Static

from workbench.jobs.kinds import headline_keys
from workbench.report import headline
from workbench.store import queue
from workbench.store.feeds import RunsFeed
from workbench.store.models import RunStatus
from workbench.store.queries import RunRecord
from workbench.tui.components import STATUS_STYLE, Table, plain, progress_text
from workbench.tui.live import LiveScreen
from workbench.tui.messages import RunsPolled

COLUMNS = ("", "id", "experiment", "name", "kind", "status", "progress", "started", "duration", "headline")
SORTABLE = COLUMNS[1:]
NEWEST_FIRST = ("id", "started")  # the columns a first sort puts in descending order
# Rows added at a time: a DataTable measures every cell it is given, so a filter keystroke costs in
# proportion. The next page follows when the cursor comes near the end, or with `m`.
PAGE = 60
# The first key after a pause applies at once; keys that follow within FILTER_DELAY seconds wait until the
# typing pauses that long, so a fast typist (or a paste) costs one render, not one a key.
FILTER_DELAY = 0.05


def parse_filter(text: str) -> tuple[dict[str, str], str]:
    """`status:running kind:ddpm tag:best swiss` -> ({status: running, kind: ddpm, tag: best}, "swiss");
    `archived:yes` shows the archived runs (hidden otherwise)."""
    fields, words = {}, []
    for token in text.split():
        key, sep, value = token.partition(":")
        if sep and key in ("status", "kind", "exp", "tag", "archived"):
            fields[key] = value
        else:
            words.append(token.lower())
    return fields, " ".join(words)


def _started(r: RunRecord) -> str:
    return datetime.fromtimestamp(r.started_at, UTC).strftime("%m-%d %H:%M") if r.started_at else ""


def _duration(r: RunRecord, now: float) -> str:
    secs = r.duration(now)
    if secs is None:
        return ""
    secs = int(secs)
    return f"{secs // 3600}:{secs % 3600 // 60:02d}:{secs % 60:02d}"


def _headline(r: RunRecord) -> str:
    return headline(r.summary, headline_keys(r.kind))


def _headline_value(r: RunRecord) -> tuple:
    """Sorts by the headline's key, then its number (not its text: 10.5 after 9.8)."""
    text = _headline(r)
    key = text.split("=", 1)[0]
    value = r.summary.get(key)
    return (not text, key, value if isinstance(value, int | float) else 0.0)


class RunsScreen(LiveScreen):
    """The view's state is five reactive vars, each with one watcher that redraws the table: sort column
    and direction, grouping, the filter text (debounced) and how many rows are shown. Vars, not
    reactives: a reactive would repaint the whole screen on each change, on top of the table's redraw."""

    sort_column: var[str] = var("id", init=False)
    sort_reverse: var[bool] = var(True, init=False)  # newest first
    grouped: var[bool] = var(False, init=False)
    filter_text: var[str] = var("", init=False)
    row_limit: var[int] = var(lambda: PAGE, init=False)  # read at start (tests set PAGE)

    BINDINGS = [
        Binding("enter", "open", "Open", show=False),
        Binding("space", "mark", "Mark"),
        Binding("c", "compare", "Compare"),
        Binding("e", "export", "Export"),
        Binding("x", "cancel_run", "Cancel"),
        Binding("r", "retry_run", "Retry"),
        Binding("s", "sort", "Sort"),
        Binding("g", "group", "Group"),
        Binding("m", "more", "More rows", show=False),
        Binding("slash", "focus_filter", "Filter", key_display="/"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    def __init__(self):
        super().__init__()
        self.rows: dict[int, RunRecord] = {}
        self.searched: dict[int, str] = {}  # id -> the lower-cased text the filter's words search
        self.marked: set[int] = set()
        self.feed: RunsFeed | None = None
        self._filter_timer = None
        self._last_filter_key = 0.0
        self.more_to_show = False
        self.all_read = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(
            placeholder="filter: text  status:running  kind:ddpm  exp:quickstart  tag:best", id="filter"
        )
        table = Table(id="runs-table", cursor_type="row", zebra_stripes=True)
        for col in COLUMNS:
            table.add_column(col, key=col or "mark")
        yield table
        yield Static("", id="runs-count")
        yield Footer()

    def on_mount(self) -> None:
        self.feed = RunsFeed(self.app.store, first_page=PAGE)  # the newest page first: usable at once
        self.show_sort()
        self.query_one(DataTable).focus()

    # --- data ------------------------------------------------------------------------------------

    def read(self) -> RunsPolled | None:
        changed, gone = self.feed.poll()
        running = any(r.status == RunStatus.RUNNING for r in self.rows.values())  # durations move
        return RunsPolled(changed, gone, self.feed.complete) if changed or gone or running else None

    def on_runs_polled(self, message: RunsPolled) -> None:
        for r in message.changed:
            self.rows[r.id] = r
            self.searched[r.id] = f"{r.id} {r.experiment} {r.name} {r.kind} {' '.join(r.tags)}".lower()
        for rid in message.gone:
            self.rows.pop(rid, None)
            self.searched.pop(rid, None)
            self.marked.discard(rid)
        self.all_read = message.complete
        self.render_table()
        if not message.complete:
            self.call_after_refresh(self.poll)  # the older runs once this page is on screen, not next tick

    def visible(self) -> list[RunRecord]:
        fields, words = parse_filter(self.filter_text)
        exp = fields.get("exp", "").lower()
        rows = [
            r
            for r in self.rows.values()
            if (not fields.get("status") or r.status == fields["status"])
            and (not fields.get("kind") or r.kind == fields["kind"])
            and (not exp or exp in r.experiment.lower())
            and (not fields.get("tag") or fields["tag"] in r.tags)
            and (r.archived == (fields.get("archived", "no") in ("yes", "true", "1")))
            and (not words or words in self.searched[r.id])
        ]
        now = time.time()
        key = {
            "id": lambda r: r.id,
            "started": lambda r: r.started_at or 0.0,
            "progress": lambda r: (r.progress[0] / r.progress[1]) if r.progress[1] else 0.0,
            "duration": lambda r: r.duration(now) or 0.0,
            "headline": _headline_value,
            "status": lambda r: r.label,
            "experiment": lambda r: r.experiment.lower(),
        }.get(self.sort_column, lambda r: str(getattr(r, self.sort_column)))
        rows.sort(key=key, reverse=self.sort_reverse)
        if self.grouped:
            rows.sort(key=lambda r: r.experiment_id)
        return rows

    def render_table(self) -> None:
        table = self.query_one(DataTable)
        now = time.time()
        matching = self.visible()
        rows = matching[: self.row_limit]
        self.more_to_show = len(matching) > len(rows)
        self.query_one("#runs-count", Static).update(
            (
                f"{len(matching):,} of {len(self.rows):,} runs"
                if len(rows) == len(matching)
                else f"showing {len(rows):,} of {len(matching):,} runs: narrow them with the filter, or scroll on"
            )
            + ("" if self.all_read else "  (reading the older runs ...)")
        )
        per_experiment = Counter(r.experiment_id for r in rows)
        wanted: list[tuple[str, tuple]] = []
        last_exp = None
        for r in rows:
            if self.grouped and r.experiment_id != last_exp:
                last_exp = r.experiment_id
                n = per_experiment[last_exp]
                wanted.append(
                    (
                        f"exp-{last_exp}",
                        (
                            "▾",
                            "",
                            plain(r.experiment, style="bold"),
                            Text(f"{n} run(s)", style="dim"),
                            "",
                            "",
                            "",
                            "",
                            "",
                            "",
                        ),
                    )
                )
            wanted.append(
                (
                    str(r.id),
                    (
                        "●" if r.id in self.marked else "",
                        str(r.id),
                        r.experiment,
                        r.name,
                        r.kind,
                        Text(r.label, style=STATUS_STYLE.get(r.status, "")),
                        progress_text(*r.progress),
                        _started(r),
                        _duration(r, now),
                        _headline(r),
                    ),
                )
            )
        # Text, not str: a DataTable parses str cells as markup (a name like "lr=[1e-3]" lost its brackets).
        wanted = [(key, tuple(plain(c) if isinstance(c, str) else c for c in cells)) for key, cells in wanted]
        current = [str(k.value) for k in table.rows]
        if current == [
            k for k, _ in wanted[: len(current)]
        ]:  # the same rows first: update them, add the rest
            for key, cells in wanted[: len(current)]:
                for col, value in zip(COLUMNS, cells, strict=True):
                    if table.get_cell(key, col or "mark") != value:
                        table.update_cell(key, col or "mark", value)
            for key, cells in wanted[len(current) :]:
                table.add_row(*cells, key=key)
            return
        cursor_key = current[table.cursor_row] if current and 0 <= table.cursor_row < len(current) else None
        table.clear()
        for key, cells in wanted:
            table.add_row(*cells, key=key)
        if cursor_key in [k for k, _ in wanted]:
            table.move_cursor(row=[k for k, _ in wanted].index(cursor_key))

    def current_run(self) -> int | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return int(key) if key and key.isdigit() else None

    # --- the view's state ------------------------------------------------------------------------

    def watch_sort_column(self) -> None:
        self.show_sort()
        self.render_table()

    def watch_sort_reverse(self) -> None:
        self.show_sort()
        self.render_table()

    def show_sort(self) -> None:
        """An arrow on the sorted column's header: ▲ ascending, ▼ descending."""
        arrow = " ▼" if self.sort_reverse else " ▲"
        self.query_one(Table).relabel({c: c + (arrow if c == self.sort_column else "") for c in SORTABLE})

    def watch_grouped(self) -> None:
        self.render_table()

    def watch_row_limit(self) -> None:
        self.render_table()

    def watch_filter_text(self) -> None:
        """The first key after a pause redraws at once; the keys of a burst, once the typing pauses."""
        self.set_reactive(RunsScreen.row_limit, PAGE)  # a new filter starts at the top, one page
        if self._filter_timer is not None:
            self._filter_timer.stop()
            self._filter_timer = None
        now = time.monotonic()
        if now - self._last_filter_key >= FILTER_DELAY:
            self.render_table()
        else:
            self._filter_timer = self.set_timer(FILTER_DELAY, self.render_table)
        self._last_filter_key = now

    # --- actions ---------------------------------------------------------------------------------

    @on(Input.Changed, "#filter")
    def filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value

    @on(Input.Submitted, "#filter")
    def filter_done(self) -> None:
        if self._filter_timer is not None:  # enter applies the filter at once
            self._filter_timer.stop()
        self.render_table()
        self.query_one(DataTable).focus()

    def action_focus_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_clear_filter(self) -> None:
        self.query_one("#filter", Input).value = ""
        self.query_one(DataTable).focus()

    @on(DataTable.RowSelected, "#runs-table")
    def row_selected(self, event: DataTable.RowSelected) -> None:
        key = event.row_key.value
        if key and key.isdigit():
            self.app.open_run(int(key))

    def action_open(self) -> None:
        if (rid := self.current_run()) is not None:
            self.app.open_run(rid)

    @on(DataTable.HeaderSelected, "#runs-table")
    def header_selected(self, event: DataTable.HeaderSelected) -> None:
        col = str(event.column_key.value)
        if col == self.sort_column:
            self.sort_reverse = not self.sort_reverse
        elif col in SORTABLE:
            self.set_reactive(RunsScreen.sort_reverse, False)  # a new column starts ascending: one redraw
            self.sort_column = col

    def action_sort(self) -> None:
        column = SORTABLE[(SORTABLE.index(self.sort_column) + 1) % len(SORTABLE)]
        self.set_reactive(RunsScreen.sort_reverse, column in NEWEST_FIRST)  # text A to Z, times newest first
        self.sort_column = column
        self.notify(f"sorted by {column}", timeout=1.5)

    def action_more(self) -> None:
        self.row_limit += PAGE

    @on(DataTable.RowHighlighted, "#runs-table")
    def next_page_near_the_end(self, event: DataTable.RowHighlighted) -> None:
        table = event.data_table
        if self.more_to_show and event.cursor_row >= table.row_count - 1 - PAGE // 20:
            self.action_more()  # scrolling on reaches every run, a page at a time

    def action_group(self) -> None:
        self.grouped = not self.grouped

    def action_mark(self) -> None:
        if (rid := self.current_run()) is None:
            return
        self.marked ^= {rid}
        self.query_one(DataTable).update_cell(str(rid), "mark", "●" if rid in self.marked else "")
        self.query_one(DataTable).action_cursor_down()

    def selection(self) -> list[int]:
        """Marked runs, or the run under the cursor when none is marked."""
        if self.marked:
            return sorted(self.marked)
        rid = self.current_run()
        return [rid] if rid is not None else []

    def action_compare(self) -> None:
        runs = self.selection()
        if len(runs) < 2:
            self.notify("mark two or more runs with space to compare them", severity="warning")
            return
        self.app.open_compare(runs)

    def action_export(self) -> None:
        if runs := self.selection():
            self.app.open_export(runs)

    def action_cancel_run(self) -> None:
        if (rid := self.current_run()) is not None and self.app.confirmed(f"cancel run {rid}"):
            self._queue_op(queue.request_cancel, "cancel")

    def action_retry_run(self) -> None:
        self._queue_op(queue.retry, "retry")

    def _queue_op(self, op, name: str) -> None:
        if (rid := self.current_run()) is not None:
            self.app.queue_op(op, rid, f"run {rid}: {name} done")

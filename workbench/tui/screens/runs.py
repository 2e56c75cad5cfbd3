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
from workbench.report import (
    Condition,
    cell,
    field_cell,
    field_names,
    headline,
    phase_cell,
    run_fields,
    shown_status,
)
from workbench.store import queue
from workbench.store.feeds import RunsFeed
from workbench.store.models import FINAL_STATES, RunStatus
from workbench.store.queries import Phase, RunRecord, phases, run_specs
from workbench.tui import prefs
from workbench.tui.components import STATUS_STYLE, Table, plain, progress_text
from workbench.tui.live import LiveScreen
from workbench.tui.messages import RunsPolled

COLUMNS = ("", "id", "experiment", "name", "kind", "status", "progress", "started", "duration", "headline")
USUAL = COLUMNS[2:]  # the columns `o` offers first; the mark and the id are always there
# Until columns are chosen, a narrower terminal shows fewer, so that the headline stays on screen: under
# 100 columns the verdict comes before the name (a long sweep name is cut at the edge, not the result).
FITTING = ((100, ("status", "headline", "name")), (150, ("name", "status", "progress", "headline")))


def usual_columns(width: int) -> tuple[str, ...]:
    return next((cols for limit, cols in FITTING if width < limit), USUAL)


NEWEST_FIRST = ("id", "started")  # the columns a first sort puts in descending order
# Rows added at a time: a DataTable measures every cell it is given, so a filter keystroke costs in
# proportion. The next page follows when the cursor comes near the end, or with `m`.
PAGE = 60
# The first key after a pause applies at once; keys that follow within FILTER_DELAY seconds wait until the
# typing pauses that long, so a fast typist (or a paste) costs one render, not one a key.
FILTER_DELAY = 0.05


FILTER_FIELDS = ("status", "kind", "exp", "tag", "archived")


def parse_filter(text: str) -> tuple[dict[str, str], list[Condition], str]:
    """`status:running kind:ddpm tag:best top1>0.9 data.source=moons swiss` -> ({status: running, kind:
    ddpm, tag: best}, [top1>0.9, data.source=moons], "swiss"): `key:value` for the run's own state,
    FIELD OP VALUE (`workbench runs --where`) for any summary key or spec field, words for the rest;
    `archived:yes` shows the archived runs (hidden otherwise)."""
    fields, conditions, words = {}, [], []
    for token in text.split():
        key, sep, value = token.partition(":")
        if sep and key in FILTER_FIELDS:
            fields[key] = value
            continue
        try:
            conditions.append(Condition.parse(token))
        except ValueError:
            words.append(token.lower())
    return fields, conditions, " ".join(words)


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


def _field_order(value) -> tuple:
    """Numbers by value, then text A to Z, then runs without the field."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value)) if value is not None else (2, 0.0, "")


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
        Binding("t", "tags", "Tags"),
        Binding("a", "archive", "Archive", show=False),
        Binding("s", "sort", "Sort"),
        Binding("o", "columns", "Columns"),
        Binding("g", "group", "Group"),
        Binding("m", "more", "More rows", show=False),
        Binding("slash", "focus_filter", "Filter", key_display="/"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    def __init__(self):
        super().__init__()
        self.rows: dict[int, RunRecord] = {}
        self.specs: dict[int, dict] = {}  # read once per run (a spec never changes), once wanted
        self.specs_wanted = False
        self.columns_asked = False  # `o` waits for the specs
        self.fields: dict[int, dict] = {}  # run_fields of each run, made when a column or filter needs them
        self.waiting: str | None = None  # why queued runs wait (queue.queued_because)
        self.phases: dict[int, Phase] = {}  # of the running runs that said one
        self.known_fields: set[str] = set()  # every field name in self.fields (runs deleted since included)
        self.columns: tuple[str, ...] = COLUMNS
        self.column_scope: str | None = ""  # the experiment the columns are for ("" all runs)
        self.remembered: dict[str, tuple[str, ...]] = {}  # the columns chosen, per experiment
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
            placeholder="filter: text  status:running  kind:ddpm  exp:quickstart  tag:best  top1>0.9  data.source=moons",
            id="filter",
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
        store = self.app.store
        changed, gone = self.feed.poll()
        # The first read shows the newest page and nothing else: why runs wait and their phases (two
        # more queries, compiled afresh in a new process) cost the cold open 150 ms; the next read has them.
        first = self.feed.polls == 1
        running = any(r.status == RunStatus.RUNNING for r in self.rows.values())  # durations move
        queued = not first and any(r.status == RunStatus.QUEUED for r in [*self.rows.values(), *changed])
        waiting = queue.queued_because(queue.live_workers(store)) if queued else None
        missing = []  # specs are read only once a where-term or a column needs them: 10 000 cost 0.2 s
        if self.specs_wanted:
            missing = [
                i for i in dict.fromkeys([*self.rows, *(r.id for r in changed)]) if i not in self.specs
            ]
        if not (changed or gone or running or missing or waiting != self.waiting):
            return None
        specs = run_specs(store, missing)
        running_ids = [
            r.id
            for r in {**self.rows, **{r.id: r for r in changed}}.values()
            if r.status == RunStatus.RUNNING and not first
        ]
        return RunsPolled(changed, gone, self.feed.complete, specs, waiting, phases(store, running_ids))

    def on_runs_polled(self, message: RunsPolled) -> None:
        self.specs.update(message.specs)
        for rid in message.specs:
            self.fields.pop(rid, None)  # made without its spec
        self.waiting = message.waiting
        self.phases = message.phases
        for r in message.changed:
            self.rows[r.id] = r
            self.searched[r.id] = f"{r.id} {r.experiment} {r.name} {r.kind} {' '.join(r.tags)}".lower()
            self.fields.pop(r.id, None)
        for rid in message.gone:
            for held in (self.rows, self.searched, self.specs, self.fields):
                held.pop(rid, None)
            self.marked.discard(rid)
        self.all_read = message.complete
        self.render_table()
        if self.columns_asked and message.specs:
            self.action_columns()
        if not message.complete:
            self.call_after_refresh(self.poll)  # the older runs once this page is on screen, not next tick

    def want_specs(self) -> None:
        """A where-term or a column may name a spec field: read every run's spec from now on."""
        if not self.specs_wanted:
            self.specs_wanted = True
            self.poll()

    def fields_of(self, r: RunRecord) -> dict:
        if (f := self.fields.get(r.id)) is None:
            f = self.fields[r.id] = run_fields(r, self.specs.get(r.id))
            self.known_fields.update(f)
        return f

    def visible(self) -> list[RunRecord]:
        fields, conditions, words = parse_filter(self.filter_text)
        if conditions:  # a term no run has a field for is a word (`seed=3` in run names), not "no runs"
            self.want_specs()
            for r in self.rows.values():
                self.fields_of(r)  # made once a run, then cached
            known = self.known_fields
            words = " ".join(
                [words, *(f"{c.field}{c.op}{c.value}".lower() for c in conditions if c.field not in known)]
            )
            words = words.strip()
            conditions = [c for c in conditions if c.field in known]
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
            and (not conditions or all(c.holds(self.fields_of(r)) for c in conditions))
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
            "name": lambda r: r.name,
            "kind": lambda r: r.kind,
        }.get(self.sort_column, lambda r: _field_order(self.fields_of(r).get(self.sort_column)))
        rows.sort(key=key, reverse=self.sort_reverse)
        if self.grouped:
            rows.sort(key=lambda r: r.experiment_id)
        return rows

    def choose_columns(self, rows: list[RunRecord]) -> None:
        """The columns remembered for the experiment every shown run belongs to (else for all runs)."""
        one = rows and not any(
            r.experiment_id != rows[0].experiment_id for r in rows
        )  # stops at the first other
        scope = rows[0].experiment if one else ""
        if scope not in self.remembered:  # the file is read once per experiment and screen
            self.remembered[scope] = tuple(prefs.columns(self.app.store.home, scope) or ())
        chosen = self.remembered[scope] or usual_columns(self.size.width)
        wanted = tuple(dict.fromkeys(("", "id", *chosen)))  # a hand-edited file may repeat
        if set(wanted) - set(COLUMNS):
            self.want_specs()
        if scope == self.column_scope and wanted == self.columns:
            return
        self.column_scope = scope
        if wanted != self.columns:
            self.columns = wanted
            table = self.query_one(DataTable)
            table.clear(columns=True)
            for col in self.columns:
                table.add_column(col, key=col or "mark")
            if self.sort_column not in self.columns:
                self.set_reactive(RunsScreen.sort_column, "id")
                self.set_reactive(RunsScreen.sort_reverse, True)
            self.show_sort()

    def on_resize(self) -> None:
        if self.rows:
            self.render_table()  # the columns that fit follow the terminal until some are chosen

    def render_table(self) -> None:
        table = self.query_one(DataTable)
        now = time.time()
        matching = self.visible()
        self.choose_columns(matching)
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
                title = ["▾", "", plain(r.experiment, style="bold"), Text(f"{n} run(s)", style="dim")]
                title += [""] * (len(self.columns) - len(title))
                wanted.append((f"exp-{last_exp}", tuple(title[: len(self.columns)])))
            wanted.append((str(r.id), tuple(self.cell(r, c, now) for c in self.columns)))
        # Text, not str: a DataTable parses str cells as markup (a name like "lr=[1e-3]" lost its brackets).
        wanted = [(key, tuple(plain(c) if isinstance(c, str) else c for c in cells)) for key, cells in wanted]
        current = [str(k.value) for k in table.rows]
        if current == [
            k for k, _ in wanted[: len(current)]
        ]:  # the same rows first: update them, add the rest
            for key, cells in wanted[: len(current)]:
                for col, value in zip(self.columns, cells, strict=True):
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

    def cell(self, r: RunRecord, column: str, now: float):
        match column:
            case "":
                return "●" if r.id in self.marked else ""
            case "id" | "experiment" | "name" | "kind":
                return str(getattr(r, column))
            case "status":
                return Text(shown_status(r, self.waiting), style=STATUS_STYLE.get(r.status, ""))
            case "progress":
                bar = progress_text(*r.progress)
                if r.status == RunStatus.RUNNING and (phase := self.phases.get(r.id)) is not None:
                    return f"{bar}  {phase_cell(r.progress, phase, now)}"
                return bar
            case "started":
                return _started(r)
            case "duration":
                return _duration(r, now)
            case "headline":
                return _headline(r)
        return cell(field_cell(self.fields_of(r), column))

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
        self.query_one(Table).relabel(
            {c: c + (arrow if c == self.sort_column else "") for c in self.columns[1:]}
        )

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
        elif col in self.columns[1:]:
            self.set_reactive(RunsScreen.sort_reverse, False)  # a new column starts ascending: one redraw
            self.sort_column = col

    def action_sort(self) -> None:
        sortable = self.columns[1:]
        at = sortable.index(self.sort_column) if self.sort_column in sortable else -1
        column = sortable[(at + 1) % len(sortable)]
        self.set_reactive(RunsScreen.sort_reverse, column in NEWEST_FIRST)  # text A to Z, times newest first
        self.sort_column = column
        self.notify(f"sorted by {column}", timeout=1.5)

    def action_columns(self) -> None:
        """Pick the columns: the usual ones and every summary key and spec field of the runs shown (their
        specs are read first, once, off the UI thread: the picker opens when they are in)."""
        if any(rid not in self.specs for rid in self.rows):
            self.columns_asked = True
            self.want_specs()
            return
        self.columns_asked = False
        shown = self.visible()[:2000]  # enough runs to know their fields; a sweep's runs share them
        fields = dict.fromkeys(name for r in shown for name in field_names(self.fields_of(r)))
        scope = self.column_scope

        def chosen(columns: list[str] | None) -> None:
            if columns is None:
                return
            try:
                prefs.save_columns(self.app.store.home, scope, columns)
            except OSError as e:
                self.notify(f"columns not remembered: {e}", severity="warning", markup=False)
            self.remembered[scope] = tuple(columns)
            self.column_scope = None  # set them again
            self.render_table()

        self.app.open_columns(
            list(self.columns[2:]),
            list(USUAL),
            [f for f in fields if f not in USUAL],
            f"experiment {scope}" if scope else "all runs",
            chosen,
        )

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

    def action_tags(self) -> None:
        """Tags on the marked runs (or the one under the cursor): `best -draft`."""
        if runs := self.selection():
            self.app.edit_tags(runs)

    def action_archive(self) -> None:
        """Archive the selected finished runs; with `archived:yes` in the filter, restore them."""
        runs = [r for r in self.selection() if self.rows[r].status in FINAL_STATES]
        if not runs:
            self.notify("only finished runs can be archived", severity="warning")
            return
        self.app.set_archived(runs, not self.rows[runs[0]].archived)

    def action_cancel_run(self) -> None:
        if (rid := self.current_run()) is not None and self.app.confirmed(f"cancel run {rid}"):
            self._queue_op(queue.request_cancel, "cancel")

    def action_retry_run(self) -> None:
        self._queue_op(queue.retry, "retry")

    def _queue_op(self, op, name: str) -> None:
        if (rid := self.current_run()) is not None:
            self.app.queue_op(op, rid, f"run {rid}: {name} done")

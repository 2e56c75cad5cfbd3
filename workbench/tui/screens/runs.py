"""Runs browser (home): every run, filtered, sorted, grouped by experiment, updated live."""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from jobs.kinds import headline_keys
from store import queue
from store.db import StoreError
from store.queries import headline
from workbench.tui.feeds import RunsFeed
from workbench.tui.widgets import STATUS_STYLE, progress_text

COLUMNS = ("", "id", "experiment", "name", "kind", "status", "progress", "started", "duration", "headline")
SORTABLE = COLUMNS[1:]
PAGE = 1000  # rows shown at once: a DataTable measures every cell, so 10 000 rows would take seconds


def parse_filter(text: str) -> tuple[dict[str, str], str]:
    """`status:running kind:ddpm swiss` -> ({status: running, kind: ddpm}, "swiss")."""
    fields, words = {}, []
    for token in text.split():
        key, sep, value = token.partition(":")
        if sep and key in ("status", "kind", "exp"):
            fields[key] = value
        else:
            words.append(token.lower())
    return fields, " ".join(words)


def _started(row: dict) -> str:
    return (row["started_at"] or "")[5:16].replace("T", " ")


def _duration(row: dict, now: float) -> str:
    if not row["started_at"]:
        return ""
    start = datetime.fromisoformat(row["started_at"]).timestamp()
    end = datetime.fromisoformat(row["finished_at"]).timestamp() if row["finished_at"] else now
    secs = max(0, int(end - start))
    return f"{secs // 3600}:{secs % 3600 // 60:02d}:{secs % 60:02d}"


class RunsScreen(Screen):
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
        self.rows: dict[int, dict] = {}
        self.marked: set[int] = set()
        self.sort_column = "id"
        self.sort_reverse = True  # newest first
        self.row_limit = PAGE
        self.grouped = False
        self.filter_text = ""
        self.feed: RunsFeed | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="filter: text  status:running  kind:ddpm  exp:quickstart", id="filter")
        table = DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        for col in COLUMNS:
            table.add_column(col, key=col or "mark")
        yield table
        yield Static("", id="runs-count")
        yield Footer()

    def on_mount(self) -> None:
        self.feed = RunsFeed(self.app.store)
        self.poll()
        self.set_interval(self.app.poll_interval, self.poll)
        self.query_one(DataTable).focus()

    # --- data ------------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="runs-poll", exit_on_error=False)
    def poll(self) -> None:
        try:
            changed, gone = self.feed.poll()
        except Exception as e:  # noqa: BLE001 - a locked or vanished database must not kill the TUI
            self.app.call_from_thread(self.notify, f"store not readable: {e}", severity="warning", timeout=3, markup=False)
            return
        if changed or gone or any(r["status"] == "running" for r in self.rows.values()):
            self.app.call_from_thread(self.apply, changed, gone)

    def apply(self, changed: list[dict], gone: set[int]) -> None:
        for row in changed:
            self.rows[row["id"]] = row
        for rid in gone:
            self.rows.pop(rid, None)
            self.marked.discard(rid)
        self.render_table()

    def visible(self) -> list[dict]:
        fields, words = parse_filter(self.filter_text)
        rows = [r for r in self.rows.values()
                if (not fields.get("status") or r["status"] == fields["status"])
                and (not fields.get("kind") or r["kind"] == fields["kind"])
                and (not fields.get("exp") or fields["exp"].lower() in str(r["experiment"]).lower())
                and (not words or words in f"{r['id']} {r['experiment']} {r['name']} {r['kind']}".lower())]
        key = {"id": lambda r: r["id"], "started": lambda r: r["started_at"] or "",
               "progress": lambda r: (r["progress"][0] / r["progress"][1]) if r["progress"][1] else 0,
               "duration": lambda r: _duration(r, time.time()), "headline": lambda r: headline(r["summary"], headline_keys(r["kind"])),
               }.get(self.sort_column, lambda r: str(r.get(self.sort_column, "")))
        rows.sort(key=key, reverse=self.sort_reverse)
        if self.grouped:
            rows.sort(key=lambda r: r["experiment_id"])
        return rows

    def render_table(self) -> None:
        table = self.query_one(DataTable)
        now = time.time()
        matching = self.visible()
        rows = matching[:self.row_limit]
        self.query_one("#runs-count", Static).update(
            f"{len(matching):,} of {len(self.rows):,} runs" if len(rows) == len(matching) else
            f"showing {len(rows):,} of {len(matching):,} runs: narrow them with the filter, or press m for more")
        per_experiment = Counter(r["experiment_id"] for r in rows)
        wanted: list[tuple[str, tuple]] = []
        last_exp = None
        for r in rows:
            if self.grouped and r["experiment_id"] != last_exp:
                last_exp = r["experiment_id"]
                n = per_experiment[last_exp]
                wanted.append((f"exp-{last_exp}", ("▾", "", Text(str(r["experiment"]), style="bold"),
                                                   Text(f"{n} run(s)", style="dim"), "", "", "", "", "", "")))
            wanted.append((str(r["id"]), (
                "●" if r["id"] in self.marked else "", str(r["id"]), str(r["experiment"]), r["name"], r["kind"],
                Text(r["label"], style=STATUS_STYLE.get(r["status"], "")), progress_text(*r["progress"]),
                _started(r), _duration(r, now), headline(r["summary"], headline_keys(r["kind"])))))
        current = [str(k.value) for k in table.rows]
        if current == [k for k, _ in wanted]:  # same rows in the same order: update cells in place
            for key, cells in wanted:
                for col, value in zip(COLUMNS, cells, strict=True):
                    if table.get_cell(key, col or "mark") != value:
                        table.update_cell(key, col or "mark", value)
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

    # --- actions ---------------------------------------------------------------------------------

    @on(Input.Changed, "#filter")
    def filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value
        self.render_table()

    @on(Input.Submitted, "#filter")
    def filter_done(self) -> None:
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
        if col in SORTABLE:
            self.sort_reverse = not self.sort_reverse if col == self.sort_column else False
            self.sort_column = col
            self.render_table()

    def action_sort(self) -> None:
        self.sort_column = SORTABLE[(SORTABLE.index(self.sort_column) + 1) % len(SORTABLE)]
        self.notify(f"sorted by {self.sort_column}", timeout=1.5)
        self.render_table()

    def action_more(self) -> None:
        self.row_limit += PAGE
        self.render_table()

    def action_group(self) -> None:
        self.grouped = not self.grouped
        self.render_table()

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
        from workbench.tui.screens.compare import CompareScreen

        runs = self.selection()
        if len(runs) < 2:
            self.notify("mark two or more runs with space to compare them", severity="warning")
            return
        self.app.push_screen(CompareScreen(runs))

    def action_export(self) -> None:
        from workbench.tui.screens.export import ExportScreen

        if runs := self.selection():
            self.app.push_screen(ExportScreen(runs))

    def action_cancel_run(self) -> None:
        self._queue_op(queue.request_cancel, "cancel")

    def action_retry_run(self) -> None:
        self._queue_op(queue.retry, "retry")

    def _queue_op(self, op, name: str) -> None:
        if (rid := self.current_run()) is not None:
            run_queue_op(self, op, rid, f"run {rid}: {name} done")


@work(thread=True, group="queue-ops")
def run_queue_op(screen: Screen, op, run_id: int, message: str, *args) -> None:
    """A queue write off the UI thread: a locked database delays it, never the interface."""
    try:
        op(screen.app.store, run_id, *args)
        screen.app.call_from_thread(screen.notify, message)
    except StoreError as e:
        screen.app.call_from_thread(screen.notify, str(e), severity="error", markup=False)
    except Exception as e:  # noqa: BLE001
        screen.app.call_from_thread(screen.notify, f"store not writable: {e}", severity="error", markup=False)

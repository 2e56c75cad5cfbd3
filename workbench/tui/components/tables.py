"""Result tables: a picker over named tables and the one picked."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.widgets import DataTable, Select, Static

from workbench.text import printable
from workbench.tui.components.common import Table, fill_data_table

MAX_ROWS = 1000  # a DataTable fills about 7 000 rows a second (bench: 50 000 took 7.3 s on 2 vCPUs)


class ResultTables(Vertical):
    """`tables` (name -> rows) is reactive: assign a new mapping and the picker and table follow; the
    table picked stays picked while it exists."""

    DEFAULT_CSS = """
    ResultTables > Horizontal { height: 3; }
    ResultTables Select { width: 40; }
    ResultTables #table-note { width: 1fr; padding: 1 2; color: $text-muted; }
    """
    tables: reactive[dict[str, list[dict]]] = reactive(dict, init=False)
    table_name: reactive[str | None] = reactive(None, init=False)
    sort_by: reactive[tuple[str, bool] | None] = reactive(None, init=False)  # (column, descending)

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Select([], prompt="result table", allow_blank=True, id="table-select")
            yield Static("", id="table-note")
        yield Table(id="result-table", zebra_stripes=True)

    def watch_tables(self, tables: dict[str, list[dict]]) -> None:
        select = self.query_one("#table-select", Select)
        select.set_options([(Text(printable(n)), n) for n in tables])
        name = self.table_name if self.table_name in tables else next(iter(tables), None)
        if name:
            select.value = name
        if name == self.table_name:
            self.fill()
        else:
            self.table_name = name

    @on(Select.Changed, "#table-select")
    def _picked(self, event: Select.Changed) -> None:
        if isinstance(event.value, str):
            self.table_name = event.value

    def watch_table_name(self) -> None:
        self.set_reactive(ResultTables.sort_by, None)  # another table: in its own order
        self.fill()

    @on(DataTable.HeaderSelected, "#result-table")
    def _header(self, event: DataTable.HeaderSelected) -> None:
        """A click on a header sorts by that column; a second click turns the order round."""
        column = str(event.column_key.value)
        same = self.sort_by is not None and self.sort_by[0] == column
        self.sort_by = (column, not self.sort_by[1]) if same else (column, False)

    def watch_sort_by(self) -> None:
        self.fill()

    def fill(self) -> None:
        rows = self.tables.get(self.table_name or "", [])
        if self.sort_by is not None:
            rows = sorted_rows(rows, *self.sort_by)
        table = self.query_one("#result-table", Table)
        fill_data_table(table, rows[:MAX_ROWS])
        if self.sort_by is not None:
            column, descending = self.sort_by
            table.relabel({column: column + (" ▼" if descending else " ▲")})
        note = (
            f"the first {MAX_ROWS:,} of {len(rows):,} rows; e exports them all"
            if len(rows) > MAX_ROWS
            else ""
        )
        self.query_one("#table-note", Static).update(note)


def sorted_rows(rows: list[dict], column: str, descending: bool) -> list[dict]:
    """Rows by `column` as the table shows it (`energy_distance (n=20)` sorts by energy_distance):
    numbers by value, text by text, numbers before text, empty cells last either way."""
    key = column.split(" (n=")[0]

    def order(row: dict):
        v = row.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool) and v == v:  # not NaN
            return (0, v, "")
        return (1, 0, str(v))

    filled = [r for r in rows if r.get(key) is not None]
    return sorted(filled, key=order, reverse=descending) + [r for r in rows if r.get(key) is None]

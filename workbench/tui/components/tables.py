"""Result tables: a picker over named tables and the one picked."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.widgets import DataTable, Select

from workbench.tui.components.common import Table, fill_data_table


class ResultTables(Vertical):
    """`tables` (name -> rows) is reactive: assign a new mapping and the picker and table follow; the
    table picked stays picked while it exists."""

    DEFAULT_CSS = """
    ResultTables > Horizontal { height: 3; }
    ResultTables Select { width: 40; }
    """
    tables: reactive[dict[str, list[dict]]] = reactive(dict, init=False)
    table_name: reactive[str | None] = reactive(None, init=False)

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Select([], prompt="result table", allow_blank=True, id="table-select")
        yield Table(id="result-table", zebra_stripes=True)

    def watch_tables(self, tables: dict[str, list[dict]]) -> None:
        select = self.query_one("#table-select", Select)
        select.set_options([(n, n) for n in tables])
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
        self.fill()

    def fill(self) -> None:
        fill_data_table(
            self.query_one("#result-table", DataTable), self.tables.get(self.table_name or "", [])
        )

"""Small pieces every view uses: status colours, progress bars, the table every screen uses, and filling
it from result rows."""

from __future__ import annotations

import math

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey

from workbench.report import cell, readable_rows
from workbench.styles import STATUS_STYLE  # noqa: F401 - re-exported to the screens with the components
from workbench.text import printable


def progress_text(done: int, total: int, width: int = 8) -> str:
    if not total:
        return ""
    frac = min(max(done / total, 0.0), 1.0)
    full = math.floor(frac * width)
    return "█" * full + "░" * (width - full) + f" {frac * 100:3.0f}%"


class Table(DataTable):
    """A DataTable that frees its render caches when it clears them, instead of leaving them to the GC.

    Textual's LRUCache keeps its entries in a circular linked list, and clearing the cache (which every
    DataTable change does: a row added, a cell updated, the table cleared) drops that list whole: about
    7 000 objects of cyclic garbage per filter keystroke in the runs list, which only a full collection
    frees (workbench.tui.idle_gc). Unlinking the entries first lets reference counting free them at once.
    """

    _CACHES = ("_row_render_cache", "_cell_render_cache", "_row_renderable_cache", "_line_cache")

    def _clear_caches(self) -> None:
        for name in self._CACHES:  # the big ones (a Textual without them, or without links, is left alone)
            links = getattr(getattr(self, name, None), "_cache", None)
            for link in links.values() if isinstance(links, dict) else ():
                if isinstance(link, list):
                    link.clear()
        super()._clear_caches()

    def relabel(self, labels: dict[str, str]) -> None:
        """Give columns (by key) new header labels, widening a column its label outgrows."""
        changed = False
        for key, label in labels.items():
            column = self.columns.get(ColumnKey(key))
            if column is not None and column.label.plain != label:
                column.label = Text(label)
                column.content_width = max(column.content_width, column.label.cell_len)
                changed = True
        if changed:
            self._clear_caches()  # the header row is cached with the cells
            self.refresh()


def fill_data_table(table: DataTable, rows: list[dict]) -> None:
    """Replace the table's columns and rows; estimates read `value [low, high]` with their n."""
    table.clear(columns=True)
    rows = readable_rows(rows)
    cols = list(dict.fromkeys(k for r in rows for k in r))
    for c in cols:
        table.add_column(plain(c), key=c)
    for r in rows:
        table.add_row(*(plain(cell(r.get(c))) for c in cols))


def plain(text: str, style: str = "") -> Text:
    """A cell or label from outside text: never read as markup (a DataTable parses a str cell: a name
    like "lr=[1e-3]" lost its brackets, "[/x]" crashed it), control and format characters escaped."""
    return Text(printable(text), style=style)

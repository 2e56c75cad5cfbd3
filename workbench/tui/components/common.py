"""Small pieces every view uses: status colours, progress bars, a DataTable filled from result rows."""

from __future__ import annotations

import math

from textual.widgets import DataTable

from store.export import cell, readable_rows
from workbench.styles import STATUS_STYLE  # noqa: F401 - re-exported to the screens with the components


def progress_text(done: int, total: int, width: int = 8) -> str:
    if not total:
        return ""
    frac = min(max(done / total, 0.0), 1.0)
    full = math.floor(frac * width)
    return "█" * full + "░" * (width - full) + f" {frac * 100:3.0f}%"


def fill_data_table(table: DataTable, rows: list[dict]) -> None:
    """Replace the table's columns and rows; estimates read `value [low, high]` with their n."""
    table.clear(columns=True)
    rows = readable_rows(rows)
    cols = list(dict.fromkeys(k for r in rows for k in r))
    for c in cols:
        table.add_column(c, key=c)
    for r in rows:
        table.add_row(*(cell(r.get(c)) for c in cols))

"""Choose the runs table's columns: the usual ones and any summary key or spec field the runs have."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, SelectionList
from textual.widgets.selection_list import Selection

from workbench.text import printable


class ColumnsScreen(ModalScreen[list[str] | None]):
    """Space or a click ticks a column as you go; Esc returns the ticked ones in the list's order (the
    usual ones first, then fields A to Z); `ctrl+r` ticks the usual columns again."""

    BINDINGS = [
        Binding("escape", "done", "Done"),
        Binding("ctrl+r", "usual", "Usual columns"),
    ]

    def __init__(self, shown: list[str], usual: list[str], fields: list[str], scope: str):
        super().__init__()
        self.shown, self.usual, self.scope = shown, usual, scope
        self.choices = list(dict.fromkeys([*usual, *shown, *sorted(fields)]))

    def compose(self) -> ComposeResult:
        with Vertical(id="columns-dialog"):
            yield Label(
                Text(printable(f"Columns for {self.scope}: space or click to show or hide, esc when done"))
            )
            yield SelectionList(
                *(Selection(Text(printable(c)), c, c in self.shown) for c in self.choices), id="column-list"
            )

    def action_done(self) -> None:
        ticked = set(self.query_one(SelectionList).selected)
        self.dismiss([c for c in self.choices if c in ticked])

    def action_usual(self) -> None:
        picker = self.query_one(SelectionList)
        picker.deselect_all()
        for c in self.usual:
            picker.select(c)

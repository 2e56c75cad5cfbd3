"""A list of every key binding: the app's and the screen's it was opened from."""

from __future__ import annotations

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape,q,question_mark", "app.pop_screen", "Close")]

    def __init__(self, under: Screen):
        super().__init__()
        self.under = under

    def compose(self) -> ComposeResult:
        lines = ["[b]workbench keys[/]", ""]
        for title, bindings in (
            (type(self.under).__name__.removesuffix("Screen"), self.under.BINDINGS),
            ("everywhere", self.app.BINDINGS),
        ):
            lines.append(f"[b]{title}[/]")
            for b in bindings:
                if isinstance(b, Binding):
                    keys = b.key_display or b.key
                    lines.append(f"  {escape(keys):<14} {escape(b.description or b.action)}")
            lines.append("")
        lines += [
            "  ctrl+p         command palette (every action by name)",
            "",
            "Runs: space marks runs for compare and export; / filters by text, status:S, kind:K, exp:E;",
            "click a column header to sort by it.  Images: set WORKBENCH_IMAGES=halfcell to force",
            "half-cell rendering when the terminal's graphics protocol misbehaves (tmux, mosh).",
        ]
        with VerticalScroll(id="help-dialog"):
            yield Static("\n".join(lines))

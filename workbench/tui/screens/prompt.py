"""Asks for one line of text: a spec file's path (the editor), tags or a note (a run)."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label

from workbench.text import printable


class TextPrompt(ModalScreen[str | None]):
    """Enter returns the text, Esc None."""

    BINDINGS = [Binding("escape", "dismiss_none", "Cancel")]

    def __init__(self, label: str, placeholder: str = "", value: str = ""):
        super().__init__()
        self.label, self.placeholder, self.value = label, placeholder, value

    def compose(self) -> ComposeResult:
        with Vertical(id="prompt-dialog"):
            yield Label(Text(printable(self.label)))
            yield Input(value=self.value, placeholder=self.placeholder, id="prompt-input")

    @on(Input.Submitted, "#prompt-input")
    def submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_dismiss_none(self) -> None:
        self.dismiss(None)

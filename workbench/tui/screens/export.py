"""Export the selected runs: result tables (CSV, Markdown, LaTeX, JSON), curves and samples as PNG."""

from __future__ import annotations

from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Select

from workbench import report
from workbench.text import printable
from workbench.tui.messages import Exported


class ExportScreen(ModalScreen):
    BINDINGS = [Binding("escape", "app.pop_screen", "Cancel")]

    def __init__(self, run_ids: list[int]):
        super().__init__()
        self.run_ids = run_ids

    def compose(self) -> ComposeResult:
        with Vertical(id="export-dialog"):
            yield Label(f"Export run(s) {', '.join(map(str, self.run_ids))}")
            yield Select([(f, f) for f in report.FORMATS], value="csv", allow_blank=False, id="format")
            yield Input("workbench-export.csv", id="path")  # relative to where workbench was started
            with Horizontal():
                yield Checkbox("tables", True, id="tables")
                yield Checkbox("curves (PNG)", False, id="curves")
                yield Checkbox("samples (PNG)", False, id="samples")
            with Horizontal():
                yield Button("Export", variant="primary", id="do-export")
                yield Button("Cancel", id="cancel")

    @on(Select.Changed, "#format")
    def format_changed(self, event: Select.Changed) -> None:
        path = Path(self.query_one("#path", Input).value)
        ext = {"csv": ".csv", "md": ".md", "latex": ".tex", "json": ".json"}[str(event.value)]
        self.query_one("#path", Input).value = str(path.with_suffix(ext))

    @on(Button.Pressed, "#cancel")
    def cancel(self) -> None:
        self.app.pop_screen()

    @on(Button.Pressed, "#do-export")
    @on(Input.Submitted, "#path")
    def do_export(self) -> None:
        self.write(
            str(self.query_one("#format", Select).value),
            Path(self.query_one("#path", Input).value),
            self.query_one("#tables", Checkbox).value,
            self.query_one("#curves", Checkbox).value,
            self.query_one("#samples", Checkbox).value,
        )

    @work(thread=True, exclusive=True, group="export")
    def write(self, fmt: str, path: Path, tables: bool, curves: bool, samples: bool) -> None:
        try:
            self.post_message(
                Exported(report.export_runs(self.app.store, self.run_ids, fmt, path, tables, curves, samples))
            )
        except Exception as e:  # noqa: BLE001 - shown to the user, who picks another path
            self.post_message(Exported([], f"export failed: {e}"))

    def on_exported(self, message: Exported) -> None:
        if message.error:
            self.notify(printable(message.error), severity="error", markup=False)
            return
        self.notify(
            printable("wrote " + ", ".join(p.name for p in message.written))
            if message.written
            else "nothing to write",
            markup=False,
        )
        self.dismiss(message.written)

"""Export the selected runs: result tables (CSV, Markdown, LaTeX, JSON), curves and samples as PNG."""

from __future__ import annotations

import shutil
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Select

from store import export as exporter
from store.queries import artifacts, metric_keys, metric_series, show


def export_runs(store, run_ids: list[int], fmt: str, path: Path, tables: bool = True, curves: bool = False,
                samples: bool = False) -> list[Path]:
    """Write what was asked for next to `path`; returns the files written."""
    path = Path(path).expanduser()
    written: list[Path] = []
    if tables:
        written += exporter.write(exporter.collect([show(store, r) for r in run_ids]), fmt, path)
    if curves:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        keys = sorted({k for r in run_ids for k in metric_keys(store, r)})
        for key in keys:
            fig, ax = plt.subplots(figsize=(6, 4))
            for r in run_ids:
                if series := metric_series(store, r, key):
                    ax.plot(*zip(*series, strict=True), label=f"run {r}")
            ax.set_xlabel("step")
            ax.set_ylabel(key)
            ax.legend()
            out = path.with_name(f"{path.stem}-curve-{key}.png")
            fig.savefig(out, dpi=100, bbox_inches="tight")
            plt.close(fig)
            written.append(out)
    if samples:
        folder = path.with_name(f"{path.stem}-images")
        for r in run_ids:
            latest: dict[str, object] = {}
            for a in artifacts(store, r, "image"):
                latest[a.name] = a  # artifacts come in id order: the last one is the newest
            for name, a in latest.items():
                src = store.home / a.path
                if src.exists():
                    out = folder / f"run{r}-{name.replace('/', '_')}.png"
                    out.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, out)
                    written.append(out)
    return written


class ExportScreen(ModalScreen):
    BINDINGS = [Binding("escape", "app.pop_screen", "Cancel")]

    def __init__(self, run_ids: list[int]):
        super().__init__()
        self.run_ids = run_ids

    def compose(self) -> ComposeResult:
        with Vertical(id="export-dialog"):
            yield Label(f"Export run(s) {', '.join(map(str, self.run_ids))}")
            yield Select([(f, f) for f in exporter.FORMATS], value="csv", allow_blank=False, id="format")
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
        self.write(str(self.query_one("#format", Select).value), Path(self.query_one("#path", Input).value),
                   self.query_one("#tables", Checkbox).value, self.query_one("#curves", Checkbox).value,
                   self.query_one("#samples", Checkbox).value)

    @work(thread=True, exclusive=True, group="export")
    def write(self, fmt: str, path: Path, tables: bool, curves: bool, samples: bool) -> None:
        try:
            written = export_runs(self.app.store, self.run_ids, fmt, path, tables, curves, samples)
        except Exception as e:  # noqa: BLE001 - shown to the user, who picks another path
            self.app.call_from_thread(self.notify, f"export failed: {e}", severity="error", markup=False)
            return
        self.app.call_from_thread(self.notify, "wrote " + ", ".join(p.name for p in written) if written
                                  else "nothing to write")
        self.app.call_from_thread(self.dismiss, written)

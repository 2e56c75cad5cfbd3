"""Compare runs: overlaid curves, their images, the spec fields that differ, summaries and result tables
side by side. Keys 1-4 switch tabs."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, TabbedContent, TabPane

from workbench.report import collect, flatten, metric_comparison, spec_differences
from workbench.store.feeds import MetricFeed
from workbench.store.queries import artifacts, show
from workbench.tui.components import CurvesView, ImagesView, Picture, ResultTables, Table, fill_data_table
from workbench.tui.live import RunViewsScreen, view_bindings
from workbench.tui.messages import RunsCompared

TABS = ("curves", "images", "spec", "results")


class CompareScreen(RunViewsScreen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        *view_bindings(TABS),
        Binding("e", "export", "Export"),
    ]

    def __init__(self, run_ids: list[int]):
        super().__init__()
        self.run_ids = run_ids
        self.feeds = {r: MetricFeed(None, r) for r in run_ids}
        self.records: dict[int, dict] = {}
        self._seen: tuple | None = None  # what the last posted poll held (read() runs one at a time)

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(id="tabs"):
            with TabPane("Curves", id="tab-curves"):
                yield CurvesView({f"run {r}": f for r, f in self.feeds.items()}, id="curves")
            with TabPane("Images", id="tab-images"):
                yield ImagesView(self.app.image_mode, side_by_side=True, id="images")
            with TabPane("Spec diff", id="tab-spec"):
                yield Table(id="spec-diff", zebra_stripes=True)
            with TabPane("Results", id="tab-results"):
                yield ResultTables(id="results")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "compare runs " + ", ".join(map(str, self.run_ids))
        for feed in self.feeds.values():
            feed.store = self.app.store

    def read(self) -> RunsCompared | None:
        store = self.app.store
        records = {r: show(store, r) for r in self.run_ids}
        images = {r: artifacts(store, r, "image") for r in self.run_ids}
        changed = [feed.poll() for feed in self.feeds.values()]
        seen = (
            records,
            {r: [a.id for a in images[r]] for r in images},
        )  # an artifact rewritten gets a new id
        if seen == self._seen and not any(changed):
            return None  # finished runs: nothing for the UI thread to do
        self._seen = seen
        return RunsCompared(records, images, any(changed))

    def on_runs_compared(self, message: RunsCompared) -> None:
        first = not self.records
        if message.records != self.records:
            self.records = message.records
            fill_data_table(
                self.query_one("#spec-diff", DataTable),
                spec_differences(list(self.records.values())),
            )
            records = list(self.records.values())
            first_id = records[0].id
            stacked = collect(records)  # each named table, the runs stacked (the summary is compared above)
            self.query_one(ResultTables).tables = {
                f"metrics (minus run {first_id})": metric_comparison(records),  # metrics as rows
                **{
                    name: [{k: v for k, v in flatten(row).items() if k != "run_name"} for row in rows]
                    for name, rows in stacked.items()
                    if name != "summary"
                },
            }
        if message.curves_changed or first:
            self.query_one(CurvesView).refresh_curves()
        home = self.app.store.home
        self.query_one(ImagesView).pictures = [
            Picture(a.name, a.step, home / a.path, a.id, a.meta, run=r)
            for r, arts in message.images.items()
            for a in arts
        ]

    def action_export(self) -> None:
        self.app.open_export(self.run_ids)

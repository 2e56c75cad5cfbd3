"""Compare runs: overlaid curves, the spec fields that differ, summaries and a result table side by side."""

from __future__ import annotations

import json

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Select, TabbedContent, TabPane

from store.export import collect, flatten
from store.queries import show
from workbench.tui.feeds import MetricFeed
from workbench.tui.screens.run_detail import fill_data_table
from workbench.tui.widgets import CurvePlot


def spec_differences(specs: dict[int, dict]) -> list[dict]:
    """One row per dotted spec field whose value is not the same in every run."""
    flat = {rid: flatten_dotted(spec) for rid, spec in specs.items()}
    keys = list(dict.fromkeys(k for f in flat.values() for k in f))
    rows = []
    for k in keys:
        values = [flat[r].get(k) for r in specs]
        if any(v != values[0] for v in values):
            rows.append({"field": k, **{f"run {r}": json.dumps(flat[r].get(k)) for r in specs}})
    return rows


def flatten_dotted(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(flatten_dotted(v, key) if isinstance(v, dict) else {key: v})
    return out


class CompareScreen(Screen):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back"), Binding("l", "toggle_log", "Log y"),
                Binding("e", "export", "Export")]

    def __init__(self, run_ids: list[int]):
        super().__init__()
        self.run_ids = run_ids
        self.feeds = {r: MetricFeed(None, r) for r in run_ids}
        self.records: dict[int, dict] = {}
        self.metric: str | None = None
        self.table_name = "summary"
        self.log_y = False

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent():
            with TabPane("Curves", id="cmp-curves"), Vertical():
                with Horizontal(id="compare-controls"):
                    yield Select([], id="cmp-metric", prompt="metric")
                yield CurvePlot(id="cmp-plot")
            with TabPane("Spec diff", id="cmp-spec"):
                yield DataTable(id="spec-diff", zebra_stripes=True)
            with TabPane("Results", id="cmp-results"), Vertical():
                with Horizontal(id="compare-controls-2"):
                    yield Select([("summary", "summary")], value="summary", allow_blank=False, id="cmp-table")
                yield DataTable(id="cmp-results-table", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "compare runs " + ", ".join(map(str, self.run_ids))
        for feed in self.feeds.values():
            feed.store = self.app.store
        self.poll()
        self.set_interval(self.app.poll_interval, self.poll)

    @work(thread=True, exclusive=True, group="compare-poll", exit_on_error=False)
    def poll(self) -> None:
        try:
            records = {r: show(self.app.store, r) for r in self.run_ids}
            changed = [feed.poll() for feed in self.feeds.values()]
        except Exception as e:  # noqa: BLE001
            self.app.call_from_thread(self.notify, f"cannot read runs: {e}", severity="warning", timeout=3, markup=False)
            return
        self.app.call_from_thread(self.apply, records, any(changed))

    def apply(self, records: dict[int, dict], curves_changed: bool) -> None:
        first = not self.records
        if records != self.records:
            self.records = records
            fill_data_table(self.query_one("#spec-diff", DataTable),
                            spec_differences({r: rec["spec"] for r, rec in records.items()}))
            names = ["summary"] + sorted({t for rec in records.values() for t in rec["tables"]})
            select = self.query_one("#cmp-table", Select)
            select.set_options([(n, n) for n in names])
            select.value = self.table_name if self.table_name in names else "summary"
            self.fill_results()
        if curves_changed or first:
            keys = sorted({k for f in self.feeds.values() for k in f.series})
            select = self.query_one("#cmp-metric", Select)
            if keys != getattr(self, "_keys", None):
                self._keys = keys
                select.set_options([(k, k) for k in keys])
                if self.metric is None and keys:
                    self.metric = "loss" if "loss" in keys else keys[0]
                if self.metric:
                    select.value = self.metric
            self.draw()

    def fill_results(self) -> None:
        rows = collect(list(self.records.values()), self.table_name).get(self.table_name, [])
        fill_data_table(self.query_one("#cmp-results-table", DataTable),
                        [{k: v for k, v in flatten(r).items() if k != "run_name"} for r in rows])

    @on(Select.Changed, "#cmp-table")
    def table_changed(self, event: Select.Changed) -> None:
        if isinstance(event.value, str) and event.value != self.table_name:
            self.table_name = event.value
            self.fill_results()

    @on(Select.Changed, "#cmp-metric")
    def metric_changed(self, event: Select.Changed) -> None:
        if isinstance(event.value, str) and event.value != self.metric:
            self.metric = event.value
            self.draw()

    def draw(self) -> None:
        if self.metric:
            metric, feeds = self.metric, dict(self.feeds)
            self.query_one(CurvePlot).show(lambda n: {f"run {r}": f.xy(metric, n) for r, f in feeds.items()},
                                           metric + ("  log y" if self.log_y else ""), self.log_y)

    def action_toggle_log(self) -> None:
        self.log_y = not self.log_y
        self.draw()

    def action_export(self) -> None:
        from workbench.tui.screens.export import ExportScreen

        self.app.push_screen(ExportScreen(self.run_ids))

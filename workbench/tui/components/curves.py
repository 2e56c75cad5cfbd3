"""Curves: a metric picker over a plot of one run's curve, or several runs' overlaid."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.widgets import Select
from textual_plotext import PlotextPlot

from workbench.store.feeds import MetricFeed
from workbench.text import printable


class CurvePlot(PlotextPlot):
    """One or more (steps, values) series on one plot, optionally with a log y axis.

    `show` takes a function of the number of points worth plotting, so a resize re-reads the curves at the
    new resolution: braille gives 2 dots a cell across and downsampling keeps 2 a bucket, and plotting more
    only slows plotext down (a 100 000-point curve is reduced to a few hundred points)."""

    DEFAULT_CSS = """
    CurvePlot { height: 1fr; min-height: 8; }
    """
    Series = Callable[[int], dict[str, tuple[np.ndarray, np.ndarray]]]

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._drawn: tuple[CurvePlot.Series, str, bool] | None = None

    def show(self, series: Series, title: str, log_y: bool = False) -> None:
        self._drawn = (series, title, log_y)
        self._draw()

    def on_resize(self) -> None:
        if self._drawn:
            self._draw()

    def _draw(self) -> None:
        series_of, title, log_y = self._drawn
        title = printable(title)  # metric names are the kind's, but may carry a class name from the data
        series = series_of(max(200, 4 * self.size.width))
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(title)
        plt.xlabel("step")
        drawn = False
        for label, (x, y) in series.items():
            ok = np.isfinite(y) & ((y > 0) if log_y else True)
            if ok.any():
                plt.plot(
                    x[ok].tolist(),
                    y[ok].tolist(),
                    label=printable(label) if len(series) > 1 else None,
                    marker="braille",
                )
                drawn = True
        if log_y and drawn:
            plt.yscale("log")
        if not drawn:
            plt.title(f"{title} (no points yet)")
        self.refresh()


class CurvesView(Vertical):
    """The curves of the runs in `feeds` (label -> MetricFeed): pick a metric, toggle a log y axis.

    The owner polls the feeds and calls `refresh_curves()` when points arrived; `metric` and `log_y`
    are reactive, so setting either redraws."""

    DEFAULT_CSS = """
    CurvesView > Horizontal { height: 3; }
    CurvesView Select { width: 40; }
    """
    metric: reactive[str | None] = reactive(None, init=False)
    log_y: reactive[bool] = reactive(False, init=False)

    def __init__(self, feeds: dict[str, MetricFeed], title: Callable[[str], str] = str, **kwargs):
        super().__init__(**kwargs)
        self.feeds = feeds
        self.title = title  # metric -> plot title
        self._keys: list[str] | None = None

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Select([], prompt="metric", allow_blank=True, id="metric")
        yield CurvePlot(id="curve")

    def refresh_curves(self) -> None:
        keys = sorted({k for f in self.feeds.values() for k in f.series})
        if keys != self._keys:
            self._keys = keys
            select = self.query_one("#metric", Select)
            select.set_options([(Text(printable(k)), k) for k in keys])
            if self.metric not in keys and keys:
                self.metric = "loss" if "loss" in keys else keys[0]
            if self.metric in keys:
                select.value = self.metric
        self.draw()

    @on(Select.Changed, "#metric")
    def _picked(self, event: Select.Changed) -> None:
        if isinstance(event.value, str):
            self.metric = event.value

    def watch_metric(self) -> None:
        self.draw()

    def watch_log_y(self) -> None:
        self.draw()

    def draw(self) -> None:
        if not self.metric or not self.is_mounted:
            return
        metric, feeds = self.metric, dict(self.feeds)
        self.query_one(CurvePlot).show(
            lambda n: {label: f.xy(metric, n) for label, f in feeds.items()},
            self.title(metric) + ("  log y" if self.log_y else ""),
            self.log_y,
        )

"""Widgets shared by the screens: a live loss-curve plot and an artifact image view."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from rich.markup import escape
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static
from textual_image import widget as image_widgets  # imported before the app starts: it queries the terminal
from textual_plotext import PlotextPlot

STATUS_STYLE = {"queued": "cyan", "running": "yellow", "succeeded": "green", "failed": "red",
                "cancelled": "magenta", "interrupted": "bright_red"}


class CurvePlot(PlotextPlot):
    """One or more (steps, values) series on one plot, optionally with a log y axis.

    `show` takes a function of the number of points worth plotting, so a resize re-reads the curves at the
    new resolution: braille gives 2 dots a cell across and downsampling keeps 2 a bucket, and plotting more
    only slows plotext down (a 100 000-point curve is reduced to a few hundred points)."""

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
                plt.plot(x[ok].tolist(), y[ok].tolist(), label=label if len(series) > 1 else None, marker="braille")
                drawn = True
        if log_y and drawn:
            plt.yscale("log")
        if not drawn:
            plt.title(f"{title} (no points yet)")
        self.refresh()


def image_widget_class(mode: str):
    """The textual-image widget for a renderer mode: auto (Kitty/Sixel where supported), halfcell, unicode."""
    return {"auto": image_widgets.Image, "halfcell": image_widgets.HalfcellImage,
            "unicode": image_widgets.UnicodeImage}[mode]


class ArtifactImage(Vertical):
    """An image artifact with a caption; a missing or corrupt file shows a message instead."""

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        self.mode = mode

    def compose(self) -> ComposeResult:
        yield Static("", id="caption")
        yield image_widget_class(self.mode)(id="picture")
        yield Static("", id="image-error")

    def show(self, path: Path | None, caption: str) -> None:
        self.query_one("#caption", Static).update(caption)
        picture = self.query_one("#picture")
        error = self.query_one("#image-error", Static)
        try:
            if path is None:
                raise FileNotFoundError("no image artifacts yet")
            with PILImage.open(path) as im:
                im.load()
                image = im.convert("RGB")
        except (OSError, ValueError) as e:
            picture.image = None
            picture.display = False
            error.update(f"[red]cannot show image:[/] {escape(str(e))}")
            error.display = True
            return
        picture.image = image
        picture.display = True
        error.display = False


def progress_text(done: int, total: int, width: int = 8) -> str:
    if not total:
        return ""
    frac = min(max(done / total, 0.0), 1.0)
    full = math.floor(frac * width)
    return "█" * full + "░" * (width - full) + f" {frac * 100:3.0f}%"

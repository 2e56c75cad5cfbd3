"""Images: a list of image artifacts by name, the picked one drawn, `[` `]` through its steps, `z` to zoom
into a row or a cell of a sample grid or to see the picture 1:1, the arrows to move, `y` to copy its path.

Over SSH a whole grid of 28x28 digits drawn in half cells at a normal pane size is noise; one row or one
cell of it fills the pane and is legible. A grid written through figures.Grid carries its layout in the
artifact's notes; any other picture zooms 1:1 (one image pixel to one drawn pixel) and pans.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image as PILImage
from rich.markup import escape
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option
from textual_image import widget as image_widgets  # imported before the app starts: it queries the terminal
from textual_image._terminal import get_cell_size
from textual_image.renderable.halfcell import Image as HalfcellRenderable
from textual_image.renderable.unicode import Image as UnicodeRenderable

from workbench.text import printable

ZOOMS = ("fit", "row", "cell", "1:1")
MAX_PANES = 4  # runs side by side in compare; more would leave each too narrow to read


def image_widget_class(mode: str):
    """The textual-image widget for a renderer mode: auto (Kitty/Sixel where supported), halfcell, unicode."""
    return {
        "auto": image_widgets.Image,
        "halfcell": image_widgets.HalfcellImage,
        "unicode": image_widgets.UnicodeImage,
    }[mode]


@dataclass(frozen=True)
class GridLayout:
    """Where the cells of a grid lie: `rows` x `cols` cells of `cell` (w, h) pixels, `padding` between."""

    rows: int
    cols: int
    padding: int
    cell: tuple[int, int]

    @classmethod
    def read(cls, meta: Any, size: tuple[int, int]) -> GridLayout | None:
        """The layout figures.Grid recorded in an artifact's notes, if it agrees with the picture's size
        (notes are as untrusted as the file: anything else means no grid, never an error)."""
        try:
            g = meta["grid"]
            rows, cols, padding = (int(g[k]) for k in ("rows", "cols", "padding"))
        except (KeyError, TypeError, ValueError):
            return None
        width, height = size
        if rows < 1 or cols < 1 or padding < 0:
            return None
        cell_w, rest_w = divmod(width - padding, cols)
        cell_h, rest_h = divmod(height - padding, rows)
        if rest_w or rest_h or cell_w - padding < 1 or cell_h - padding < 1:
            return None
        return cls(rows, cols, padding, (cell_w - padding, cell_h - padding))

    def box(self, row: int, col: int | None = None) -> tuple[int, int, int, int]:
        """The pixels of one cell, or of a whole row when `col` is None (left, top, right, bottom)."""
        (w, h), p = self.cell, self.padding
        top = p + row * (h + p)
        if col is None:
            return p, top, self.cols * (w + p), top + h
        left = p + col * (w + p)
        return left, top, left + w, top + h


@dataclass(frozen=True)
class View:
    """What part of a picture is shown: the zoom, the grid row and column, the 1:1 view's top-left pixel."""

    zoom: str = "fit"
    row: int = 0
    col: int = 0
    x: int = 0
    y: int = 0

    def zooms(self, layout: GridLayout | None) -> tuple[str, ...]:
        return ZOOMS if layout else ("fit", "1:1")

    def zoomed(self, delta: int, layout: GridLayout | None) -> View:
        levels = self.zooms(layout)
        at = levels.index(self.zoom) if self.zoom in levels else 0
        return replace(self, zoom=levels[(at + delta) % len(levels)])

    def moved(self, dx: int, dy: int, size: tuple[int, int], layout: GridLayout | None, window) -> View:
        """One row or cell on (a grid), or half a window (1:1); kept inside the picture."""
        if self.zoom in ("row", "cell") and layout:
            return replace(
                self,
                row=_clamp(self.row + dy, layout.rows - 1),
                col=_clamp(self.col + (dx if self.zoom == "cell" else 0), layout.cols - 1),
            )
        if self.zoom == "1:1":
            (w, h), (ww, wh) = size, window
            return replace(
                self,
                x=_clamp(self.x + dx * max(1, ww // 2), w - ww),
                y=_clamp(self.y + dy * max(1, wh // 2), h - wh),
            )
        return self

    def box(self, size: tuple[int, int], layout: GridLayout | None, window) -> tuple[int, int, int, int]:
        """The pixels shown (left, top, right, bottom) of a picture of `size`, `window` pixels at 1:1."""
        w, h = size
        if self.zoom in ("row", "cell") and layout:
            row = _clamp(self.row, layout.rows - 1)
            return layout.box(row, _clamp(self.col, layout.cols - 1) if self.zoom == "cell" else None)
        if self.zoom == "1:1":
            ww, wh = window
            x, y = _clamp(self.x, w - ww), _clamp(self.y, h - wh)
            return x, y, min(w, x + ww), min(h, y + wh)
        return 0, 0, w, h

    def describe(self, size: tuple[int, int], layout: GridLayout | None, window) -> str:
        left, top, right, bottom = self.box(size, layout, window)
        if self.zoom == "row" and layout:
            return f"row {_clamp(self.row, layout.rows - 1) + 1}/{layout.rows} (↑↓)"
        if self.zoom == "cell" and layout:
            row, col = _clamp(self.row, layout.rows - 1), _clamp(self.col, layout.cols - 1)
            return f"cell row {row + 1}/{layout.rows}, column {col + 1}/{layout.cols} (arrows)"
        if self.zoom == "1:1":
            return f"1:1, x {left}-{right - 1} y {top}-{bottom - 1} of {size[0]}x{size[1]} (arrows)"
        grid = f", a {layout.rows}x{layout.cols} grid" if layout else ""
        return f"whole picture {size[0]}x{size[1]}{grid}"


def shown_path(path: Path) -> str:
    """The absolute path, your home folder written `~` as shells write it (`y` copies it in full)."""
    try:
        return f"~/{path.relative_to(Path.home())}"
    except (ValueError, RuntimeError):  # not under it, or no home folder
        return str(path)


def _clamp(value: int, high: int) -> int:
    return max(0, min(value, high))


@dataclass(frozen=True)
class Picture:
    """One image artifact as listed: `group` names it in the list; in compare, `run` tells the runs apart."""

    group: str
    step: int | None
    path: Path  # absolute
    artifact_id: int  # a picture written again (a resumed run) is a new artifact: drawn again
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    run: int | None = None


class ArtifactImage(Vertical):
    """One picture with a caption, or part of it (a View); a missing or corrupt file shows a message.

    The picture keeps its aspect ratio: its width and height both follow the image, inside a frame that
    takes the space left (a fixed height with an automatic width squeezed wide images sideways). At 1:1 its
    size is the crop's own, in cells."""

    DEFAULT_CSS = """
    ArtifactImage { width: 1fr; }
    ArtifactImage > #frame { height: 1fr; }
    ArtifactImage #picture { width: auto; height: auto; max-height: 100%; }
    ArtifactImage > #caption, ArtifactImage > #image-error { height: auto; }
    """

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        self.mode = mode
        self.picture: Picture | None = None
        self._loaded: tuple[int, PILImage.Image, GridLayout | None] | None = None  # artifact id, image, grid

    def compose(self) -> ComposeResult:
        yield Static("", id="caption")
        with Vertical(id="frame"):
            yield image_widget_class(self.mode)(id="picture")
        yield Static("", id="image-error")

    def loaded(self) -> tuple[PILImage.Image, GridLayout | None] | None:
        """The picture's image and grid layout, read once per artifact; None when there is none to show."""
        p = self.picture
        if p is None:
            return None
        if self._loaded is None or self._loaded[0] != p.artifact_id:
            with PILImage.open(p.path) as im:
                im.load()
                image = im.convert("RGB")
            self._loaded = (p.artifact_id, image, GridLayout.read(p.meta, image.size))
        return self._loaded[1], self._loaded[2]

    def per_cell(self) -> tuple[int, int]:
        """Image pixels one cell shows at 1:1: half cells 1x2, unicode cells 1x1, a graphics protocol
        (Sixel, Kitty) the terminal's cell size in pixels."""
        renderer = getattr(type(self.query_one("#picture")), "_Renderable", None)
        if renderer is HalfcellRenderable:
            return 1, 2
        if renderer is UnicodeRenderable:
            return 1, 1
        return tuple(get_cell_size())

    def window(self) -> tuple[int, int]:
        """How many image pixels the frame holds at 1:1."""
        (pw, ph), frame = self.per_cell(), self.query_one("#frame").content_size
        return max(1, frame.width) * pw, max(1, frame.height) * ph

    def show(self, picture: Picture | None, caption: str, view: View) -> None:
        self.picture = picture
        widget = self.query_one("#picture")
        error = self.query_one("#image-error", Static)
        try:
            if picture is None:
                raise FileNotFoundError("no image artifacts yet")
            image, layout = self.loaded()
        except (OSError, ValueError, PILImage.DecompressionBombError) as e:
            self.query_one("#caption", Static).update(Text(printable(caption)))
            widget.image = None
            widget.display = False
            error.update(f"[red]cannot show image:[/] {escape(printable(str(e)))}")
            error.display = True
            return
        window = self.window()
        box = view.box(image.size, layout, window)
        where = view.describe(image.size, layout, window)
        self.query_one("#caption", Static).update(
            Text(printable(f"{caption}  {where}"))
            + Text("\n" + printable(shown_path(picture.path)), style="dim")
        )
        if view.zoom == "1:1":  # the crop's own size in cells: not stretched to fill the frame
            pw, ph = self.per_cell()
            widget.styles.width = max(1, -(-(box[2] - box[0]) // pw))
            widget.styles.height = max(1, -(-(box[3] - box[1]) // ph))
        else:
            widget.styles.width = widget.styles.height = "auto"
        widget.image = image if box == (0, 0, *image.size) else image.crop(box)
        widget.display = True
        error.display = False


class Panes(Horizontal, can_focus=True):
    """The pictures side by side; focused (a click, Tab or a zoom), the arrows move through the picture."""

    DEFAULT_CSS = """
    Panes:focus { background: $boost; }
    """


class ImagesView(Horizontal):
    """`pictures` is reactive: assign the current list and the picker follows, keeping the image picked.
    `step(delta)` moves through the steps of the picked image (index -1: the newest). With `side_by_side`
    (compare) the list names each image once and every run that has it is drawn beside the others, at
    the same step index and the same zoom."""

    DEFAULT_CSS = """
    ImagesView > OptionList { width: 30%; max-width: 32; }
    """
    BINDINGS = [
        Binding("z", "zoom(1)", "Zoom"),
        Binding("Z,minus", "zoom(-1)", "Zoom out", show=False),
        Binding("y", "copy_path", "Copy path"),
        Binding("left", "move(-1, 0)", show=False),
        Binding("right", "move(1, 0)", show=False),
        Binding("up", "move(0, -1)", show=False),
        Binding("down", "move(0, 1)", show=False),
    ]
    pictures: reactive[list[Picture]] = reactive(list, init=False)
    picked: reactive[str | None] = reactive(None, init=False)
    index: reactive[int] = reactive(-1, init=False)
    view: reactive[View] = reactive(View, init=False)

    def __init__(self, mode: str, side_by_side: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.mode = mode
        self.side_by_side = side_by_side

    def compose(self) -> ComposeResult:
        yield OptionList(id="image-list")
        with Panes(id="panes"):
            for i in range(MAX_PANES if self.side_by_side else 1):
                yield ArtifactImage(self.mode, id=f"image-{i}")
        yield Static("", id="more-runs")

    def on_mount(self) -> None:
        self.draw()  # "no images yet" until the first picture arrives

    def on_resize(self) -> None:
        self.draw()  # the 1:1 window follows the pane

    def names(self) -> list[str]:
        return list(dict.fromkeys(p.group for p in self.pictures))

    def runs(self) -> list[int | None]:
        return list(dict.fromkeys(p.run for p in self.pictures if p.group == self.picked))

    def steps(self, run: int | None = None) -> list[Picture]:
        return sorted(
            (p for p in self.pictures if p.group == self.picked and p.run == run),
            key=lambda p: (p.step is None, p.step or 0),
        )

    def watch_pictures(self) -> None:
        options = self.query_one("#image-list", OptionList)
        names = self.names()
        options.clear_options()
        options.add_options(Option(Text(printable(n)), id=str(i)) for i, n in enumerate(names))
        if self.picked not in names:
            self.picked = names[0] if names else None
        if self.picked:
            options.highlighted = names.index(self.picked)
        self.draw()

    @on(OptionList.OptionHighlighted, "#image-list")
    def _picked(self, event: OptionList.OptionHighlighted) -> None:
        name = self.names()[int(event.option.id)]
        if name != self.picked:
            self.index = -1
            self.picked = name

    def watch_picked(self) -> None:
        self.draw()

    def watch_index(self) -> None:
        self.draw()

    def watch_view(self) -> None:
        self.draw()

    def step(self, delta: int) -> None:
        if longest := max((len(self.steps(r)) for r in self.runs()), default=0):
            self.index = max(0, min(longest - 1, (self.index % longest) + delta))

    def shown(self) -> list[ArtifactImage]:
        return [pane for pane in self.query(ArtifactImage) if pane.display and pane.picture is not None]

    def action_zoom(self, delta: int) -> None:
        panes = self.shown()
        layout = panes[0].loaded()[1] if panes and panes[0].loaded() else None
        self.view = self.view.zoomed(delta, layout)
        if self.view.zoom != "fit":
            self.query_one(Panes).focus()  # the arrows now move through the picture

    def action_move(self, dx: int, dy: int) -> None:
        panes = self.shown()
        if not panes or self.view.zoom == "fit":
            return
        image, layout = panes[0].loaded()
        self.view = self.view.moved(dx, dy, image.size, layout, panes[0].window())

    def action_copy_path(self) -> None:
        """OSC 52 puts the path on the clipboard of the terminal in front of you, over SSH too (where the
        terminal allows it); the path stays on screen to select by hand where it does not."""
        if panes := self.shown():
            path = str(panes[0].picture.path)
            self.app.copy_to_clipboard(path)
            self.notify(f"copied {path}", timeout=3, markup=False)

    def draw(self) -> None:
        panes = list(self.query(ArtifactImage))
        runs = self.runs() or [None]
        more = self.query_one("#more-runs", Static)
        more.display = len(runs) > len(panes)
        more.update(f"and {len(runs) - len(panes)} more run(s): compare fewer to see them")
        for i, pane in enumerate(panes):
            pane.display = i < len(runs)
            if not pane.display:
                pane.picture = None
                continue
            run = runs[i]
            steps = self.steps(run)
            if not steps:
                pane.show(None, "no images yet", self.view)
                continue
            index = min(len(steps) - 1, self.index) if self.index >= 0 else len(steps) - 1
            p = steps[index]
            where = f"step {p.step}" if p.step is not None else "no step"
            who = f"run {run}: " if run is not None else ""
            pane.show(p, f"{who}{p.group}  {where} ({index + 1}/{len(steps)}; [ ] steps)", self.view)

"""Images: a list of image artifacts by name, the picked one drawn, `[` `]` through its steps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image as PILImage
from rich.markup import escape
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option
from textual_image import widget as image_widgets  # imported before the app starts: it queries the terminal

from workbench.text import printable


def image_widget_class(mode: str):
    """The textual-image widget for a renderer mode: auto (Kitty/Sixel where supported), halfcell, unicode."""
    return {
        "auto": image_widgets.Image,
        "halfcell": image_widgets.HalfcellImage,
        "unicode": image_widgets.UnicodeImage,
    }[mode]


class ArtifactImage(Vertical):
    """An image file with a caption; a missing or corrupt file shows a message instead.

    The picture keeps its aspect ratio: its width and height both follow the image, inside a frame that
    takes the space left (a fixed height with an automatic width squeezed wide images sideways)."""

    DEFAULT_CSS = """
    ArtifactImage > #frame { height: 1fr; }
    ArtifactImage #picture { width: auto; height: auto; max-height: 100%; }
    ArtifactImage > #caption, ArtifactImage > #image-error { height: auto; }
    """

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        self.mode = mode

    def compose(self) -> ComposeResult:
        yield Static("", id="caption")
        with Vertical(id="frame"):
            yield image_widget_class(self.mode)(id="picture")
        yield Static("", id="image-error")

    def show(self, path: Path | None, caption: str) -> None:
        self.query_one("#caption", Static).update(Text(printable(caption)))
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
            error.update(f"[red]cannot show image:[/] {escape(printable(str(e)))}")
            error.display = True
            return
        picture.image = image
        picture.display = True
        error.display = False


@dataclass(frozen=True)
class Picture:
    """One image artifact as listed: `group` names it in the list (its name, or `run 3: name`)."""

    group: str
    step: int | None
    path: Path  # absolute
    shown_path: str  # relative to the store's home, for the caption
    artifact_id: int  # a picture written again (a resumed run) is a new artifact: drawn again


class ImagesView(Horizontal):
    """`pictures` is reactive: assign the current list and the picker follows, keeping the image picked.
    `step(delta)` moves through the steps of the picked image (index -1: the newest)."""

    DEFAULT_CSS = """
    ImagesView > OptionList { width: 32; }
    """
    pictures: reactive[list[Picture]] = reactive(list, init=False)
    picked: reactive[str | None] = reactive(None, init=False)
    index: reactive[int] = reactive(-1, init=False)

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        self.mode = mode

    def compose(self) -> ComposeResult:
        yield OptionList(id="image-list")
        yield ArtifactImage(self.mode, id="image")

    def on_mount(self) -> None:
        self.draw()  # "no images yet" until the first picture arrives

    def names(self) -> list[str]:
        return list(dict.fromkeys(p.group for p in self.pictures))

    def steps(self) -> list[Picture]:
        return sorted(
            (p for p in self.pictures if p.group == self.picked), key=lambda p: (p.step is None, p.step or 0)
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

    def step(self, delta: int) -> None:
        if steps := self.steps():
            self.index = max(0, min(len(steps) - 1, (self.index % len(steps)) + delta))

    def draw(self) -> None:
        widget = self.query_one("#image", ArtifactImage)
        steps = self.steps()
        if not steps:
            widget.show(None, "no images yet")
            return
        index = self.index % len(steps)
        p = steps[index]
        where = f"step {p.step}" if p.step is not None else "no step"
        widget.show(p.path, f"{p.group}  {where}  ({index + 1}/{len(steps)}; [ ] to move)  {p.shown_path}")

"""LiveScreen: the one way a screen follows the store.

Every poll interval `read()` runs in a thread worker and returns a typed message
(workbench.tui.messages) or None when nothing changed. A tick that finds the last read still running
skips (a slow read is never stacked, and never cancelled: reads are incremental, so a read's result
must not be dropped). The message is posted unless the worker was cancelled, which happens when the
screen closes. A failed read becomes StoreUnreadable: a warning, and the next poll tries again. Only
the screen on top polls; one that comes back on top reads at once; a screen whose reads keep finding
nothing reads every other tick (what it shows is then at most two intervals old).
"""

from __future__ import annotations

from textual import on, work
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import TabbedContent
from textual.worker import Worker, get_current_worker

from workbench.tui.messages import StoreUnreadable

QUIET_READS = 4  # after this many reads in a row that found nothing, read every other tick until one does


APP_KEYS = ("help", "quit")  # the footer shows these first: on a narrow terminal it cuts from the right


class KeysFirstScreen(Screen):
    """A screen whose footer starts with `? Help` and `q Quit` (Textual puts the app's keys last, and an
    80-column footer cut them off: nothing on screen said how to leave or where the other keys are)."""

    @property
    def active_bindings(self):
        bindings = super().active_bindings
        first = {k: b for k, b in bindings.items() if b.binding.action in APP_KEYS}
        return {**first, **{k: b for k, b in bindings.items() if k not in first}}


class LiveScreen(KeysFirstScreen):
    _reading: Worker | None = None
    _quiet = 0  # reads in a row that found nothing
    _ticks = 0

    def on_mount(self) -> None:
        # Textual calls every class's on_mount along the MRO, a subclass's first: subclasses set up their
        # feeds in theirs and must not call super().on_mount() (that started a second timer, which
        # went on polling under another screen).
        self.poll()
        self._polling = self.set_interval(self.app.poll_interval, self._tick)

    def _tick(self) -> None:
        self._ticks += 1
        if self._quiet < QUIET_READS or self._ticks % 2 == 0:  # a quiet store: half the reads, half the CPU
            self.poll()

    def on_screen_suspend(self) -> None:
        """Another screen is on top: stop reading. A screen below that kept polling made Textual repaint
        the one on top at every poll (8 % of a core, idle, over a 100 000-point curve)."""
        self._polling.pause()

    def on_screen_resume(self) -> None:
        self._polling.resume()
        self.poll()  # catch up at once

    def read(self) -> Message | None:
        """Read what changed (in a thread, never on the UI thread); None when nothing did."""
        raise NotImplementedError

    def poll(self) -> None:
        if self._reading is None or self._reading.is_finished:
            self._reading = self._read_in_thread()

    @work(thread=True, group="poll", exit_on_error=False)
    def _read_in_thread(self) -> None:
        worker = get_current_worker()
        try:
            message = self.read()
        except Exception as e:  # noqa: BLE001 - a locked or vanished database must not kill the TUI
            message = StoreUnreadable(str(e))
        self._quiet = self._quiet + 1 if message is None else 0
        if message is not None and not worker.is_cancelled:
            self.post_message(message)

    def on_store_unreadable(self, message: StoreUnreadable) -> None:
        self.notify(f"store not readable: {message.error}", severity="warning", timeout=3, markup=False)


TABS = Binding.Group("Tabs", compact=True)
STEP = Binding.Group("Step", compact=True)


def view_bindings(tabs: tuple[str, ...]) -> list[Binding]:
    """The keys a RunViewsScreen puts in its BINDINGS: number keys for `tabs` in order (the footer shows
    them as one group, `12345 Tabs`), `l` for the curves' log axis, `[` `]` through the images' steps."""
    return [
        *(Binding(str(i), f"tab('{t}')", t.capitalize(), group=TABS) for i, t in enumerate(tabs, 1)),
        Binding("l", "toggle_log", "Log y"),
        Binding("left_square_bracket", "image_step(-1)", "Prev step", key_display="[", group=STEP),
        Binding("right_square_bracket", "image_step(1)", "Next step", key_display="]", group=STEP),
    ]


class RunViewsScreen(LiveScreen):
    """A live screen of tabs (`#tabs`, panes `tab-<name>`) with a CurvesView and an ImagesView: number
    keys switch tabs (view_bindings), `l` toggles the curves' log axis, `[` `]` step through images."""

    def action_tab(self, name: str) -> None:
        self.query_one("#tabs", TabbedContent).active = f"tab-{name}"

    @on(TabbedContent.TabActivated)
    def focus_the_tab(self, event: TabbedContent.TabActivated) -> None:
        """The keys act on the tab shown: its first focusable widget takes the focus (the arrow keys
        did nothing until Tab moved the focus off the tab bar, and nothing said so)."""
        if event.tabbed_content.id != "tabs":
            return
        for widget in event.pane.query("*"):
            if widget.focusable:
                widget.focus()
                return

    # The components are imported here, not at the top: the runs list imports this module and must not
    # pay for plotext, numpy and Pillow before it shows.
    def action_toggle_log(self) -> None:
        from workbench.tui.components import CurvesView

        curves = self.query_one(CurvesView)
        curves.log_y = not curves.log_y

    def action_image_step(self, delta: int) -> None:
        from workbench.tui.components import ImagesView

        self.query_one(ImagesView).step(delta)

"""The workbench TUI. Bare `workbench` opens it over the same store the CLI uses.

Reads never run on the UI thread: screens poll the store from thread workers (named groups,
exclusive, so a slow read is never stacked) and apply the results on the UI thread.
"""

from __future__ import annotations

from collections.abc import Iterable

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from store.db import Store
from workbench.tui import widgets  # noqa: F401 - textual-image must query the terminal before Textual starts

POLL_INTERVAL = 0.5


class WorkbenchApp(App):
    CSS_PATH = "workbench.tcss"
    TITLE = "workbench"
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark,f1", "help", "Help", key_display="?"),
        Binding("n", "new_experiment", "New"),
        Binding("u", "queue", "Queue"),
    ]

    def __init__(self, store: Store, image_mode: str = "auto", poll_interval: float = POLL_INTERVAL,
                 auto_worker: bool = True):
        super().__init__()
        self.store = store
        self.image_mode = image_mode  # auto (Kitty/Sixel where supported), halfcell or unicode
        self.poll_interval = poll_interval
        self.auto_worker = auto_worker  # submitting from the editor starts a worker if none is alive

    def on_mount(self) -> None:
        from workbench.tui.screens.runs import RunsScreen

        self.push_screen(RunsScreen())

    def action_help(self) -> None:
        from workbench.tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    def action_new_experiment(self) -> None:
        from workbench.tui.screens.new_experiment import NewExperimentScreen

        self.push_screen(NewExperimentScreen())

    def action_queue(self) -> None:
        from workbench.tui.screens.queue import QueueScreen

        self.push_screen(QueueScreen())

    def open_run(self, run_id: int) -> None:
        from workbench.tui.screens.run_detail import RunDetailScreen

        self.push_screen(RunDetailScreen(run_id))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("New experiment", "Write or load a spec, validate it, submit it", self.action_new_experiment)
        yield SystemCommand("Queue and workers", "Workers, queued and running runs", self.action_queue)
        yield SystemCommand("Help", "All key bindings", self.action_help)
        for binding in screen.BINDINGS:
            if isinstance(binding, Binding) and binding.show:
                action = binding.action
                yield SystemCommand(binding.description, f"key: {binding.key}",
                                    lambda a=action: screen.run_action(a))


def run_tui(store: Store, image_mode: str = "auto") -> None:
    WorkbenchApp(store, image_mode=image_mode).run()

"""The workbench TUI. Bare `workbench` opens it over the same store the CLI uses.

The app is the only place that opens screens (`open_*` and the actions below); screens never import
screens. Live screens follow the store through workbench.tui.live.LiveScreen (reads in thread workers,
typed messages back); queue writes go through `queue_op`, off the UI thread too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from textual import events, work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual_image import widget as _  # noqa: F401 - queries the terminal, which it must do before Textual starts

from workbench.store import queue
from workbench.store.db import Store, StoreError
from workbench.tui.idle_gc import CHECK_EVERY, IdleCollector
from workbench.tui.messages import Notice

POLL_INTERVAL = 0.5


CONFIRM_SECONDS = 3.0


class WorkbenchApp(App):
    CSS_PATH = "workbench.tcss"
    TITLE = "workbench"
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark,f1", "help", "Help", key_display="?"),
        Binding("n", "new_experiment", "New"),
        Binding("u", "queue", "Queue"),
    ]

    def __init__(
        self,
        store: Store,
        image_mode: str = "auto",
        poll_interval: float = POLL_INTERVAL,
        auto_worker: bool = True,
    ):
        super().__init__()
        self.store = store
        self.image_mode = image_mode  # auto (Kitty/Sixel where supported), halfcell or unicode
        self.poll_interval = poll_interval
        self.auto_worker = auto_worker  # submitting from the editor starts a worker if none is alive
        self.collector = IdleCollector()
        self._asked: tuple[str, float] | None = None  # the last action asked to confirm, and when

    def on_mount(self) -> None:
        from workbench.tui.screens.runs import RunsScreen

        self.push_screen(RunsScreen())
        self.collector.start()
        self.set_interval(CHECK_EVERY, self.collector.maybe_collect)

    def on_unmount(self) -> None:
        self.collector.stop()

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.InputEvent):
            self.collector.input_seen()  # the garbage collector waits for a pause in typing
        await super().on_event(event)

    # --- opening screens -------------------------------------------------------------------------

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

    def open_compare(self, run_ids: list[int]) -> None:
        from workbench.tui.screens.compare import CompareScreen

        self.push_screen(CompareScreen(run_ids))

    def open_export(self, run_ids: list[int]) -> None:
        from workbench.tui.screens.export import ExportScreen

        self.push_screen(ExportScreen(run_ids))

    def open_columns(
        self, shown: list[str], usual: list[str], fields: list[str], scope: str, then: Callable
    ) -> None:
        from workbench.tui.screens.columns import ColumnsScreen

        self.push_screen(ColumnsScreen(shown, usual, fields, scope), then)

    def ask(
        self, label: str, then: Callable[[str | None], None], placeholder: str = "", value: str = ""
    ) -> None:
        """One line of text from the user (None when they press Esc), handed to `then`."""
        from workbench.tui.screens.prompt import TextPrompt

        self.push_screen(TextPrompt(label, placeholder, value), then)

    # --- labels on runs ----------------------------------------------------------------------------

    def edit_tags(self, run_ids: list[int]) -> None:
        """`best -draft`: adds best, removes draft, on every run given."""

        def apply(text: str | None) -> None:
            words = (text or "").split()
            add = [w for w in words if not w.startswith("-")]
            remove = [w[1:] for w in words if w.startswith("-") and len(w) > 1]
            if add or remove:
                self.queue_op(
                    lambda store, _rid: queue.annotate(store, run_ids, add=add, remove=remove),
                    run_ids[0],
                    f"tags of run(s) {', '.join(map(str, run_ids))}: " + " ".join(words),
                )

        self.ask(
            f"Tags for run(s) {', '.join(map(str, run_ids))}: words to add, -word to remove",
            apply,
            "best -draft",
        )

    def edit_note(self, run_id: int, note: str | None) -> None:
        def apply(text: str | None) -> None:
            if text is not None:
                self.queue_op(
                    lambda store, rid: queue.annotate(store, [rid], note=text.strip()),
                    run_id,
                    f"run {run_id}: note " + ("set" if text.strip() else "cleared"),
                )

        self.ask(f"Note on run {run_id} (empty clears it)", apply, "why this run", note or "")

    def set_archived(self, run_ids: list[int], archived: bool) -> None:
        self.queue_op(
            lambda store, _rid: queue.annotate(store, run_ids, archived=archived),
            run_ids[0],
            f"run(s) {', '.join(map(str, run_ids))} "
            + ("archived (archived:yes shows them)" if archived else "restored"),
        )

    # --- queue writes ----------------------------------------------------------------------------

    def confirmed(self, what: str) -> bool:
        """True when `what` ("cancel run 3") is asked twice within CONFIRM_SECONDS: the first ask
        only says so. Nothing irreversible happens on one stray key."""
        now = time.monotonic()
        if self._asked is not None and self._asked[0] == what and now - self._asked[1] <= CONFIRM_SECONDS:
            self._asked = None
            return True
        self._asked = (what, now)
        self.notify(f"{what}? press the same key again to confirm", timeout=CONFIRM_SECONDS, markup=False)
        return False

    @work(thread=True, group="queue-ops")
    def queue_op(self, op: Callable, run_id: int, message: str, *args) -> None:
        """`op(store, run_id, *args)` (a store.queue write) off the UI thread: a locked database delays
        it, never the interface. Says `message` when done, or what went wrong."""
        try:
            op(self.store, run_id, *args)
            self.post_message(Notice(message))
        except (StoreError, ValueError) as e:  # refused (a bad tag, a note too long): says why
            self.post_message(Notice(str(e), "error"))
        except Exception as e:  # noqa: BLE001
            self.post_message(Notice(f"store not writable: {e}", "error"))

    def on_notice(self, message: Notice) -> None:
        self.notify(message.text, severity=message.severity, markup=False)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand(
            "New experiment", "Write or load a spec, validate it, submit it", self.action_new_experiment
        )
        yield SystemCommand("Queue and workers", "Workers, queued and running runs", self.action_queue)
        yield SystemCommand("Help", "All key bindings", self.action_help)
        for binding in screen.BINDINGS:
            if isinstance(binding, Binding) and binding.show:
                action = binding.action
                yield SystemCommand(
                    binding.description, f"key: {binding.key}", lambda a=action: screen.run_action(a)
                )


def run_tui(store: Store, image_mode: str = "auto") -> None:
    WorkbenchApp(store, image_mode=image_mode).run()

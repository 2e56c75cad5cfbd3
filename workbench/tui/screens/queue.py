"""Queue and workers: live workers with their devices and runs; cancel, retry, reprioritise; start a worker."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static

from workbench.report import shown_status
from workbench.store import queue
from workbench.store.models import RunStatus
from workbench.store.queries import active_runs
from workbench.tui.components import STATUS_STYLE, Table, plain, progress_text
from workbench.tui.live import LiveScreen
from workbench.tui.messages import QueuePolled


class QueueScreen(LiveScreen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("enter", "open", "Open", show=False),
        Binding("x", "cancel_run", "Cancel"),
        Binding("r", "retry_run", "Retry"),
        Binding("plus,equals_sign", "priority(1)", "Priority +", key_display="+"),
        Binding("minus", "priority(-1)", "Priority -", key_display="-"),
        Binding("w", "start_worker", "Start worker"),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("workers", classes="panel-title")
        workers = Table(id="workers-table", cursor_type="none")
        for col in ("worker", "devices", "pid", "heartbeat", "running"):
            workers.add_column(col, key=col)
        yield workers
        yield Static("queued and running (highest priority first)", classes="panel-title")
        runs = Table(id="queue-runs", cursor_type="row", zebra_stripes=True)
        for col in ("id", "name", "kind", "status", "priority", "device", "progress", "worker"):
            runs.add_column(col, key=col)
        yield runs
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#queue-runs").focus()

    def read(self) -> QueuePolled:
        store = self.app.store
        return QueuePolled(queue.live_workers(store), active_runs(store), store.now())

    def on_queue_polled(self, message: QueuePolled) -> None:
        runs, db_now = message.runs, message.now
        wt = self.query_one("#workers-table", DataTable)
        wt.clear()
        for w in message.workers:
            mine = [str(r.id) for r in runs if r.worker == w.id and r.status == RunStatus.RUNNING]
            wt.add_row(
                plain(w.id),
                plain(
                    ",".join(w.devices)
                    if w.backend == "local"
                    else f"{w.backend} at {w.address}: {len(w.devices)} slot(s)"
                ),
                str(w.pid),
                f"{db_now - w.heartbeat_at:.0f} s ago",
                plain(", ".join(mine) or (f"waiting: {w.waiting}" if w.waiting else "idle")),
            )
        if not message.workers:
            wt.add_row("no live worker", "", "", "", "press w to start one")
        rt = self.query_one("#queue-runs", DataTable)
        cursor = rt.cursor_row
        rt.clear()
        waiting = queue.queued_because(message.workers)
        for r in runs:
            rt.add_row(
                str(r.id),
                plain(r.name),
                r.kind,
                plain(shown_status(r, waiting), style=STATUS_STYLE[r.status]),
                str(r.priority),
                r.device or "",
                progress_text(*r.progress),
                r.worker or "",
                key=str(r.id),
            )
        if runs:
            rt.move_cursor(row=min(cursor, len(runs) - 1))

    def current_run(self) -> int | None:
        rt = self.query_one("#queue-runs", DataTable)
        if not rt.row_count:
            return None
        return int(rt.coordinate_to_cell_key(rt.cursor_coordinate).row_key.value)

    def action_open(self) -> None:
        if (rid := self.current_run()) is not None:
            self.app.open_run(rid)

    def _op(self, op, *args) -> None:
        if (rid := self.current_run()) is not None:
            self.app.queue_op(op, rid, f"run {rid}: done", *args)

    def action_cancel_run(self) -> None:
        if (rid := self.current_run()) is not None and self.app.confirmed(f"cancel run {rid}"):
            self._op(queue.request_cancel)

    def action_retry_run(self) -> None:
        self._op(queue.retry)

    def action_priority(self, delta: int) -> None:
        rt = self.query_one("#queue-runs", DataTable)
        if (rid := self.current_run()) is not None:
            current = int(rt.get_cell(str(rid), "priority"))
            self._op(queue.set_priority, current + delta)

    def action_start_worker(self) -> None:
        from workbench.jobs.runner import ensure_worker

        started = ensure_worker(self.app.store)
        self.notify("started a local worker" if started else "a worker is already alive")

"""The TUI, driven headlessly with App.run_test() and Pilot, over a store the tests fill."""

from __future__ import annotations

import csv
import json
import sqlite3
import time

import numpy as np
import pytest
from sqlalchemy import delete, update

from workbench.jobs.context import RunContext
from workbench.store import queue
from workbench.store.db import StoreError
from workbench.store.models import Artifact, Run, RunEvent
from workbench.tui.app import WorkbenchApp
from workbench.tui.components import CurvesView, ImagesView
from workbench.tui.screens.runs import COLUMNS as ALL_COLUMNS
from workbench.tui.screens.runs import USUAL as COLUMNS_USUAL

T0 = 1_700_000_000.0  # fixed times, so screens render the same on every machine


def fill_store(store, running: bool = True) -> list[int]:
    """Three sleep runs: two succeeded (curves, images, tables, summary), one running (or failed)."""
    _, ids = queue.submit(
        store,
        name="demo",
        kind="sleep",
        spec_text="kind: sleep\n",
        sweep={"seed": [1, 2, 3]},
        runs=[queue.NewRun(f"demo seed={s}", {"kind": "sleep", "seed": s, "steps": 50}) for s in (1, 2, 3)],
    )
    rng = np.random.default_rng(0)
    for i, rid in enumerate(ids):
        queue.claim(store, "host:1", "cpu")
        ctx = RunContext(store, rid)
        for step in range(1, 51):
            ctx.log(step, loss=float(np.exp(-step / (10 + 5 * i)) + 0.01 * rng.random()))
        ctx.progress(50 if i < 2 else 20, 50)
        ctx.flush()
        if i < 2:
            gradient = np.linspace(0, 1, 16 * 16 * 3).reshape(16, 16, 3)
            ctx.image("samples", 25, gradient)
            ctx.image("samples", 50, 1 - gradient)
            ctx.table(
                "samplers",
                [
                    {
                        "sampler": "ddpm",
                        "steps": 1000,
                        "nfe": 1000,
                        "seconds": 1.5 + i,
                        "energy_distance": 0.0015,
                        "energy_distance_ci_low": 0.001,
                        "energy_distance_ci_high": 0.002,
                        "energy_distance_n": 20,
                    },
                    {
                        "sampler": "ddim",
                        "steps": 50,
                        "nfe": 50,
                        "seconds": 0.1,
                        "energy_distance": 0.003,
                        "energy_distance_ci_low": 0.0024,
                        "energy_distance_ci_high": 0.0036,
                        "energy_distance_n": 20,
                    },
                ],
            )
            ctx.summary(
                energy_distance=0.0015 + 0.001 * i,
                energy_distance_ci=[0.001 + 0.001 * i, 0.002 + 0.001 * i],
                energy_distance_n=20,
                guided_accuracy={"0.0": 0.12, "3.0": 0.99},
                guided_accuracy_ci={"0.0": [0.113, 0.127], "3.0": [0.987, 0.992]},
                guided_accuracy_n=8000,
            )
            queue.finish(store, rid, "host:1", "succeeded")
    if not running:
        queue.finish(
            store,
            ids[2],
            "host:1",
            "failed",
            "RuntimeError: loss is nan at step 21",
            'Traceback (most recent call last):\n  File "train.py", line 1, in <module>\n'
            "RuntimeError: loss is nan at step 21\n",
        )
    with store.write() as s:
        s.execute(update(Run).values(created_at=T0, started_at=T0 + 10, heartbeat_at=T0 + 20))
        s.execute(update(Run).where(Run.status == "failed").values(finished_at=T0 + 40))
        s.execute(update(Run).where(Run.status == "succeeded").values(finished_at=T0 + 70))
        s.execute(update(RunEvent).values(time=T0))
        s.execute(update(Run).where(Run.status == "running").values(heartbeat_at=9e9))  # never reaped
    return ids


@pytest.fixture
def filled(store):
    return store, fill_store(store)


def make_app(store) -> WorkbenchApp:
    return WorkbenchApp(store, image_mode="halfcell", poll_interval=0.1, auto_worker=False)


def picked_image(screen) -> str | None:
    views = screen.query(ImagesView)  # empty until the screen has composed
    return views.first().picked if views else None


async def wait_until(pilot, predicate, timeout: float = 5.0):
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await pilot.pause(0.05)
    raise AssertionError("condition not reached in time")


async def test_browse_open_run_and_back(filled):
    store, ids = filled
    app = make_app(store)
    async with app.run_test(size=(100, 30)) as pilot:
        table = app.screen.query_one("#runs-table")
        await wait_until(pilot, lambda: table.row_count == 3)
        await pilot.press("enter")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "RunDetailScreen")
        assert app.screen.run_id == ids[-1]  # newest first
        await pilot.press("escape")
        assert type(app.screen).__name__ == "RunsScreen"


async def test_curve_updates_as_points_arrive(filled):
    store, ids = filled
    app = make_app(store)
    async with app.run_test(size=(100, 30)) as pilot:
        app.open_run(ids[2])
        await wait_until(pilot, lambda: "loss" in app.screen.metrics.series)
        screen = app.screen
        screen.query_one("#tabs").active = "tab-curves"
        assert max(screen.metrics.series["loss"]) == 50
        ctx = RunContext(store, ids[2])
        for step in range(51, 61):
            ctx.log(step, loss=0.001)
        ctx.flush()
        await wait_until(pilot, lambda: max(screen.metrics.series["loss"]) == 60, timeout=1.5)
        x, y = screen.metrics.xy("loss")
        assert x[-1] == 60 and y[-1] == pytest.approx(0.001)
        await pilot.press("2")  # number keys switch tabs
        assert screen.query_one("#tabs").active == "tab-curves"
        await pilot.press("l")
        assert screen.query_one(CurvesView).log_y


async def test_image_artifacts_and_step_navigation(filled):
    store, ids = filled
    app = make_app(store)
    async with app.run_test(size=(100, 30)) as pilot:
        app.open_run(ids[0])
        screen = app.screen
        await wait_until(pilot, lambda: picked_image(screen) == "samples")
        await pilot.press("3")
        await pilot.pause(0.2)
        picture = screen.query_one("#picture")
        assert picture.display and picture.image is not None
        caption = str(screen.query_one("#caption").render())
        assert "step 50" in caption and "(2/2" in caption
        await pilot.press("left_square_bracket")
        assert "step 25" in str(screen.query_one("#caption").render())


async def test_missing_and_corrupt_images_show_a_message(filled):
    store, ids = filled
    for a in queue_artifacts(store, ids[0]):
        (store.home / a.path).write_bytes(b"not a png")  # corrupt
    app = make_app(store)
    async with app.run_test(size=(100, 30)) as pilot:
        app.open_run(ids[0])
        screen = app.screen
        await wait_until(pilot, lambda: picked_image(screen) == "samples")
        assert "cannot show image" in str(screen.query_one("#image-error").render())
        for a in queue_artifacts(store, ids[0]):
            (store.home / a.path).unlink()  # missing
        await pilot.press("left_square_bracket")
        assert "cannot show image" in str(screen.query_one("#image-error").render())
        await pilot.press("escape")
        assert type(app.screen).__name__ == "RunsScreen"


def queue_artifacts(store, run_id):
    from workbench.store.queries import artifacts

    return artifacts(store, run_id, "image")


async def test_filter_and_live_new_runs(filled):
    store, ids = filled
    app = make_app(store)
    async with app.run_test(size=(100, 30)) as pilot:
        table = app.screen.query_one("#runs-table")
        await wait_until(pilot, lambda: table.row_count == 3)
        await pilot.press("slash", *"status:running", "enter")
        assert table.row_count == 1
        await pilot.press("escape")
        assert table.row_count == 3
        queue.submit(
            store,
            name="late",
            kind="sleep",
            spec_text="",
            sweep={},
            runs=[queue.NewRun("late", {"kind": "sleep"})],
        )
        await wait_until(pilot, lambda: table.row_count == 4, timeout=1.0)  # within a second
        await pilot.press("g")
        assert table.row_count == 6  # two experiment header rows


async def test_runs_table_shows_a_page_at_a_time(filled, monkeypatch):
    from workbench.tui.screens import runs

    monkeypatch.setattr(runs, "PAGE", 2)
    store, ids = filled
    app = make_app(store)
    async with app.run_test(size=(100, 30)) as pilot:
        table = app.screen.query_one("#runs-table")
        await wait_until(pilot, lambda: len(app.screen.rows) == 3)
        assert table.row_count == 2
        assert "showing 2 of 3 runs" in str(app.screen.query_one("#runs-count").render())
        await pilot.press("m")
        assert table.row_count == 3
        assert "3 of 3 runs" in str(app.screen.query_one("#runs-count").render())


async def test_polls_of_runs_that_do_not_change_post_nothing(filled):
    """The run detail and compare screens of finished runs read the store and find nothing new: they
    post no message, so the UI thread redraws nothing (the idle CPU bar; before, every poll posted the
    whole run again), and once quiet they read every other tick only."""
    store, ids = filled
    app = make_app(store)
    async with app.run_test(size=(120, 36)) as pilot:
        for open_screen in (lambda: app.open_run(ids[0]), lambda: app.open_compare(ids[:2])):
            open_screen()
            await wait_until(pilot, lambda: type(app.screen).__name__ in ("RunDetailScreen", "CompareScreen"))
            screen = app.screen
            await pilot.pause(1.0)  # the first polls load everything, the next find nothing: quiet
            read, results = screen.read, []
            screen.read = lambda read=read, results=results: results.append(read()) or results[-1]
            start = time.perf_counter()
            await pilot.pause(1.2)
            ticks = (time.perf_counter() - start) / app.poll_interval
            assert not [m for m in results if m is not None], type(screen).__name__
            assert 3 <= len(results) <= ticks / 2 + 2, (type(screen).__name__, len(results), ticks)
            await pilot.press("escape")


async def test_only_the_screen_on_top_polls(filled):
    """One read per poll interval; the runs list under an open run stops reading the store (a screen
    below that polled made Textual repaint the one on top at every poll), and reads at once when it is
    on top again. Seen fail with a screen calling super().on_mount(): its second timer kept polling."""
    store, ids = filled
    app = make_app(store)
    async with app.run_test(size=(120, 36)) as pilot:
        runs_screen = app.screen
        await wait_until(pilot, lambda: len(runs_screen.rows) == 3)
        read, calls = runs_screen.read, []
        runs_screen.read = lambda: calls.append(1) or read()
        start = time.perf_counter()
        await pilot.pause(1.0)  # ten poll intervals: at most one read each
        ticks = (time.perf_counter() - start) / app.poll_interval
        assert 3 <= len(calls) <= ticks + 1, (len(calls), ticks)
        app.open_run(ids[0])
        await wait_until(pilot, lambda: type(app.screen).__name__ == "RunDetailScreen")
        await pilot.pause(0.1)
        calls.clear()
        await pilot.pause(0.6)  # six poll intervals
        assert calls == []
        await pilot.press("escape")
        await wait_until(pilot, lambda: calls, timeout=0.3)  # at once, not after a whole interval


async def test_names_with_brackets_are_shown_as_written(store):
    """A DataTable parses str cells as markup: a sweep named `lr=[1e-3]` or `[bold]x` lost its brackets."""
    queue.submit(
        store,
        name="grid[a]",
        kind="sleep",
        spec_text="",
        sweep={},
        runs=[queue.NewRun("lr=[1e-3] [bold]x", {"kind": "sleep"})],
    )
    app = make_app(store)
    async with app.run_test(size=(160, 30)) as pilot:
        table = app.screen.query_one("#runs-table")
        await wait_until(pilot, lambda: table.row_count == 1)
        await pilot.pause(0.1)
        shown = "\n".join(table.render_line(y).text for y in range(table.size.height))
        assert "lr=[1e-3] [bold]x" in shown and "grid[a]" in shown, shown


async def test_the_next_page_follows_the_cursor(filled, monkeypatch):
    """Scrolling down reaches every run without knowing about `m`: near the end the next page is added
    (appended: the rows already there stay, with the cursor on them)."""
    from workbench.tui.screens import runs

    monkeypatch.setattr(runs, "PAGE", 2)
    store, ids = filled
    app = make_app(store)
    async with app.run_test(size=(100, 30)) as pilot:
        table = app.screen.query_one("#runs-table")
        await wait_until(pilot, lambda: len(app.screen.rows) == 3)
        first_two = [k.value for k in table.rows]
        assert len(first_two) == 2
        await pilot.press("down")
        await wait_until(pilot, lambda: table.row_count == 3)
        assert [k.value for k in table.rows][:2] == first_two and table.cursor_row == 1


async def test_compare_two_runs(filled):
    store, ids = filled
    app = make_app(store)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_until(pilot, lambda: app.screen.query_one("#runs-table").row_count == 3)
        await pilot.press("down", "space", "space", "c")  # the two finished runs
        await wait_until(pilot, lambda: type(app.screen).__name__ == "CompareScreen")
        screen = app.screen
        await wait_until(pilot, lambda: screen.query_one("#spec-diff").row_count > 0)
        diff = screen.query_one("#spec-diff")
        assert [str(diff.get_row_at(i)[0]) for i in range(diff.row_count)] == ["seed"]
        results = screen.query_one("#result-table")
        assert results.row_count == 3  # metrics as rows: energy_distance, guided_accuracy at 0 and 3
        columns = [str(c.label) for c in results.columns.values()]
        assert columns[-1] == f"run {ids[1]} - run {ids[0]}"
        assert str(results.get_row_at(0)[-1]) == "0.001 [0.0002929, 0.001707]"  # 0.0005 * sqrt 2 either side
        screen.query_one("#table-select").value = "samplers"
        await wait_until(pilot, lambda: results.row_count == 4)
        assert set(screen.feeds[ids[0]].series) == {"loss"}
        await pilot.press("2")  # the same picture of both runs, side by side, at the same step
        images = screen.query_one(ImagesView)
        await wait_until(pilot, lambda: images.names() == ["samples"] and len(images.shown()) == 2)
        captions = [str(pane.query_one("#caption").render()) for pane in images.shown()]
        assert {c.split(":")[0] for c in captions} == {f"run {ids[0]}", f"run {ids[1]}"}
        assert all("step 50 (2/2" in c for c in captions)
        await pilot.press("left_square_bracket")
        captions = [str(pane.query_one("#caption").render()) for pane in images.shown()]
        assert all("step 25 (1/2" in c for c in captions), captions


@pytest.mark.parametrize("fmt", ["csv", "md", "latex", "json"])
async def test_export_from_the_browser(fmt, filled, tmp_path):
    store, ids = filled
    app = make_app(store)
    target = tmp_path / f"out.{fmt}"
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.screen.query_one("#runs-table").row_count == 3)
        await pilot.press("down", "space", "space", "e")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "ExportScreen")
        app.screen.query_one("#format").value = fmt
        await pilot.pause(0.1)
        app.screen.query_one("#path").value = str(target)
        app.screen.query_one("#curves").value = True
        app.screen.query_one("#samples").value = True
        await pilot.click("#do-export")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "RunsScreen")
    if fmt == "csv":
        rows = list(csv.DictReader(open(tmp_path / "out-samplers.csv")))
        assert [r["run"] for r in rows] == [str(ids[0])] * 2 + [str(ids[1])] * 2
    elif fmt == "json":
        assert len(json.loads(target.read_text())["samplers"]) == 4
    elif fmt == "md":
        assert "## samplers" in target.read_text()
    else:
        assert "\\begin{tabular}" in target.read_text()
    assert (tmp_path / "out-curve-loss.png").read_bytes()[:4] == b"\x89PNG"
    assert len(list((tmp_path / "out-images").glob("*.png"))) == 2


async def test_submit_from_editor_invalid_then_valid(store):
    app = make_app(store)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("n")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "NewExperimentScreen")
        editor = app.screen.query_one("#editor")
        editor.text = "kind: sleep\nsteps: -3\n"
        await wait_until(pilot, lambda: "line 2: steps" in str(app.screen.query_one("#errors").render()))
        await pilot.press("ctrl+s")
        assert type(app.screen).__name__ == "NewExperimentScreen"
        assert queue_count(store) == 0
        editor.text = "kind: sleep\nsteps: 3\nsweep:\n  seed: [1, 2]\n"
        await wait_until(
            pilot, lambda: "valid: sleep, 2 run(s)" in str(app.screen.query_one("#errors").render())
        )
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "RunsScreen")
        assert queue_count(store) == 2


def queue_count(store) -> int:
    from workbench.store.queries import list_runs

    return len(list_runs(store))


async def test_cancel_a_running_run(filled):
    store, ids = filled
    app = make_app(store)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.screen.query_one("#runs-table").row_count == 3)
        await pilot.press("x")  # the running run is the newest, on top
        await pilot.pause(0.3)
        assert not queue_get(store, ids[2]).cancel_requested  # one stray key cancels nothing ...
        await pilot.press("x")  # ... the same key again does
        await wait_until(pilot, lambda: queue_get(store, ids[2]).cancel_requested)


def queue_get(store, rid):
    from workbench.store.queries import get_run

    return get_run(store, rid)


async def test_survives_a_run_deleted_underneath_and_a_locked_database(filled):
    store, ids = filled
    app = make_app(store)
    async with app.run_test(size=(100, 30)) as pilot:
        app.open_run(ids[1])
        await wait_until(pilot, lambda: app.screen.status == "succeeded")
        with store.write() as s:
            s.execute(delete(Artifact).where(Artifact.run_id == ids[1]))
            s.execute(delete(Run).where(Run.id == ids[1]))
        await wait_until(pilot, lambda: app.screen.gone)
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen.query_one("#runs-table").row_count == 2)
        other = sqlite3.connect(store.home / "workbench.db", isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")  # another process holds the write lock for a while
        await pilot.press("x", "x")  # the write waits in a thread, the UI keeps going
        await pilot.press("slash", "d", "escape")
        await pilot.pause(1.5)
        assert app.screen.query_one("#runs-table").row_count == 2
        other.execute("ROLLBACK")
        other.close()
        await wait_until(pilot, lambda: queue_get(store, ids[2]).cancel_requested, timeout=10)


async def test_queue_screen_and_help(filled):
    store, ids = filled
    local = queue.register_worker(store, ["0", "1"])
    ray = queue.register_worker(store, ["ray:gpu"] * 4, "ray", "10.0.0.1:6379")
    app = make_app(store)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("u")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "QueueScreen")
        runs = app.screen.query_one("#queue-runs")
        await wait_until(pilot, lambda: runs.row_count == 1)
        workers = app.screen.query_one("#workers-table")
        await wait_until(pilot, lambda: workers.row_count == 2)
        devices = {str(workers.get_row_at(i)[0]): str(workers.get_row_at(i)[1]) for i in range(2)}
        assert devices == {local: "0,1", ray: "ray at 10.0.0.1:6379: 4 slot(s)"}
        await pilot.press("plus")
        await wait_until(pilot, lambda: queue_get(store, ids[2]).priority == 1)
        await pilot.press("question_mark")
        assert type(app.screen).__name__ == "HelpScreen"
        await pilot.press("escape", "escape")
        assert type(app.screen).__name__ == "RunsScreen"


@pytest.mark.parametrize("preset", ["smoke", "paper"])
def test_every_kind_template_is_a_valid_spec(preset):
    from workbench.jobs.jobfile import load_job
    from workbench.jobs.kinds import kind_names
    from workbench.tui.screens.new_experiment import template

    for kind in kind_names():
        job = load_job(template(kind, preset), "template")
        assert job.kind == kind and job.runs[0][1].preset == preset


async def test_stale_and_gpu_waiting_runs_are_labelled_not_reaped(filled):
    """The TUI reads; only workers reap. A running run whose lease lapsed reads `running (stale)` and
    stays running in the store; a `device: cuda` run no slot may take reads `queued (needs a GPU)`."""
    store, ids = filled
    with store.write() as s:
        s.execute(update(Run).where(Run.id == ids[2]).values(heartbeat_at=store.now() - 3600))
    _, (gpu_run,) = queue.submit(
        store,
        name="gpu",
        kind="sleep",
        spec_text="",
        sweep={},
        runs=[queue.NewRun("gpu", {"kind": "sleep", "device": "cuda"})],
    )
    app = make_app(store)
    async with app.run_test(size=(120, 30)) as pilot:
        table = app.screen.query_one("#runs-table")
        await wait_until(pilot, lambda: table.row_count == 4)
        assert str(table.get_cell(str(ids[2]), "status")) == "running (stale)"
        assert str(table.get_cell(str(gpu_run), "status")) == "queued (needs a GPU)"
        await pilot.press("u")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "QueueScreen")
        await pilot.pause(0.5)
    assert queue_get(store, ids[2]).status == "running"


async def test_half_cell_images_keep_their_aspect_ratio(filled):
    """A 4:1 picture in a pane that is far taller than it needs: drawn 4:1 (a cell is two half-cell
    pixels tall), not stretched to the pane's height and squeezed sideways as a fixed height made it."""
    store, ids = filled
    RunContext(store, ids[2]).image("wide", None, np.tile(np.linspace(0, 1, 64), (16, 1)))  # still running
    app = make_app(store)
    async with app.run_test(size=(160, 48)) as pilot:
        app.open_run(ids[2])
        screen = app.screen
        await wait_until(pilot, lambda: picked_image(screen) == "wide")
        await pilot.press("3")
        await pilot.pause(0.3)
        picture = screen.query_one("#picture")
        width, height = picture.region.width, picture.region.height
        assert height >= 10 and width / (2 * height) == pytest.approx(4.0, rel=0.1), (width, height)


async def test_a_read_slower_than_the_poll_interval_loses_nothing(filled, monkeypatch):
    """Reads are incremental (each advances the feed): a slow one must be waited for, never cancelled and
    its result dropped, or the runs it read never show."""
    import time

    from workbench.store.feeds import RunsFeed

    store, ids = filled
    slow = RunsFeed.poll

    def slow_poll(self):
        time.sleep(0.25)  # the app polls every 0.1 s
        return slow(self)

    monkeypatch.setattr(RunsFeed, "poll", slow_poll)
    app = make_app(store)
    async with app.run_test(size=(100, 30)) as pilot:
        table = app.screen.query_one("#runs-table")
        await wait_until(pilot, lambda: table.row_count == 3)
        for name in ("late 1", "late 2"):
            queue.submit(
                store,
                name=name,
                kind="sleep",
                spec_text="",
                sweep={},
                runs=[queue.NewRun(name, {"kind": "sleep"})],
            )
            await pilot.pause(0.15)
        await wait_until(pilot, lambda: table.row_count == 5, timeout=3.0)


async def test_a_table_frees_its_render_caches_without_the_garbage_collector():
    """Clearing a DataTable that has drawn its rows leaves its render caches as cyclic garbage (Textual's
    LRUCache links its entries in a ring), which only a full collection frees, pausing the UI; the
    Table every screen uses unlinks them, so reference counting frees them at once."""
    import gc

    from textual.app import App
    from textual.widgets import DataTable

    from workbench.tui.components import Table

    garbage = {}
    for cls in (DataTable, Table):

        class One(App):
            def compose(self, cls=cls):
                yield cls(id="t")

        app = One()
        async with app.run_test(size=(100, 50)) as pilot:
            table = app.query_one("#t")
            table.add_columns("id", "name", "status")
            for i in range(60):
                table.add_row(str(i), f"run {i}", "succeeded")
            await pilot.pause()  # drawn: the caches are full
            gc.collect()
            gc.disable()
            try:
                table.clear()
                garbage[cls.__name__] = gc.collect()
            finally:
                gc.enable()
    assert garbage["DataTable"] > 1000, garbage  # the problem exists in the Textual installed ...
    # ... and Table takes most of it away (4 711 -> 1 864 objects here; what is left is the Strips' own
    # small caches; 57 000 -> 9 500 over eight keystrokes in the runs list)
    assert garbage["Table"] < garbage["DataTable"] / 2, garbage


def test_full_collections_wait_for_a_pause_in_typing():
    import gc

    from workbench.tui.idle_gc import IDLE, RARER, IdleCollector

    before = gc.get_threshold()
    collector = IdleCollector()
    collector.start()
    try:
        assert gc.get_threshold()[2] == before[2] * RARER  # automatic ones made rarer
        collector.input_seen()
        collector.maybe_collect()
        assert collector.collections == 0  # typing: not now
        collector.last_input -= IDLE
        collector.maybe_collect()
        assert collector.collections == 1 and gc.get_freeze_count() > 0  # idle: collected, start-up frozen
        collector.maybe_collect()
        assert collector.collections == 1  # nothing new since: nothing to do
        for _ in range(50_000):  # cyclic garbage, enough for younger collections to promote some
            ring = []
            ring.append(ring)
        collector.maybe_collect()
        assert collector.collections == 2
    finally:
        collector.stop()
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


async def test_a_key_tells_the_collector_that_someone_is_typing(filled):
    store, _ = filled
    app = make_app(store)
    async with app.run_test(size=(100, 30)) as pilot:
        app.collector.last_input = 0.0
        await pilot.press("down")
        assert app.collector.last_input > 0.0


async def test_the_readme_screens_render_as_text(filled):
    """docs/screens.py (the README's screens as text) leans on Textual's compositor: it must keep giving
    the screen's words, not an empty or styled dump."""
    import importlib.util

    from tests.conftest import ROOT

    spec = importlib.util.spec_from_file_location("screens_doc", ROOT / "docs" / "screens.py")
    screens_doc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(screens_doc)
    store, _ = filled
    app = make_app(store)
    async with app.run_test(size=(100, 12)) as pilot:
        await wait_until(pilot, lambda: "demo seed=3" in screens_doc.as_text(app))
        await wait_until(pilot, lambda: "Quit" in screens_doc.as_text(app))  # the footer comes last
        text = screens_doc.as_text(app)
    assert len(text.splitlines()) == 12 and "\x1b" not in text, text


async def test_a_lone_filter_key_applies_at_once_and_a_burst_renders_once(filled):
    """The first key after a pause must not wait for the debounce (it was 50 ms of every keystroke's
    latency); the keys of a burst must not each redraw the table (a paste would redraw it per key)."""
    from textual.widgets import Input

    store, _ = filled
    app = make_app(store)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.query_one("#runs-table").row_count == 3)
        screen._polling.pause()  # a running run's poll redraws the table too: only keys count here
        await wait_until(pilot, lambda: screen._reading is None or screen._reading.is_finished)
        await pilot.pause(0.2)  # a read already under way lands first
        rendered = []
        screen.render_table = lambda: rendered.append(screen.filter_text)
        field = screen.query_one("#filter", Input)
        for text in ("d", "de", "dem", "demo"):  # back to back: a burst
            screen.filter_changed(Input.Changed(field, text))
        assert rendered == ["d"]  # the first at once ...
        await pilot.pause(0.3)
        assert rendered == ["d", "demo"]  # ... the rest once, when the typing paused


async def test_a_long_result_table_shows_its_first_rows_and_says_so(store):
    """Catches: a 50 000-row table filling the DataTable on the UI thread (7 s frozen here)."""
    from workbench.tui.components.tables import MAX_ROWS

    _, (rid,) = queue.submit(
        store, name="long", kind="sleep", spec_text="", sweep={}, runs=[queue.NewRun("r", {"kind": "sleep"})]
    )
    queue.claim(store, "w", "cpu")
    RunContext(store, rid).table("long", [{"i": i} for i in range(MAX_ROWS + 500)])
    queue.finish(store, rid, "w", "succeeded")
    app = make_app(store)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_until(pilot, lambda: app.screen.query_one("#runs-table").row_count == 1)
        await pilot.press("enter")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "RunDetailScreen")
        app.screen.action_tab("tables")
        table = app.screen.query_one("#result-table")
        await wait_until(pilot, lambda: table.row_count == MAX_ROWS)
        note = str(app.screen.query_one("#table-note").render())
        assert f"the first {MAX_ROWS:,} of {MAX_ROWS + 500:,} rows" in note


async def test_the_editor_submits_off_the_ui_thread_and_keeps_the_spec_when_the_store_refuses(
    store, monkeypatch
):
    """Catches: queue.submit called on the UI thread (a locked database froze the interface), and a
    refused write that closed the editor (the spec lost) or claimed it was queued."""
    import threading

    from workbench.store import queue as store_queue

    threads, real_submit, refuse = [], store_queue.submit, [True]

    def submit(*args, **kwargs):
        threads.append(threading.current_thread() is threading.main_thread())
        if refuse[0]:
            raise StoreError("database is locked")
        return real_submit(*args, **kwargs)

    monkeypatch.setattr(store_queue, "submit", submit)
    app = make_app(store)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("n")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "NewExperimentScreen")
        app.screen.query_one("#editor").text = "kind: sleep\nsteps: 3\n"
        await wait_until(pilot, lambda: "valid: sleep" in str(app.screen.query_one("#errors").render()))
        await pilot.press("ctrl+s")
        await wait_until(
            pilot, lambda: any("database is locked" in str(n.message) for n in app._notifications)
        )
        assert type(app.screen).__name__ == "NewExperimentScreen" and queue_count(store) == 0
        assert app.screen.query_one("#editor").text == "kind: sleep\nsteps: 3\n"
        refuse[0] = False
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "RunsScreen")
        assert queue_count(store) == 1
    assert threads == [False, False]


async def test_sort_starts_text_a_to_z_and_the_header_says_which_way(filled):
    """Catches: `s` on to a text column sorting Z to A first (the id column's newest-first carried over),
    and no sign in the header of what is sorted, or which way."""
    store, _ = filled
    app = make_app(store)
    async with app.run_test(size=(160, 30)) as pilot:
        table = app.screen.query_one("#runs-table")
        await wait_until(pilot, lambda: table.row_count == 3)

        def labels() -> dict[str, str]:
            return {str(k.value): c.label.plain for k, c in table.columns.items()}

        assert labels()["id"] == "id ▼" and labels()["name"] == "name"
        await pilot.press("s", "s")  # id -> experiment -> name
        assert labels()["name"] == "name ▲" and labels()["id"] == "id"
        names = [table.get_cell_at((r, 3)).plain for r in range(3)]
        assert names == sorted(names) == ["demo seed=1", "demo seed=2", "demo seed=3"]
        app.screen.sort_reverse = True  # what a second click on the header does
        await pilot.pause()
        assert labels()["name"] == "name ▼" and table.get_cell_at((0, 3)).plain == "demo seed=3"


async def test_the_editor_keeps_edits_from_a_stray_escape_or_a_new_kind(store):
    """Catches: Esc (or choosing another kind) throwing away a spec being written, without a word."""
    from textual.widgets import Select

    app = make_app(store)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("n")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "NewExperimentScreen")
        screen, editor = app.screen, app.screen.query_one("#editor")
        editor.text = "kind: sleep\nsteps: 7\n"
        screen.query_one("#kind", Select).value = "images"
        await pilot.pause()
        assert editor.text == "kind: sleep\nsteps: 7\n"  # kept
        await pilot.press("escape", "escape")  # the first leaves the text area (Textual's way), the
        await pilot.pause()  # second asks
        assert app.screen is screen and editor.text == "kind: sleep\nsteps: 7\n"  # asked, not left
        await pilot.press("escape")  # asked twice: leaves
        await wait_until(pilot, lambda: type(app.screen).__name__ == "RunsScreen")
        await pilot.press("n")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "NewExperimentScreen")
        await pilot.press("escape", "escape")  # nothing typed: nothing to ask
        await wait_until(pilot, lambda: type(app.screen).__name__ == "RunsScreen")


async def test_a_running_runs_overview_says_its_phase_and_the_time_left(filled):
    """Catches an Overview that shows only `running 3000/3000` while the run evaluates for minutes."""
    store, ids = filled
    ctx = RunContext(store, ids[2])  # the running run
    ctx.phase("sampling and scoring", 6)
    ctx.progress(2, 6)
    ctx.flush()
    app = make_app(store)
    async with app.run_test(size=(120, 30)) as pilot:
        app.open_run(ids[2])
        await wait_until(
            pilot, lambda: type(app.screen).__name__ == "RunDetailScreen" and app.screen.query("#phase")
        )
        now = app.screen.query_one("#phase")
        await wait_until(pilot, lambda: "sampling and scoring 2/6" in str(now.render()))
        assert now.display and "left" in str(now.render())
        app.open_run(ids[1])  # a finished run: no phase line
        await wait_until(
            pilot, lambda: getattr(app.screen, "run_id", None) == ids[1] and app.screen.status == "succeeded"
        )
        assert not app.screen.query_one("#phase").display


async def test_the_runs_list_hides_archived_runs_and_filters_on_tags(filled):
    store, ids = filled
    queue.annotate(store, [ids[0]], archived=True)
    queue.annotate(store, [ids[1]], add=["best"], note="keep")
    app = make_app(store)
    async with app.run_test(size=(120, 30)) as pilot:
        screen = app.screen
        table = screen.query_one("#runs-table")
        await wait_until(pilot, lambda: len(screen.rows) == 3 and table.row_count == 2)  # one archived
        screen.filter_text = "tag:best"
        await wait_until(pilot, lambda: table.row_count == 1)
        assert str(table.get_row_at(0)[1]) == str(ids[1])
        screen.filter_text = "archived:yes"
        await wait_until(pilot, lambda: table.row_count == 1 and str(table.get_row_at(0)[1]) == str(ids[0]))
        app.open_run(ids[1])
        await wait_until(pilot, lambda: getattr(app.screen, "status", "") == "succeeded")
        text = str(app.screen.query_one("#summary").render())
        assert "tags best" in text and "note keep" in text


async def test_result_tables_sort_by_a_header_click_numbers_as_numbers(filled):
    """Catches a result table that cannot be sorted, or sorts `0.0015 [..]` as text."""
    from textual.widgets import DataTable

    from workbench.tui.components.tables import sorted_rows

    store, ids = filled
    app = make_app(store)
    async with app.run_test(size=(140, 36)) as pilot:
        app.open_run(ids[0])
        await wait_until(pilot, lambda: getattr(app.screen, "status", "") == "succeeded")
        app.screen.action_tab("tables")
        table = app.screen.query_one("#result-table")
        await wait_until(pilot, lambda: table.row_count == 2)

        def column(name: str) -> list[str]:
            return [str(table.get_row_at(r)[table.get_column_index(name)]) for r in range(table.row_count)]

        assert column("sampler") == ["ddpm", "ddim"]  # as the run wrote them
        key = next(k for k in table.columns if str(k.value).startswith("energy_distance"))
        for expected in (["ddpm", "ddim"], ["ddim", "ddpm"]):  # ascending by the estimate, then the reverse
            table.post_message(DataTable.HeaderSelected(table, key, 0, table.columns[key].label))
            await pilot.pause(0.2)
            assert column("sampler") == expected
        assert str(table.columns[key].label).endswith("▼")
    rows = [{"x": 10}, {"x": None}, {"x": 9}, {"x": "b"}, {"x": 2.5}]
    assert [r["x"] for r in sorted_rows(rows, "x (n=3)", False)] == [2.5, 9, 10, "b", None]
    assert [r["x"] for r in sorted_rows(rows, "x", True)][-1] is None  # empty cells last either way


def digits_run(store) -> tuple[int, np.ndarray]:
    """A finished run whose one picture is a real sample grid: 10 rows (digits 0-9) of 8 of scikit-learn's
    8x8 digits, written through figures.grid_image and ctx.image as the kinds write theirs (the digits
    are scaled up 4x to 32x32 cells, 1 white pixel between). Returns the run and the digits' indices."""
    import torch
    from sklearn.datasets import load_digits

    from workbench.jobs.figures import grid_image

    digits = load_digits()
    picks = np.concatenate([np.flatnonzero(digits.target == d)[:8] for d in range(10)])
    x = torch.from_numpy(digits.images[picks] / 8.0 - 1.0).float()[:, None]
    _, (rid,) = queue.submit(
        store,
        name="digits",
        kind="sleep",
        spec_text="kind: sleep\n",
        sweep={},
        runs=[queue.NewRun("digits", {})],
    )
    assert queue.claim(store, "host:1", "cpu").id == rid
    ctx = RunContext(store, rid)
    ctx.image("digits", None, grid_image(x, 10, 8))
    ctx.flush()
    queue.finish(store, rid, "host:1", "succeeded")
    with store.write() as s:
        s.execute(update(Run).where(Run.id == rid).values(created_at=T0, started_at=T0, finished_at=T0 + 5))
        s.execute(update(RunEvent).values(time=T0))
    return rid, picks


def drawn_pixels(widget) -> np.ndarray:
    """The grey levels a half-cell picture puts on screen, read back from its rendered cells: each `▀` is
    two pixels, its foreground above its background."""
    rows = []
    for strip in widget.render_lines(widget.size.region):
        upper, lower = [], []
        for seg in strip:
            if seg.text != "▀" or seg.style is None:
                continue
            upper.append(np.mean(seg.style.color.get_truecolor()))
            lower.append(np.mean(seg.style.bgcolor.get_truecolor()))
        if upper:
            rows += [upper, lower]
    return np.array(rows)


def read_digit(pixels: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> int:
    """The label of the nearest reference digit to what is drawn (grey levels 0-255, any size), both as
    8x8 images of 0-16 like scikit-learn's."""
    from PIL import Image

    small = np.asarray(Image.fromarray(pixels.astype(np.uint8)).resize((8, 8), Image.BOX), dtype=float)
    small = small / 255.0 * 16.0
    return int(labels[np.argmin(((reference - small) ** 2).sum(axis=(1, 2)))])


async def test_zoom_into_a_digits_grid_makes_its_digits_readable(store):
    """At 80x24 the whole 10x8 grid is drawn at about 2 half-cell pixels a digit. A nearest-neighbour
    reader (the 1717 scikit-learn digits not in the grid) reads the drawn first digit of each of the 10 rows,
    zoomed to one cell (`z` twice; `down` to the next row), as it reads the source digit (9 of 10 right: the
    reader calls the source 5 a 9), and fewer than half of the 80 digits of the whole grid. The cell shown is
    the grid's own pixels, not the cell beside it; `right` moves a cell on; the keys stop at the edge; 1:1 is
    one pixel a half cell. Seen red with the cell box one padding off, and with `down` moving a column."""
    from sklearn.datasets import load_digits

    rid, picks = digits_run(store)
    digits = load_digits()
    others = np.setdiff1d(np.arange(len(digits.target)), picks)
    reference, labels = digits.images[others], digits.target[others]
    app = make_app(store)
    async with app.run_test(size=(80, 24)) as pilot:
        app.open_run(rid)
        screen = app.screen
        await wait_until(pilot, lambda: picked_image(screen) == "digits")
        await pilot.press("3")
        await pilot.pause(0.2)
        view, picture = screen.query_one(ImagesView), screen.query_one("#picture")
        assert picture.image.size == (265, 331)  # the whole grid: 8 x 33 + 1 by 10 x 33 + 1
        await pilot.press("z")
        await pilot.pause(0.1)
        assert view.view.zoom == "row" and picture.image.size == (263, 32)  # first cell to last, no edge
        assert "row 1/10" in str(screen.query_one("#caption").render())
        await pilot.press("z")
        await pilot.pause(0.2)
        assert view.view.zoom == "cell" and picture.image.size == (32, 32)
        read = []
        for row in range(10):
            expected = np.kron(digits.images[picks[row * 8]] / 16 * 255, np.ones((4, 4))).round()
            assert np.abs(np.asarray(picture.image.convert("L"), float) - expected).max() <= 1
            read.append(read_digit(drawn_pixels(picture), reference, labels))
            await pilot.press("down")
            await pilot.pause(0.1)
        source = [read_digit(digits.images[i] / 16 * 255, reference, labels) for i in picks]
        assert read == source[::8] and sum(np.equal(read, range(10))) >= 9, read
        assert "cell row 10/10, column 1/8" in str(
            screen.query_one("#caption").render()
        )  # stopped at the edge
        await pilot.press("right")
        await pilot.pause(0.1)
        expected = np.kron(digits.images[picks[9 * 8 + 1]] / 16 * 255, np.ones((4, 4))).round()
        assert np.abs(np.asarray(picture.image.convert("L"), float) - expected).max() <= 1
        await pilot.press("z")  # 1:1: one pixel a half cell, the crop's own size, not stretched
        await pilot.pause(0.2)
        frame = screen.query_one("#frame").content_size
        assert view.view.zoom == "1:1"
        assert picture.image.size == (min(265, frame.width), min(331, 2 * frame.height))
        assert (picture.region.width, 2 * picture.region.height) == picture.image.size
        await pilot.press("down")
        await pilot.pause(0.1)
        assert "y " + str(frame.height) in str(screen.query_one("#caption").render())  # half a window down
        await pilot.press("z")  # and round to the whole picture
        await pilot.pause(0.2)
        assert view.view.zoom == "fit" and picture.image.size == (265, 331)
        drawn = drawn_pixels(picture)
        h, w = drawn.shape
        whole = [
            read_digit(
                drawn[r * h // 10 : (r + 1) * h // 10, c * w // 8 : (c + 1) * w // 8], reference, labels
            )
            for r in range(10)
            for c in range(8)
        ]
        assert sum(np.equal(whole, source)) < 40, whole  # why the zoom is needed


async def test_the_picture_path_is_shown_whole_and_copied(store):
    """The absolute path is on screen (the store's home included) and `y` copies it (OSC 52)."""
    rid, _ = digits_run(store)
    app = make_app(store)
    copied = []
    app.copy_to_clipboard = copied.append
    async with app.run_test(size=(200, 30)) as pilot:
        app.open_run(rid)
        screen = app.screen
        await wait_until(pilot, lambda: picked_image(screen) == "digits")
        await pilot.press("3")
        await pilot.pause(0.2)
        path = store.home / f"runs/{rid}/images/digits.png"
        assert str(path) in str(screen.query_one("#caption").render())
        await pilot.press("y")
        assert copied == [str(path)]


def test_a_grid_layout_is_read_only_when_it_fits_the_picture():
    """The layout comes from the artifact's notes, which a hostile run writes: a layout that does not
    divide the picture, or is not numbers, means no grid (zoom 1:1 only), never an error."""
    from workbench.tui.components.images import GridLayout

    meta = {"grid": {"rows": 10, "cols": 8, "padding": 1}}
    assert GridLayout.read(meta, (265, 331)) == GridLayout(10, 8, 1, (32, 32))
    assert GridLayout.read(meta, (266, 331)) is None
    assert GridLayout.read({"grid": {"rows": "x", "cols": 8, "padding": 1}}, (265, 331)) is None
    assert GridLayout.read({"grid": {"rows": 0, "cols": 8, "padding": 1}}, (265, 331)) is None
    assert GridLayout.read({"grid": [10, 8, 1]}, (265, 331)) is None
    assert GridLayout.read({}, (265, 331)) is None
    assert GridLayout.read({"grid": {"rows": 400, "cols": 8, "padding": 1}}, (265, 401)) is None  # 0-px cells


def column_labels(table) -> list[str]:
    return [str(c.label).removesuffix(" ▼").removesuffix(" ▲") for c in table.columns.values()]


def shown_ids(table) -> list[int]:
    return [int(k.value) for k in table.rows if str(k.value).isdigit()]


async def test_the_filter_takes_where_terms_on_summary_and_spec_fields(filled):
    """`energy_distance>0.002` (a summary key) and `seed=3` (a spec field) filter as `runs --where`
    does, numbers as numbers; a term no run has a field for searches as text (run names hold `seed=3`),
    never empties the list by itself."""
    store, ids = filled
    app = make_app(store)
    async with app.run_test(size=(120, 30)) as pilot:
        screen = app.screen
        table = screen.query_one("#runs-table")
        await wait_until(pilot, lambda: table.row_count == 3)
        for text, expected in [
            ("energy_distance>0.002", [ids[1]]),
            ("energy_distance<=0.002", [ids[0]]),
            ("seed=3", [ids[2]]),
            ("seed>=2 status:succeeded", [ids[1]]),
            ("nosuchfield=3", []),
            ("name~seed=1", [ids[0]]),
        ]:
            screen.filter_text = text
            await wait_until(pilot, lambda e=expected: shown_ids(table) == e)


async def test_columns_are_chosen_remembered_per_experiment_and_sortable(filled):
    """`o` lists the usual columns and every summary key and spec field; ticking `seed` and
    `energy_distance` and unticking `experiment` changes the table, estimates read `mean [low, high]`,
    the choice is remembered for the experiment (all three runs are in `demo`) by the next session, and a
    click on the new header sorts by its number."""
    from textual.widgets import DataTable, SelectionList

    store, ids = filled
    app = make_app(store)
    async with app.run_test(size=(160, 30)) as pilot:
        screen = app.screen
        table = screen.query_one("#runs-table")
        await wait_until(pilot, lambda: table.row_count == 3)
        await pilot.press("o")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "ColumnsScreen")
        picker = app.screen.query_one(SelectionList)
        offered = [picker.get_option_at_index(i).value for i in range(picker.option_count)]
        assert offered[:8] == list(COLUMNS_USUAL) and {"seed", "steps", "energy_distance"} <= set(offered)
        assert "energy_distance_ci" not in offered and "spec.seed" not in offered
        picker.deselect("experiment")
        picker.select("energy_distance")
        picker.select("seed")
        await pilot.press("escape")
        await wait_until(pilot, lambda: "seed" in column_labels(table))
        assert "experiment" not in column_labels(table)
        assert column_labels(table)[-2:] == ["energy_distance", "seed"]
        row = [str(c) for c in table.get_row(str(ids[0]))]
        assert row[-2:] == ["0.0015 [0.001, 0.002]", "1"]
        column = list(table.columns.values())[-2]  # what a click on its header sends
        table.post_message(DataTable.HeaderSelected(table, column.key, len(table.columns) - 2, column.label))
        await wait_until(pilot, lambda: screen.sort_column == "energy_distance")
        assert shown_ids(table)[:2] == [
            ids[0],
            ids[1],
        ]  # ascending: 0.0015 before 0.0025, the failed run last
    app = make_app(store)
    async with app.run_test(size=(160, 30)) as pilot:
        table = app.screen.query_one("#runs-table")
        await wait_until(pilot, lambda: table.row_count == 3 and "seed" in column_labels(table))
        app.screen.filter_text = "status:running"  # still one experiment: the same columns
        await wait_until(pilot, lambda: shown_ids(table) == [ids[2]])
        assert "seed" in column_labels(table)


def test_remembered_columns_survive_a_hostile_file(home):
    """tui.json is written by anyone with the home: too big, not JSON, wrong shapes -> the usual columns."""
    from workbench.tui import prefs

    home.mkdir(parents=True, exist_ok=True)
    for text in [
        "not json",
        "[1, 2]",
        '{"columns": [1]}',
        '{"columns": {"demo": "seed"}}',
        " " * (300 << 10),
    ]:
        (home / prefs.PREFS_FILE).write_text(text)
        assert prefs.columns(home, "demo") is None
    (home / prefs.PREFS_FILE).write_text('{"columns": {"demo": ["seed", 3, "", "\\u001b[2Jx", "top1"]}}')
    assert prefs.columns(home, "demo") == ["seed", "top1"]
    prefs.save_columns(home, "other", ["x"])
    assert prefs.columns(home, "demo") == ["seed", "top1"] and prefs.columns(home, "other") == ["x"]


async def test_the_overview_of_a_running_run_says_what_it_uses(filled):
    """The newest `system/` samples of a running run, under its phase: `uses CPU 150 % of a core, 1.2 GB;
    GPU 80 %, 9.5 GB`; a finished run's Overview has no such line."""
    from workbench.jobs.resources import CPU, GPU, GPU_MEMORY, MEMORY

    store, ids = filled
    ctx = RunContext(store, ids[2])
    ctx._sampled(10, {CPU: 90.0, MEMORY: 1.0})
    ctx._sampled(20, {CPU: 150.0, MEMORY: 1.24, GPU: 80.0, GPU_MEMORY: 9.5})
    ctx.flush()
    app = make_app(store)
    async with app.run_test(size=(120, 30)) as pilot:
        app.open_run(ids[2])
        screen = app.screen
        await wait_until(
            pilot, lambda: screen.query("#phase") and "uses" in str(screen.query_one("#phase").render())
        )
        assert "uses CPU 150 % of a core, 1.2 GB; GPU 80 %, 9.5 GB" in str(
            screen.query_one("#phase").render()
        )
        await pilot.press("escape")
        app.open_run(ids[0])
        await pilot.pause(0.5)
        assert not app.screen.query_one("#phase").display


@pytest.mark.parametrize(
    "width, expected",
    [
        (80, ["", "id", "status", "headline", "name"]),
        (120, ["", "id", "name", "status", "progress", "headline"]),
        (160, list(ALL_COLUMNS)),
    ],
)
async def test_until_columns_are_chosen_the_headline_fits_the_terminal(filled, width, expected):
    """At 80 columns the usual nine columns put the headline 100 columns to the right, off screen: until
    columns are chosen, fewer are shown, the headline before a (long) name, and it ends inside the
    terminal. Seen red with the nine columns at every width."""
    store, ids = filled
    app = make_app(store)
    async with app.run_test(size=(width, 24)) as pilot:
        table = app.screen.query_one("#runs-table")
        await wait_until(pilot, lambda: table.row_count == 3 and column_labels(table) == expected)
        widths = [c.get_render_width(table) for c in table.columns.values()]
        end = sum(widths[: expected.index("headline") + 1])
        assert end <= width, (widths, width)


async def test_tags_a_note_and_archiving_from_the_tui(filled):
    """`t` on a run's screen asks for `best -draft` and tags it; `N` edits its note (the old one offered);
    `a` archives a finished run and the runs list hides it until `archived:yes`; a bad tag is refused
    with the reason and nothing changes. Before, tags and notes could be set from the CLI only."""
    from workbench.store.queries import get_run

    store, ids = filled
    queue.annotate(store, [ids[0]], add=["draft"], note="first try")
    app = make_app(store)
    async with app.run_test(size=(120, 30)) as pilot:
        app.open_run(ids[0])
        screen = app.screen
        await wait_until(pilot, lambda: screen.record is not None)
        await pilot.press("t")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "TextPrompt")
        await pilot.press(*"best -draft", "enter")
        await wait_until(pilot, lambda: list(get_run(store, ids[0]).tags) == ["best"])
        await pilot.press("N")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "TextPrompt")
        assert app.screen.query_one("#prompt-input").value == "first try"
        app.screen.query_one("#prompt-input").value = "the one to beat"
        await pilot.press("enter")
        await wait_until(pilot, lambda: get_run(store, ids[0]).note == "the one to beat")
        await pilot.press("t")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "TextPrompt")
        await pilot.press(*"bad/tag", "enter")
        await pilot.pause(0.5)
        assert list(get_run(store, ids[0]).tags) == ["best"]
        await pilot.press("a")
        await wait_until(pilot, lambda: get_run(store, ids[0]).archived)
        await pilot.press("escape")
        table = app.screen.query_one("#runs-table")
        await wait_until(pilot, lambda: shown_ids(table) == [ids[2], ids[1]])
        app.screen.filter_text = "archived:yes tag:best"
        await wait_until(pilot, lambda: shown_ids(table) == [ids[0]])

"""Snapshots of every screen at 80x24 and 160x48, images forced to the half-cell renderer.

Update after an intended change of the look: pytest tests/test_tui_snapshots.py --snapshot-update
"""

from __future__ import annotations

import pytest

from tests.test_tui import digits_run, fill_store, make_app

SIZES = [(80, 24), (160, 48)]


@pytest.fixture
def app(store, monkeypatch):
    monkeypatch.setenv(
        "HOME", str(store.home.parent)
    )  # picture paths print as ~/wbhome/...: the same each run
    ids = fill_store(store, running=False)
    app = make_app(store)
    app.ids = ids
    return app


@pytest.fixture
def digits_app(app, store):
    rid, _ = digits_run(store)
    app.ids = [rid]
    return app


async def settle(pilot, seconds: float = 0.6) -> None:
    await pilot.pause(seconds)
    await pilot.wait_for_scheduled_animations()


def open_tab(tab: str | None, run_index: int = 0):
    async def before(pilot):
        await settle(pilot, 0.4)
        pilot.app.open_run(pilot.app.ids[run_index])
        await settle(pilot)
        if tab:
            pilot.app.screen.query_one("#tabs").active = tab
        await settle(pilot)
        for scroll in pilot.app.screen.query("VerticalScroll"):
            scroll.scroll_home(animate=False)
        await settle(pilot, 0.2)

    return before


async def editor_with_an_error(pilot):
    """The editor after live validation has marked a bad field (waits for it: validation is debounced)."""
    await settle(pilot, 0.4)
    await pilot.press("n")
    await settle(pilot)
    editor = pilot.app.screen.query_one("#editor")
    editor.cursor_blink = False
    editor.text = "kind: sleep\nname: demo\nsteps: -3\nsweep:\n  seed: [1, 2]\n"
    errors = pilot.app.screen.query_one("#errors")
    for _ in range(100):
        if "line 3: steps" in str(errors.render()):
            break
        await pilot.pause(0.05)
    await settle(pilot, 0.3)


def pressed(*keys: str):
    async def before(pilot):
        await settle(pilot, 0.4)
        await pilot.press(*keys)
        await settle(pilot, 0.8)

    return before


@pytest.fixture(params=SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def size(request):
    return request.param


def test_runs_list(app, size, snap_compare):
    """Home: three runs newest first (the failed one in red), progress bars, durations, the headline
    with its interval, the filter bar, the count line and the footer's keys."""
    assert snap_compare(app, terminal_size=size, run_before=settle)


def test_run_detail_overview(app, size, snap_compare):
    """A finished run opens on Overview: status, times, the summary with intervals and n, the spec as
    YAML; the tab bar and the footer with `12345 Tabs` and `[] Step` grouped."""
    assert snap_compare(app, terminal_size=size, run_before=open_tab(None))


def test_run_detail_curves(app, size, snap_compare):
    """Curves: the metric picker on `loss` and the braille plot of 50 steps, axes labelled."""
    assert snap_compare(app, terminal_size=size, run_before=open_tab("tab-curves"))


def test_run_detail_images(app, size, snap_compare):
    """Images: the picker of image artifacts, the newest step shown (`2/2`), drawn in half cells with
    the image's own aspect ratio (a 16x16 picture stays square)."""
    assert snap_compare(app, terminal_size=size, run_before=open_tab("tab-images"))


def test_run_detail_tables(app, size, snap_compare):
    """Tables: the `samplers` table with each estimate as `mean [low, high]` and n in the header."""
    assert snap_compare(app, terminal_size=size, run_before=open_tab("tab-tables"))


def test_run_detail_log_of_a_failed_run(app, size, snap_compare):
    """Log of a failed run: its events, then the error's traceback highlighted in red."""
    assert snap_compare(app, terminal_size=size, run_before=open_tab("tab-log", run_index=2))


def test_new_experiment_with_an_error(app, size, snap_compare):
    """The spec editor after live validation: the bad field named with its line, nothing submitted."""
    assert snap_compare(app, terminal_size=size, run_before=editor_with_an_error)


def test_queue(app, size, snap_compare):
    """`u`: no live worker (with how to start one) and an empty queue: finished and failed runs leave it."""
    assert snap_compare(app, terminal_size=size, run_before=pressed("u"))


def test_help(app, size, snap_compare):
    """`?` on the runs list: every key of the screen with its name, those the footer has no room for
    (`m` More rows, `escape` Clear filter) included."""
    assert snap_compare(app, terminal_size=size, run_before=pressed("question_mark"))


def test_compare_two_runs(app, size, snap_compare):
    """Two marked runs compared: their loss curves overlaid, and tabs for images, spec diff, results."""
    assert snap_compare(app, terminal_size=size, run_before=pressed("space", "space", "c"))


def test_export(app, size, snap_compare):
    """`e` on a marked run: the format, the path, and three boxes for tables, curves and samples."""
    assert snap_compare(app, terminal_size=size, run_before=pressed("space", "e"))


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
@pytest.mark.parametrize("zoom", [0, 1, 2, 3], ids=["whole", "row", "cell", "1to1"])
def test_a_digits_grid_zoomed(digits_app, size, zoom, snap_compare):
    """A 10x8 grid of digits in the Images tab: whole (noise at 80x24), one row (`z`: ten digits' worth
    of one class, legible), one cell (`z z`: one digit fills the pane), 1:1 (`z z z`: a pixel a half
    cell, the crop's own size); the caption says which, and the picture's path."""

    async def before(pilot):
        await open_tab("tab-images")(pilot)
        await pilot.press(*["z"] * zoom)
        await settle(pilot, 0.4)

    assert snap_compare(digits_app, terminal_size=size, run_before=before)

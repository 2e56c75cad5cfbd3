"""Snapshots of every screen at 80x24 and 160x48, images forced to the half-cell renderer.

Update after an intended change of the look: pytest tests/test_tui_snapshots.py --snapshot-update
"""

from __future__ import annotations

import pytest

from tests.test_tui import fill_store, make_app

SIZES = [(80, 24), (160, 48)]


@pytest.fixture
def app(store):
    ids = fill_store(store, running=False)
    app = make_app(store)
    app.ids = ids
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


SCREENS = {
    "runs": None,
    "detail_overview": open_tab(None),
    "detail_curves": open_tab("tab-curves"),
    "detail_images": open_tab("tab-images"),
    "detail_tables": open_tab("tab-tables"),
    "detail_log_failed": open_tab("tab-log", run_index=2),
}


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


SCREENS["new_experiment"] = editor_with_an_error


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
@pytest.mark.parametrize("name", list(SCREENS))
def test_screen_snapshot(name, size, app, snap_compare):
    before = SCREENS[name] or settle
    assert snap_compare(app, terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
@pytest.mark.parametrize(
    ("name", "keys"),
    [
        ("queue", ["u"]),
        ("help", ["question_mark"]),
        ("compare", ["space", "space", "c"]),
        ("export", ["space", "e"]),
    ],
    ids=["queue", "help", "compare", "export"],
)
def test_pushed_screen_snapshot(name, keys, size, app, snap_compare):
    async def before(pilot):
        await settle(pilot, 0.4)
        await pilot.press(*keys)
        await settle(pilot, 0.8)

    assert snap_compare(app, terminal_size=size, run_before=before)

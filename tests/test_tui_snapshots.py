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
}
# Not snapshotted yet, because their first frames are not deterministic (they are covered by the Pilot
# tests in test_tui.py): the Log tab of a failed run (scroll position) and the editor (async validation).


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
@pytest.mark.parametrize("name", list(SCREENS))
def test_screen_snapshot(name, size, app, snap_compare):
    before = SCREENS[name] or settle
    assert snap_compare(app, terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
@pytest.mark.parametrize(("name", "keys"), [("queue", ["u"]), ("help", ["question_mark"]),
                                            ("compare", ["space", "space", "c"]), ("export", ["space", "e"])],
                         ids=["queue", "help", "compare", "export"])
def test_pushed_screen_snapshot(name, keys, size, app, snap_compare):
    async def before(pilot):
        await settle(pilot, 0.4)
        await pilot.press(*keys)
        await settle(pilot, 0.8)

    assert snap_compare(app, terminal_size=size, run_before=before)

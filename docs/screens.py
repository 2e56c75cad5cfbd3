"""The README's TUI screens as text: the runs list and a run's Curves (or Tables) tab, rendered headless
over a store (the one `make demo` fills, by default), so the README shows the screens as they are, not as
they were.

    python docs/screens.py [--home .wbhome] [--run 2] [--width 100] [--tab curves|tables] [--height 16]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def as_text(app) -> str:
    """What the terminal shows, without colours (Textual's export_screenshot, as text instead of SVG)."""
    from rich.console import Console

    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), record=True, color_system=None)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return "\n".join(line.rstrip() for line in console.export_text().splitlines()).rstrip("\n")


async def until(pilot, condition, timeout: float = 20.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await pilot.pause(0.05)
    raise TimeoutError("the screen did not get there")


async def render(home: Path, run_id: int, width: int, tab: str = "curves", height: int = 16) -> None:
    from workbench.store.db import Store
    from workbench.tui.app import WorkbenchApp

    app = WorkbenchApp(Store(home=home), image_mode="halfcell", auto_worker=False)
    async with app.run_test(size=(width, 11)) as pilot:
        await until(pilot, lambda: app.screen.query_one("#runs-table").row_count > 0)
        await pilot.pause(0.3)
        print(as_text(app), end="\n\n")
        await pilot.resize_terminal(width, height)
        app.open_run(run_id)
        await pilot.pause(0.3)
        if tab == "curves":
            await pilot.press("2")
            await until(pilot, lambda: bool(app.screen.metrics.series))
        else:
            await pilot.press("4")
            await until(pilot, lambda: bool(app.screen.query_one("#tables").tables))
        await pilot.pause(0.5)
        print(as_text(app))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--home", type=Path, default=Path(os.environ.get("WORKBENCH_HOME") or ROOT / ".wbhome")
    )
    parser.add_argument("--run", type=int, default=2, help="the run whose curves to show")
    parser.add_argument("--width", type=int, default=100)
    parser.add_argument("--tab", choices=("curves", "tables"), default="curves")
    parser.add_argument("--height", type=int, default=16, help="rows of the run's screen")
    args = parser.parse_args()
    asyncio.run(render(args.home, args.run, args.width, args.tab, args.height))


if __name__ == "__main__":
    main()

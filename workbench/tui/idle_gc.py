"""Full garbage collections at idle moments, not in the middle of a keystroke.

CPython's collection of its oldest generation walks every tracked object: in the TUI every widget, run
record and render cache. bench/tui_bench.py caught it pausing the UI thread for 50-160 ms in the middle
of a filter keystroke or a curve refresh (the worst of 50 of each), and it cannot simply be avoided:
Textual's render caches drop circular linked lists whenever they are cleared (every DataTable update
does), so cyclic garbage piles up and must be collected. IdleCollector moves the full collections to
moments when nobody is typing:

- the first idle moment collects and then freezes what is left (modules, classes, the open screen, the
  runs read at start-up): it lives about as long as the app, and no collection walks it again. Once only:
  frozen objects that become cyclic garbage are not freed until the app stops (and unfreezes them);
- automatic full collections are made ten times rarer (they still come when the app is never idle);
- afterwards a full collection runs when the app has had no input for IDLE seconds and objects were
  promoted since the last one (an app left alone, reading nothing new, collects nothing).
"""

from __future__ import annotations

import gc
import time

IDLE = 1.0  # seconds without a key or a mouse event before a full collection may run
CHECK_EVERY = 1.0
RARER = 10  # automatic full collections are this many times rarer


class IdleCollector:
    def __init__(self) -> None:
        self.last_input = time.monotonic()
        self.frozen = False
        self.collections = 0  # full collections this collector ran (tests read it)
        self._threshold = gc.get_threshold()

    def start(self) -> None:
        t0, t1, t2 = self._threshold
        gc.set_threshold(t0, t1, t2 * RARER)

    def stop(self) -> None:
        gc.set_threshold(*self._threshold)
        if self.frozen:  # an app run inside a longer process (the tests) leaves nothing frozen behind
            gc.unfreeze()
            self.frozen = False

    def input_seen(self) -> None:
        self.last_input = time.monotonic()

    def maybe_collect(self) -> None:
        """Collect fully if the app is idle and there is something new to look at."""
        if time.monotonic() - self.last_input < IDLE:
            return
        if self.frozen and gc.get_count()[2] == 0:  # no younger collection promoted anything since
            return
        gc.collect()
        self.collections += 1
        if not self.frozen:
            gc.freeze()
            self.frozen = True

"""What the TUI remembers between sessions: the runs table's columns, per experiment. One small JSON
file in the store's home, beside the runs it describes; a missing, oversized or unreadable file means
the defaults, never an error (it is a convenience, and anyone with the home can write it)."""

from __future__ import annotations

import json
from pathlib import Path

from workbench.store.artifacts import place, write_temporary

PREFS_FILE = "tui.json"
MAX_BYTES = 256 << 10
MAX_COLUMNS = 40  # per experiment: more would not fit any terminal
MAX_NAME = 200


def columns(home: Path, experiment: str) -> list[str] | None:
    """The columns chosen for `experiment` ("" for all runs), or None when none were."""
    remembered = _read(home).get("columns")
    chosen = remembered.get(experiment) if isinstance(remembered, dict) else None
    if not isinstance(chosen, list):
        return None
    # printable only: a name becomes a column header on the terminal
    names = [c for c in chosen if isinstance(c, str) and 0 < len(c) <= MAX_NAME and c.isprintable()]
    return names[:MAX_COLUMNS] or None


def save_columns(home: Path, experiment: str, names: list[str]) -> None:
    """Remember `names` for `experiment`; raises OSError when the home is not writable."""
    prefs = _read(home)
    chosen = prefs.setdefault("columns", {})
    if not isinstance(chosen, dict):
        chosen = prefs["columns"] = {}
    chosen[experiment[:MAX_NAME]] = [n for n in names if 0 < len(n) <= MAX_NAME][:MAX_COLUMNS]
    data = json.dumps(prefs, indent=1).encode()
    if len(data) > MAX_BYTES:  # too many experiments remembered: keep the one just chosen
        data = json.dumps({"columns": {experiment[:MAX_NAME]: chosen[experiment[:MAX_NAME]]}}).encode()
    path = Path(home) / PREFS_FILE
    place(write_temporary(path, data), path)


def _read(home: Path) -> dict:
    path = Path(home) / PREFS_FILE
    try:
        if path.stat().st_size > MAX_BYTES:
            return {}
        prefs = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return prefs if isinstance(prefs, dict) else {}

"""The one way the CLI and the TUI open the store."""

from __future__ import annotations

from workbench.store.db import Store


def open_store() -> Store:
    """The store at $WORKBENCH_DB_URL / $WORKBENCH_HOME (see store.db)."""
    return Store()

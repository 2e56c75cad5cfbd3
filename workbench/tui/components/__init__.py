"""The TUI's reusable widgets, one import away: screens take them from here, never from each other.

Each is imported on first use (PEP 562), so the runs list, the first screen, does not pay for plotext,
numpy and Pillow before it shows.
"""

from __future__ import annotations

import importlib

_MODULE_OF = {
    "STATUS_STYLE": "common",
    "Table": "common",
    "fill_data_table": "common",
    "plain": "common",
    "progress_text": "common",
    "CurvePlot": "curves",
    "CurvesView": "curves",
    "ArtifactImage": "images",
    "ImagesView": "images",
    "Picture": "images",
    "image_widget_class": "images",
    "ResultTables": "tables",
}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)

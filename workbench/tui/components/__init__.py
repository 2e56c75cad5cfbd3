"""The TUI's reusable widgets, one import away: screens take them from here, never from each other."""

from workbench.tui.components.common import STATUS_STYLE, fill_data_table, progress_text
from workbench.tui.components.curves import CurvePlot, CurvesView
from workbench.tui.components.images import ArtifactImage, ImagesView, Picture, image_widget_class
from workbench.tui.components.tables import ResultTables

__all__ = [
    "STATUS_STYLE",
    "ArtifactImage",
    "CurvePlot",
    "CurvesView",
    "ImagesView",
    "Picture",
    "ResultTables",
    "fill_data_table",
    "image_widget_class",
    "progress_text",
]

"""matplotlib for run pictures: headless (Agg), imported only by the runs that draw."""

from __future__ import annotations


def pyplot():
    """matplotlib.pyplot on the Agg backend (workers have no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt

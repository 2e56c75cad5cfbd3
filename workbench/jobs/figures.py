"""Run pictures: image grids, and matplotlib headless (Agg), imported only by the runs that draw."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch

GRID_PADDING = 1  # pixels of white between cells


@dataclass(frozen=True)
class Grid:
    """A grid of pictures and where its cells lie: ctx.image stores `layout()` in the artifact's notes, so the
    TUI can zoom into one row or one cell of it."""

    pixels: np.ndarray  # HxWxC uint8
    rows: int
    cols: int
    padding: int = GRID_PADDING

    def layout(self) -> dict[str, Any]:
        return {"rows": self.rows, "cols": self.cols, "padding": self.padding}


def pyplot():
    """matplotlib.pyplot on the Agg backend (workers have no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def to_pixels(x: torch.Tensor, scale: int = 1) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> uint8 grid rows; the caller arranges them."""
    import torch

    x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    if scale > 1:
        x = x.repeat_interleave(scale, -1).repeat_interleave(scale, -2)
    return x.numpy()


def grid_image(x: torch.Tensor, rows: int, cols: int) -> Grid:
    """A rows x cols grid with 1-pixel gaps (cells left empty when x is short); small images are scaled up
    to stay legible."""
    import torch
    from torchvision.utils import make_grid

    scale = max(1, 32 // x.shape[-1])
    pixels = torch.from_numpy(to_pixels(x[: rows * cols], scale))
    grid = make_grid(pixels, nrow=cols, padding=GRID_PADDING, pad_value=255)
    return Grid(grid.permute(1, 2, 0).numpy(), -(-len(pixels) // cols), min(cols, len(pixels)))

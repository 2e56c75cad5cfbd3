"""The built-in datasets' names and class names: what specs name before any data is loaded.

Only typing here, so specs validate without numpy or torch; diffusion imports data, never the reverse.
"""

from __future__ import annotations

from typing import Literal

Toy2DName = Literal["swissroll", "moons", "gaussians"]
ImageDatasetName = Literal["digits", "mnist", "fashion_mnist", "cifar10", "imagefolder"]

# class names of the built-in datasets, by label (specs name classes by these before any data is loaded)
CLASS_NAMES = {
    "digits": [str(i) for i in range(10)],
    "mnist": [str(i) for i in range(10)],
    "fashion_mnist": [
        "t-shirt",
        "trouser",
        "pullover",
        "dress",
        "coat",
        "sandal",
        "shirt",
        "sneaker",
        "bag",
        "ankle boot",
    ],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
}

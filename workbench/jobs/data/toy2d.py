"""2D datasets, generated: SwissRoll (unlabelled), two moons (2 classes), 8-Gaussian mixture (8 classes).

Train and held-out sets come from independent seeds. Labelled sets know each class's region, so
the fraction of class-conditional samples that land in their class's region can be measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.datasets import make_moons, make_swiss_roll
from sklearn.neighbors import KNeighborsClassifier

from workbench.jobs.data.names import Toy2DName

GAUSSIAN_RADIUS = 2.0
GAUSSIAN_STD = 0.4  # classes overlap a little, so guidance has something to sharpen


@dataclass
class Toy2D:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray | None
    num_classes: int
    region: object | None = None  # x -> class whose region x lies in

    def classify(self, x: np.ndarray) -> np.ndarray:
        return self.region(x)


def _swissroll(n: int, seed: int, labels: np.ndarray | None = None) -> tuple[np.ndarray, None]:
    x, _ = make_swiss_roll(n, noise=0.5, random_state=seed)
    return (x[:, [0, 2]] / 5.0).astype(np.float32), None


def _moons(n: int, seed: int, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    counts = np.bincount(labels, minlength=2) if labels is not None else n
    x, y = make_moons(
        tuple(int(c) for c in counts) if labels is not None else n, noise=0.08, random_state=seed
    )
    if labels is not None:  # point i from class labels[i]
        x = np.concatenate([x[y == c] for c in (0, 1)])[
            np.argsort(np.argsort(labels, kind="stable"), kind="stable")
        ]
        y = labels
    return ((x - [0.5, 0.25]) * 1.5).astype(np.float32), y.astype(np.int64)


def gaussian_centers(k: int = 8) -> np.ndarray:
    angles = 2 * np.pi * np.arange(k) / k
    return GAUSSIAN_RADIUS * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _gaussians(n: int, seed: int, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 8, n) if labels is None else labels
    x = gaussian_centers()[y] + GAUSSIAN_STD * rng.standard_normal((n, 2))
    return x.astype(np.float32), y.astype(np.int64)


def make_points(
    name: Toy2DName, n: int, seed: int, labels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """n fresh points (and labels) of a dataset; different seeds give independent draws. labels (labelled
    sets): point i is drawn from class labels[i], so a real sample can have a sample set's class balance."""
    return {"swissroll": _swissroll, "moons": _moons, "gaussians": _gaussians}[name](n, seed, labels)


def load_toy2d(name: Toy2DName, n_train: int, n_test: int, seed: int) -> Toy2D:
    x_train, y_train = make_points(name, n_train, 2 * seed)
    x_test, y_test = make_points(name, n_test, 2 * seed + 1)
    if y_train is None:
        return Toy2D(name, x_train, None, x_test, None, 0)
    if name == "gaussians":
        centers = gaussian_centers()

        def region(x: np.ndarray) -> np.ndarray:  # the Voronoi cell of the nearest centre
            return np.argmin(((x[:, None, :] - centers[None]) ** 2).sum(-1), axis=1)
    else:
        knn = KNeighborsClassifier(n_neighbors=15).fit(x_train, y_train)
        region = knn.predict
    return Toy2D(name, x_train, y_train, x_test, y_test, int(y_train.max()) + 1, region)

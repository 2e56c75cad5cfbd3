"""Few-shot probes: how well a small head classifies from features with k labelled images per class.

Each repeat draws k training images per class (seeded by seed, k and the repeat, so every feature
source is probed on the same subsets and sources compare paired), fits the head on them (standardised
on the same k per class) and scores it on the whole test split. The accuracy is the mean over repeats
with its t-interval; the per-repeat accuracies are kept for paired comparisons.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from workbench.jobs.metrics.stats import Estimate, mean_ci

Head = Literal["linear", "mlp"]


@dataclass(frozen=True)
class ProbeResult:
    head: str
    k: int | None  # labelled images per class; None: the whole training split
    accuracies: tuple[float, ...]  # one per repeat, on the whole test split
    val_accuracies: tuple[float, ...] = ()  # one per repeat, on the validation images (when given)

    @property
    def accuracy(self) -> Estimate:
        return mean_ci(self.accuracies)

    @property
    def val_accuracy(self) -> Estimate | None:
        return mean_ci(self.val_accuracies) if self.val_accuracies else None


def validation_split(labels: np.ndarray, per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(validation indices, the rest): `per_class` images of every class set aside, seeded apart from every
    k-shot draw, to choose settings on without touching the test split."""
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    if per_class < 1 or per_class >= counts.min():
        rarest = classes[counts.argmin()]
        raise ValueError(
            f"val_per_class = {per_class}: class {rarest} has {counts.min()} training images, and the probes "
            "need some of them too (use a smaller val_per_class, or select_on: test)"
        )
    rng = np.random.default_rng([seed, 0x5E1EC7])  # no k-shot stream is seeded this way ([seed, k, r])
    val = np.sort(
        np.concatenate(
            [rng.choice(np.flatnonzero(labels == c), size=per_class, replace=False) for c in classes]
        )
    )
    return val, np.setdiff1d(np.arange(len(labels)), val)


def kshot_subsets(labels: np.ndarray, k: int | None, repeats: int, seed: int = 0) -> list[np.ndarray]:
    """For each repeat, the indices of k images of every class (sorted); k None: every image, once."""
    labels = np.asarray(labels)
    if k is None:
        return [np.arange(len(labels))]
    classes, counts = np.unique(labels, return_counts=True)
    if k < 1 or k > counts.min():
        rarest = classes[counts.argmin()]
        raise ValueError(
            f"k = {k} labelled images per class: class {rarest} has {counts.min()} (k must be 1 to that)"
        )
    subsets = []
    for r in range(repeats):
        rng = np.random.default_rng([seed, k, r])
        picked = [rng.choice(np.flatnonzero(labels == c), size=k, replace=False) for c in classes]
        subsets.append(np.sort(np.concatenate(picked)))
    return subsets


def make_head(head: Head, seed: int):
    """A scikit-learn pipeline: standardise, then a logistic regression or a one-hidden-layer MLP."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if head == "linear":
        model = LogisticRegression(max_iter=2000, random_state=seed)
    elif head == "mlp":
        model = MLPClassifier(hidden_layer_sizes=(256,), solver="lbfgs", max_iter=200, random_state=seed)
    else:
        raise ValueError(f"head {head!r}: use linear or mlp")
    return make_pipeline(StandardScaler(), model)


def probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    subsets: list[np.ndarray],
    head: Head = "linear",
    k: int | None = None,
    seed: int = 0,
    val: tuple[np.ndarray, np.ndarray] | None = None,
) -> ProbeResult:
    """Fit `head` on each subset of the training features and score it on all of the test features (and
    on `val`, (features, labels) of validation images, when given)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    accuracies, val_accuracies = [], []
    for r, idx in enumerate(subsets):
        model = make_head(head, seed + r)
        # Few-shot matrices are small: BLAS threads only contend (several times slower beside another
        # process on 2 cores). A few-shot MLP rarely converges in max_iter; its test accuracy says how it did.
        with threadpool_limits(1 if len(idx) < 5000 else None), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(train_x[idx], train_y[idx])
            accuracies.append(float((model.predict(test_x) == test_y).mean()))
            if val is not None:
                val_accuracies.append(float((model.predict(val[0]) == val[1]).mean()))
    return ProbeResult(head, k, tuple(accuracies), tuple(val_accuracies))

"""Few-shot probes (jobs/metrics/probes.py): k-shot subsets, heads, accuracies with intervals."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.jobs.metrics.probes import kshot_subsets, probe


def blobs(n_per_class: int, classes: int, separation: float, seed: int):
    """Gaussian blobs in 20 dimensions, one per class, about `separation` standard deviations apart (the
    centres are the same for every seed; `seed` draws the points)."""
    centres = np.random.default_rng(0).normal(size=(classes, 20)) * separation
    y = np.repeat(np.arange(classes), n_per_class)
    return centres[y] + np.random.default_rng(seed).normal(size=(len(y), 20)), y


def test_kshot_subsets_hold_exactly_k_of_each_class_and_differ_between_repeats():
    y = np.repeat(np.arange(4), [30, 12, 50, 7])
    subsets = kshot_subsets(y, 5, repeats=3, seed=1)
    for idx in subsets:
        assert np.bincount(y[idx], minlength=4).tolist() == [5, 5, 5, 5] and len(set(idx)) == 20
    assert len({tuple(s) for s in subsets}) == 3  # three different draws ...
    again = kshot_subsets(y, 5, repeats=3, seed=1)
    assert all((a == b).all() for a, b in zip(subsets, again, strict=True))  # ... the same every time
    assert kshot_subsets(y, None, repeats=3)[0].tolist() == list(range(len(y)))
    with pytest.raises(ValueError, match="class 3 has 7"):
        kshot_subsets(y, 8, repeats=1)


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_a_probe_finds_separable_classes_and_not_random_labels(head):
    x, y = blobs(60, 5, separation=3.0, seed=1)
    test_x, test_y = blobs(40, 5, separation=3.0, seed=2)  # the same classes, other points
    subsets = kshot_subsets(y, 10, repeats=4, seed=0)
    good = probe(x, y, test_x, test_y, subsets, head=head, k=10).accuracy
    assert good.n == 4 and good.value > 0.95 and good.has_interval

    shuffled = np.random.default_rng(3).permutation(y)  # labels that say nothing about the features
    chance = probe(x, shuffled, test_x, test_y, kshot_subsets(shuffled, 10, repeats=6, seed=0), head=head)
    assert chance.accuracy.value < 0.45  # 5 classes: chance is 0.2

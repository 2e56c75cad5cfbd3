"""Sample distances against closed forms and against their estimators' promises, counted over draws."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from workbench.jobs.metrics.distances import energy_distance, frechet_distance, kernel_distance
from workbench.jobs.metrics.stats import mean_ci


def mean_abs_normal(mu: float, var: float) -> float:
    """E|Z| for Z ~ N(mu, var) (the folded normal's mean)."""
    sd = math.sqrt(var)
    return sd * math.sqrt(2 / math.pi) * math.exp(-(mu**2) / (2 * var)) + mu * (1 - 2 * norm.cdf(-mu / sd))


def test_the_unbiased_energy_distance_is_unbiased_and_the_v_statistic_is_not():
    """300 pairs of samples of 30 from N(0, 1) and N(0.5, 1): the exact energy distance is
    2 E|N(0.5, 2)| - 2 E|N(0, 2)| = 0.1396. The unbiased estimator's mean over the draws has it inside its
    interval; the V-statistic's sits about E|X - X'| (1/30 + 1/30) = 0.075 above it. Between two samples
    of one distribution the unbiased estimator averages 0."""
    exact = 2 * mean_abs_normal(0.5, 2) - 2 * mean_abs_normal(0.0, 2)
    rng = np.random.default_rng(0)
    draws = [
        (torch.from_numpy(rng.normal(0, 1, (30, 1))), torch.from_numpy(rng.normal(0.5, 1, (30, 1))))
        for _ in range(300)
    ]
    unbiased = mean_ci([energy_distance(x, y) for x, y in draws])
    v_stat = mean_ci([energy_distance(x, y, unbiased=False) for x, y in draws])
    assert exact == pytest.approx(0.1396, abs=1e-4)
    assert unbiased.contains(exact), unbiased
    assert v_stat.low > exact + 0.05, v_stat
    same = mean_ci([energy_distance(x, torch.from_numpy(rng.normal(0, 1, (30, 1)))) for x, _ in draws])
    assert same.contains(0.0), same


def test_frechet_distance_of_gaussian_samples_matches_the_closed_form():
    """N(0, I) against N(m, 4I) in 3-d: |m|^2 + 3 (1 + 4 - 2 * 2) = |m|^2 + 3, estimated from 20 000 draws."""
    rng = np.random.default_rng(1)
    a = rng.normal(size=(20_000, 3))
    b = rng.normal(size=(20_000, 3)) * 2 + [1.0, -1.0, 0.5]
    assert frechet_distance(a, b) == pytest.approx(2.25 + 3, rel=0.03)
    assert frechet_distance(a, a + [2, 0, 0]) == pytest.approx(4.0, rel=1e-6)  # a pure shift: exact


def test_kernel_distance_is_torchmetrics_kid_statistic_and_unbiased_at_any_size():
    """Equal sizes: the same number as torchmetrics' poly_mmd (KID's statistic). Unequal sizes (which
    poly_mmd cannot take), one distribution: the mean over 200 draws has 0 inside its interval."""
    from torchmetrics.image.kid import poly_mmd

    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(200, 16)), rng.normal(0.2, 1.0, size=(200, 16))
    assert kernel_distance(a, b) == pytest.approx(
        float(poly_mmd(torch.from_numpy(b), torch.from_numpy(a))), rel=1e-9
    )
    null = mean_ci(
        [kernel_distance(rng.normal(size=(40, 16)), rng.normal(size=(150, 16))) for _ in range(200)]
    )
    assert null.contains(0.0), null

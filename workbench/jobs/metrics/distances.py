"""Distances between sample sets."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import torch


def energy_distance(x: torch.Tensor, y: torch.Tensor, unbiased: bool = True) -> float:
    """Energy distance 2E|X-Y| - E|X-X'| - E|Y-Y'| (Szekely & Rizzo) between two samples.

    unbiased (the default): the within-sample means skip each point's distance to itself (U-statistics),
    so the estimate's expectation is the true distance, 0 when the distributions agree; it can come out
    below 0. unbiased=False: the V-statistic, which counts those zeros and so sits above the true
    distance by about E|X-X'|/n + E|Y-Y'|/m: what a finite real sample scores against another.
    """
    x, y = x.double().flatten(1), y.double().flatten(1)
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError(f"energy distance needs at least 2 points a side, got {n} and {m}")
    cross = torch.cdist(x, y).mean()
    within_x = torch.cdist(x, x).sum() / (n * (n - 1) if unbiased else n * n)
    within_y = torch.cdist(y, y).sum() / (m * (m - 1) if unbiased else m * m)
    return float(2 * cross - within_x - within_y)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (rows are samples), as in FID:
    |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # few samples in many dimensions give a singular product: handled below
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(s_a @ s_b)
    if not np.isfinite(covmean).all():  # singular product: nudge both covariances, as the FID reference does
        eps = np.eye(len(s_a)) * 1e-6
        covmean = scipy.linalg.sqrtm((s_a + eps) @ (s_b + eps))
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean))


def kernel_distance(a: np.ndarray, b: np.ndarray, degree: int = 3) -> float:
    """KID's statistic (Binkowski et al. 2018): the unbiased squared MMD between two feature sets (rows are
    samples) under the polynomial kernel k(u, v) = (u.v / d + 1)^3. Unlike the Frechet distance its
    expectation does not depend on the sample sizes (0 for one distribution), and the sizes may differ.
    torchmetrics' poly_mmd computes the same for equal sizes only."""
    a, b = (
        torch.as_tensor(np.asarray(a), dtype=torch.float64),
        torch.as_tensor(np.asarray(b), dtype=torch.float64),
    )
    n, m, d = len(a), len(b), a.shape[1]
    if n < 2 or m < 2:
        raise ValueError(f"a kernel distance needs at least 2 samples a side, got {n} and {m}")
    k_aa, k_bb, k_ab = ((u @ v.T / d + 1) ** degree for u, v in ((a, a), (b, b), (a, b)))
    within_a = (k_aa.sum() - k_aa.diagonal().sum()) / (n * (n - 1))
    within_b = (k_bb.sum() - k_bb.diagonal().sum()) / (m * (m - 1))
    return float(within_a + within_b - 2 * k_ab.mean())

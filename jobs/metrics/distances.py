"""Distances between sample sets."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import torch


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Energy distance 2E|X-Y| - E|X-X'| - E|Y-Y'| (Szekely & Rizzo), V-statistic form.

    Zero only when the distributions agree; the V-statistic of two finite samples from the same
    distribution is positive (about E|X-X'| (1/n + 1/m)), which is why reports put it next to the
    real-vs-real floor computed with the same sample sizes.
    """
    x, y = x.double().flatten(1), y.double().flatten(1)
    return float(2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean())


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

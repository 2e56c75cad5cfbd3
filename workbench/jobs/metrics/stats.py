"""Estimates with their uncertainty: the one place a kind turns repeated draws into a reported number.

- `mean_ci(values)`: the mean over repeats (seeds, sample sets) with a t-interval.
- `bootstrap_ci(values, statistic)`: a BCa bootstrap interval, for statistics whose sampling
  distribution is skewed (ratios, medians).
- `share_ci(successes, n)`: a share (an accuracy over n draws) with its Wilson interval.
- `ratio_ci(a, b)`: mean(a) / mean(b) for two independent sets of draws (a model's distance over the
  real-vs-real floor), with Fieller's interval, which stays honest when the denominator is noisy.
- `paired_ci(a, b)`: the difference a - b of two settings measured on the same draws (same seeds,
  same sample sets), with its t-interval: how settings are compared. Two settings' own intervals
  overlapping says little when their draws share most of their noise; the paired interval says it.
- `verdicts(differences, margin)`: better / matches / worse / unresolved for several settings against one
  reference, by paired t-tests and equivalence tests (TOST) under Holm's correction.

All come back as an `Estimate` (value, interval, number of draws), which writes itself into a run's
summary as `key`, `key_ci` and `key_n`. One draw gives no interval: its ends are NaN (stored as null).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    value: float  # the point estimate: a mean, a share, a difference
    low: float  # the interval's ends (NaN when the draws cannot give one)
    high: float
    n: int | None  # the draws it came from (None only when read back from a row that does not say)
    sd: float = math.nan  # standard deviation of the draws, where there are draws
    confidence: float = CONFIDENCE

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    def contains(self, x: float) -> bool:
        return self.has_interval and self.low <= x <= self.high

    def excludes(self, x: float) -> bool:
        """True only when the interval exists and lies wholly on one side of x (a difference from x
        the draws support)."""
        return self.has_interval and not self.low <= x <= self.high

    def summary(self, key: str) -> dict[str, object]:
        """`{key: value, key_ci: [low, high], key_n: n}`, the shape every kind's summary uses."""
        return {key: self.value, f"{key}_ci": [self.low, self.high], f"{key}_n": self.n}

    def columns(self, key: str) -> dict[str, object]:
        """`{key, key_ci_low, key_ci_high, key_n}`: the columns of a result table's estimated value."""
        return {key: self.value, f"{key}_ci_low": self.low, f"{key}_ci_high": self.high, f"{key}_n": self.n}

    @staticmethod
    def column_names(key: str) -> tuple[str, ...]:
        """Every column that may hold part of `key`'s estimate besides `key` itself, in the shapes
        `summary` and `columns` write: `key_ci`, `key_ci_low`, `key_ci_high`, `key_n`; for a mean column
        `x_mean` also `x_ci*` and `x_n`; for a mapping entry `key[sub]` each of them with `[sub]`
        (`guided_accuracy_ci[3.0]`), and the entry's shared `x_n`."""
        base, bracket, sub = key.partition("[")
        sub = bracket + sub
        names: list[str] = []
        for stem in dict.fromkeys((base, base.removesuffix("_mean"))):
            names += [f"{stem}_ci{sub}", f"{stem}_ci_low{sub}", f"{stem}_ci_high{sub}", f"{stem}_n{sub}"]
            names += [f"{stem}_n"] if sub else []
        return tuple(dict.fromkeys(names))

    @classmethod
    def from_columns(cls, row: Mapping[str, Any], key: str) -> Estimate | None:
        """The estimate a result row or a flattened summary holds at `key`, read back from whichever of
        `column_names(key)` it was written to; None when `key` is not a number or has no interval there.
        A missing or null end reads as NaN."""
        value = row.get(key)
        if not isinstance(value, int | float) or isinstance(value, bool):
            return None
        base, bracket, sub = key.partition("[")
        sub = bracket + sub
        for stem in dict.fromkeys((base, base.removesuffix("_mean"))):
            ci = row.get(f"{stem}_ci{sub}")
            if isinstance(ci, list | tuple) and len(ci) == 2:
                low, high = ci
            elif f"{stem}_ci_low{sub}" in row or f"{stem}_ci_high{sub}" in row:
                low, high = row.get(f"{stem}_ci_low{sub}"), row.get(f"{stem}_ci_high{sub}")
            else:
                continue
            n = row.get(f"{stem}_n{sub}", row.get(f"{stem}_n"))
            return cls(
                float(value),
                math.nan if low is None else float(low),
                math.nan if high is None else float(high),
                n if isinstance(n, int) and not isinstance(n, bool) else None,
            )
        return None

    def __str__(self) -> str:
        if not self.has_interval:
            return f"{self.value:.4g} (n={self.n}, no interval)"
        return f"{self.value:.4g} [{self.low:.4g}, {self.high:.4g}] (n={self.n})"


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    x = np.asarray(values, dtype=float).ravel()
    if x.size == 0:
        raise ValueError("no draws to estimate from")
    if not np.isfinite(x).all():
        raise ValueError(f"{int((~np.isfinite(x)).sum())} of {x.size} draws are not finite")
    return x


def mean_ci(values: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE) -> Estimate:
    """Mean of independent draws with a Student t-interval (sample standard deviation, n - 1 degrees)."""
    from scipy import stats

    x = _finite(values)
    n, mean = x.size, float(x.mean())
    if n < 2:
        return Estimate(mean, math.nan, math.nan, n, confidence=confidence)
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half, n, sd, confidence)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    statistic: Callable[[np.ndarray], float] = np.mean,
    confidence: float = CONFIDENCE,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Estimate:
    """`statistic` of the draws with a BCa bootstrap interval (scipy.stats.bootstrap, seeded)."""
    from scipy import stats

    x = _finite(values)
    value = float(statistic(x))
    if x.size < 2 or np.ptp(x) == 0:
        return Estimate(
            value, math.nan, math.nan, x.size, float(x.std(ddof=1)) if x.size > 1 else math.nan, confidence
        )
    import inspect

    seeded = {
        (
            "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"
        ): np.random.default_rng(seed)
    }  # scipy renamed it in 1.15
    res = stats.bootstrap(
        (x,),
        lambda s, axis=-1: np.apply_along_axis(statistic, axis, s),
        confidence_level=confidence,
        n_resamples=n_resamples,
        method="BCa",
        **seeded,
    )
    return Estimate(
        value,
        float(res.confidence_interval.low),
        float(res.confidence_interval.high),
        x.size,
        float(x.std(ddof=1)),
        confidence,
    )


def share_ci(successes: int, n: int, confidence: float = CONFIDENCE) -> Estimate:
    """A share of n draws with its Wilson score interval (good at shares near 0 or 1, unlike k/n +- z*se)."""
    from scipy import stats

    if n < 1:
        raise ValueError("a share needs at least one draw")
    if not 0 <= successes <= n:
        raise ValueError(f"{successes} successes out of {n} draws")
    ci = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return Estimate(successes / n, float(ci.low), float(ci.high), int(n), confidence=confidence)


def paired_ci(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE
) -> Estimate:
    """The mean difference a - b over draws both settings share (draw i of a and of b: the same seed or
    sample set), with its t-interval."""
    x, y = _finite(a), _finite(b)
    if x.shape != y.shape:
        raise ValueError(f"paired draws must match one to one: {x.size} and {y.size}")
    return mean_ci(x - y, confidence)


def ratio_ci(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE
) -> Estimate:
    """mean(a) / mean(b) for independent draws a and b, with Fieller's interval: the ratios r for which
    mean(a) - r mean(b) is within its t-interval of 0 (Welch degrees of freedom). When the denominator's
    own interval reaches 0 the ratio is unbounded and the interval's ends are NaN. n is the smaller
    number of draws."""
    from scipy import stats

    x, y = _finite(a), _finite(b)
    ma, mb = float(x.mean()), float(y.mean())
    value = ma / mb if mb else math.nan
    n = min(x.size, y.size)
    if n < 2:
        return Estimate(value, math.nan, math.nan, n, confidence=confidence)
    va, vb = float(x.var(ddof=1)) / x.size, float(y.var(ddof=1)) / y.size
    # Welch-Satterthwaite degrees of freedom of mean(a) - r mean(b) at the estimate r
    parts = (va, value**2 * vb) if math.isfinite(value) else (va, vb)
    df_ = (
        sum(parts) ** 2 / sum(p**2 / (m - 1) for p, m in zip(parts, (x.size, y.size), strict=True) if p > 0)
        if sum(parts) > 0
        else math.inf
    )
    t = float(stats.t.ppf(0.5 + confidence / 2, df_))
    # (ma - r mb)^2 <= t^2 (va + r^2 vb): a quadratic in r, bounded when mb is clear of 0
    qa, qb, qc = mb**2 - t**2 * vb, -2 * ma * mb, ma**2 - t**2 * va
    disc = qb**2 - 4 * qa * qc
    if qa <= 0 or disc < 0:
        return Estimate(value, math.nan, math.nan, n, confidence=confidence)
    root = math.sqrt(disc)
    return Estimate(value, (-qb - root) / (2 * qa), (-qb + root) / (2 * qa), n, confidence=confidence)


def summary_entry(row: dict, key: str) -> dict[str, object]:
    """A result-table row's estimated column (key, key_ci_low, key_ci_high, key_n) as summary keys:
    key, key_ci, key_n."""
    return {
        key: row[key],
        f"{key}_ci": [row[f"{key}_ci_low"], row[f"{key}_ci_high"]],
        f"{key}_n": row[f"{key}_n"],
    }


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values: rejecting where adjusted <= alpha holds the family-wise error
    rate at alpha over all the hypotheses given, whatever their dependence."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out, running = [1.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def paired_tests(differences: Sequence[float] | np.ndarray, margin: float) -> tuple[float, float]:
    """Paired differences d (setting - reference, one per set): the two-sided t-test's p-value for a mean
    of 0, and the two one-sided tests' (TOST) p-value for equivalence, |mean| < margin. NaN with fewer
    than 2 finite differences."""
    from scipy import stats

    d = _finite(differences)
    if d.size < 2:
        return math.nan, math.nan
    mean, se, df_ = float(d.mean()), float(d.std(ddof=1)) / math.sqrt(d.size), d.size - 1
    if se == 0:  # every set moved by the same amount: the tests are certain
        return float(mean == 0), float(abs(mean) >= margin)
    p_diff = 2 * float(stats.t.sf(abs(mean) / se, df_))
    p_eq = max(float(stats.t.sf((mean + margin) / se, df_)), float(stats.t.cdf((mean - margin) / se, df_)))
    return p_diff, p_eq


def verdicts(
    differences: Sequence[Sequence[float] | np.ndarray], margin: float, alpha: float = 1 - CONFIDENCE
) -> list[dict[str, object]]:
    """What each setting's paired differences from one reference support (lower is better), with the
    family-wise error rate held at alpha over every test of every setting (Holm over 2 per setting):
    "better" (the mean differs from 0, below it), "matches" (equivalence: within +-margin by TOST),
    "worse" (differs, above it, and not shown within the margin), or "unresolved". A margin <= 0 allows
    no match. Each entry: verdict, p_difference and p_equivalence (Holm-adjusted)."""
    raw = [paired_tests(d, max(margin, 0.0)) for d in differences]  # margin 0: p_equivalence >= 0.5
    flat = holm([1.0 if math.isnan(p) else p for pair in raw for p in pair])
    out = []
    for i, d in enumerate(differences):
        p_diff, p_eq = flat[2 * i], flat[2 * i + 1]
        mean = float(_finite(d).mean()) if _finite(d).size else math.nan
        if p_diff <= alpha and mean < 0:
            v = "better"
        elif p_eq <= alpha:
            v = "matches"
        elif p_diff <= alpha:
            v = "worse"
        else:
            v = "unresolved"
        out.append({"verdict": v, "p_difference": p_diff, "p_equivalence": p_eq})
    return out

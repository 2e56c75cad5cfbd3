"""workbench.jobs.metrics.stats against what the intervals promise, counted over simulated experiments, and
against published values; never against the module's own formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from workbench.jobs.metrics.stats import (
    Estimate,
    bootstrap_ci,
    holm,
    mean_ci,
    paired_ci,
    paired_tests,
    ratio_ci,
    share_ci,
    verdicts,
)


def test_the_t_interval_covers_the_true_mean_95_percent_of_the_time():
    """2000 experiments of 8 draws: a z-interval (1.96 instead of t's 2.36) or a population sd (ddof=0)
    covers about 92 % or less, outside the band; the band is +- 3 binomial sds around 0.95."""
    rng = np.random.default_rng(0)
    hits = sum(mean_ci(rng.normal(3.0, 2.0, 8)).contains(3.0) for _ in range(2000))
    assert 0.935 <= hits / 2000 <= 0.965, hits / 2000


def test_the_t_interval_of_known_draws():
    """Draws 1..5: mean 3, sd sqrt(2.5), t(0.975, 4) = 2.776 (tables) -> 3 +- 1.963."""
    e = mean_ci([1, 2, 3, 4, 5])
    assert (e.value, e.n) == (3.0, 5) and e.sd == pytest.approx(math.sqrt(2.5))
    assert (e.low, e.high) == pytest.approx((3 - 1.963, 3 + 1.963), abs=1e-3)


def test_one_draw_gives_no_interval_and_bad_draws_are_refused():
    e = mean_ci([0.7])
    assert e.value == 0.7 and not e.has_interval and not e.contains(0.7) and not e.excludes(0.0)
    assert "no interval" in str(e)
    with pytest.raises(ValueError, match="not finite"):
        mean_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="no draws"):
        mean_ci([])


@pytest.mark.parametrize(
    "k, n, low, high",
    [(0, 10, 0.0, 0.2775), (5, 10, 0.2366, 0.7634), (9, 10, 0.5958, 0.9821), (95, 100, 0.8882, 0.9785)],
)
def test_wilson_intervals_match_published_values(k, n, low, high):
    """Wilson score intervals without continuity correction (Newcombe 1998, Table I, and calculators);
    a normal-approximation interval would give (0, 0) for 0/10 and an upper end above 1 for 95/100."""
    e = share_ci(k, n)
    assert e.value == k / n and e.n == n
    assert (e.low, e.high) == pytest.approx((low, high), abs=2e-4)


def test_a_share_needs_sensible_counts():
    with pytest.raises(ValueError):
        share_ci(3, 0)
    with pytest.raises(ValueError):
        share_ci(11, 10)


def test_a_paired_comparison_sees_what_two_separate_intervals_hide():
    """Two settings measured on the same 10 seeds: the seed moves both by +-1, the setting by 0.1. Their
    own intervals overlap, yet the paired difference excludes zero; unpaired draws must be refused."""
    rng = np.random.default_rng(1)
    seed_effect = rng.normal(0, 1.0, 10)
    a = 5.0 + seed_effect + rng.normal(0, 0.02, 10)
    b = 4.9 + seed_effect + rng.normal(0, 0.02, 10)
    ea, eb = mean_ci(a), mean_ci(b)
    assert ea.low < eb.high and eb.low < ea.high  # overlapping
    d = paired_ci(a, b)
    assert d.excludes(0.0) and d.contains(0.1)
    with pytest.raises(ValueError, match="one to one"):
        paired_ci(a, b[:9])


def test_bootstrap_covers_a_skewed_mean_and_is_reproducible():
    """Means of 30 exponential draws (skewed): BCa covers the true mean about 95 % of the time (200
    experiments: +- 3 sds is 0.90-1.0); an interval around the wrong statistic or a swapped tail falls out."""
    rng = np.random.default_rng(2)
    hits = sum(bootstrap_ci(rng.exponential(2.0, 30), n_resamples=999).contains(2.0) for _ in range(200))
    assert 0.90 <= hits / 200 <= 1.0, hits / 200
    x = rng.exponential(2.0, 30)
    assert bootstrap_ci(x, np.median) == bootstrap_ci(x, np.median)  # seeded: the same interval twice


def test_an_estimate_writes_itself_into_a_summary():
    e = Estimate(0.93, 0.9, 0.95, 200)
    assert e.summary("guided_accuracy") == {
        "guided_accuracy": 0.93,
        "guided_accuracy_ci": [0.9, 0.95],
        "guided_accuracy_n": 200,
    }
    assert str(e) == "0.93 [0.9, 0.95] (n=200)"


def test_fieller_ratio_interval_covers_the_true_ratio_95_percent_of_the_time():
    """2000 experiments: 5 draws of a (mean 3) over 5 draws of b (mean 2), each with noise 0.35x its mean.
    So few draws are where t and z part: this interval covers 0.952; with z in place of t it covers
    0.91 (measured), outside the band."""
    rng = np.random.default_rng(2)
    hits = 0
    for _ in range(2000):
        a, b = rng.normal(3.0, 1.05, 5), rng.normal(2.0, 0.7, 5)
        hits += ratio_ci(a, b).contains(1.5)
    assert 0.935 <= hits / 2000 <= 0.965, hits / 2000


def test_a_ratio_whose_denominator_may_be_zero_has_no_interval():
    e = ratio_ci([1.0, 1.2, 0.9], [0.1, -0.2, 0.15])  # the denominator's interval straddles 0
    assert not e.has_interval and e.n == 3
    e = ratio_ci([3.0, 3.1, 2.9, 3.0], [1.0, 1.1, 0.9, 1.0])
    assert e.value == pytest.approx(3.0) and e.low < 3.0 < e.high


def test_holm_adjusts_as_the_textbook_does():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1, then made non-decreasing: 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0]


def test_paired_tests_agree_with_scipys_one_sample_tests():
    from scipy import stats

    d = np.array([0.3, -0.1, 0.25, 0.05, 0.4])
    p_diff, p_eq = paired_tests(d, margin=0.5)
    assert p_diff == pytest.approx(stats.ttest_1samp(d, 0).pvalue)
    tost = max(
        stats.ttest_1samp(d, 0.5, alternative="less").pvalue,
        stats.ttest_1samp(d, -0.5, alternative="greater").pvalue,
    )
    assert p_eq == pytest.approx(tost)


def test_verdicts_call_an_equal_sampler_a_match_and_one_twice_the_margin_off_worse():
    """Six settings over 5 paired sets (noise 0.3, margin 1): four equal to the reference in distribution,
    one better by twice the margin, one worse by twice the margin; 200 repeats, counted."""
    rng = np.random.default_rng(0)
    counts = {"equal": [], "better": [], "worse": []}
    for _ in range(200):
        shifts = [0, 0, 0, 0, -2, 2]
        got = [v["verdict"] for v in verdicts([rng.normal(m, 0.3, 5) for m in shifts], margin=1.0)]
        counts["equal"] += got[:4]
        counts["better"].append(got[4])
        counts["worse"].append(got[5])
    assert counts["equal"].count("matches") / 800 >= 0.9
    assert counts["better"].count("better") / 200 >= 0.95 and counts["worse"].count("worse") / 200 >= 0.95


def test_verdicts_hold_the_familywise_error_over_the_run():
    """Eight settings, each exactly one margin worse than the reference (the edge of equivalence): calling
    any of them "matches" is an error. Over 2000 runs of 5 sets, Holm keeps runs with an error near 5 %
    (measured 0.03); eight uncorrected tests make one in 0.34 of runs (measured, and the test goes red)."""
    rng = np.random.default_rng(1)
    runs_with_error = sum(
        any(v["verdict"] == "matches" for v in verdicts([rng.normal(1.0, 0.5, 5) for _ in range(8)], 1.0))
        for _ in range(2000)
    )
    assert runs_with_error / 2000 <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 2000), runs_with_error / 2000


def test_no_margin_allows_no_match_and_too_few_sets_resolve_nothing():
    assert verdicts([np.zeros(5) + 1e-9 * np.arange(5)], margin=0.0)[0]["verdict"] == "unresolved"
    assert verdicts([[0.1]], margin=1.0)[0]["verdict"] == "unresolved"


def test_an_estimate_column_without_an_estimate_in_one_row_is_one_blank_cell():
    """A row that has no estimate (the first recipe against itself) leaves its cell empty instead of
    spilling its interval columns into the table."""
    from workbench.report import readable_rows

    rows = [
        {"recipe": "a", "d": None, "d_ci_low": None, "d_ci_high": None, "d_n": None},
        {"recipe": "b", "d": 0.1, "d_ci_low": -0.02, "d_ci_high": 0.2, "d_n": 400},
    ]
    assert readable_rows(rows) == [
        {"recipe": "a", "d (n=400)": None},
        {"recipe": "b", "d (n=400)": "0.1 [-0.02, 0.2]"},
    ]


def test_an_estimate_reads_back_from_every_shape_the_kinds_write_it_in():
    """Summary shape (`x_ci` list, `x_n`), table shape (`x_ci_low`, `x_ci_high`), a mean column whose
    interval is named without `_mean` (feature_sweep's `accuracy_mean` beside `accuracy_ci_low`), and a
    mapping entry (`guided_accuracy[3.0]` with `guided_accuracy_ci[3.0]`, n shared)."""
    summary = {"fid": 3.0, "fid_ci": [2.0, 4.0], "fid_n": 5}
    assert Estimate.from_columns(summary, "fid") == Estimate(3.0, 2.0, 4.0, 5)
    table = {"fid": 3.0, "fid_ci_low": 2.0, "fid_ci_high": None}
    est = Estimate.from_columns(table, "fid")
    assert (est.low, math.isnan(est.high), est.n, est.has_interval) == (2.0, True, None, False)
    probe = {"accuracy_mean": 0.8, "accuracy_ci_low": 0.7, "accuracy_ci_high": 0.9, "repeats": 5}
    assert Estimate.from_columns(probe, "accuracy_mean") == Estimate(0.8, 0.7, 0.9, None)
    guided = {"guided_accuracy[3.0]": 0.9, "guided_accuracy_ci[3.0]": [0.85, 0.95], "guided_accuracy_n": 400}
    assert Estimate.from_columns(guided, "guided_accuracy[3.0]") == Estimate(0.9, 0.85, 0.95, 400)
    assert Estimate.from_columns({"fid": 3.0}, "fid") is None
    assert Estimate.from_columns({"ok": True, "ok_ci": [0, 1]}, "ok") is None


def test_a_mean_column_shows_its_interval_in_one_cell():
    """feature_sweep's rows: the interval folds into `accuracy_mean` and its columns leave the table
    (they used to print as three separate columns)."""
    from workbench.report import readable, readable_rows

    row = {"t": 10, "accuracy_mean": 0.8, "accuracy_ci_low": 0.7, "accuracy_ci_high": 0.9, "repeats": 5}
    assert readable_rows([row]) == [{"t": 10, "accuracy_mean": "0.8 [0.7, 0.9]", "repeats": 5}]
    one_draw = {"fid": 3.0, "fid_ci": [None, None], "fid_n": 1}
    assert readable(one_draw) == {"fid": "3 (no interval) n=1"}

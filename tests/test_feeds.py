"""The TUI's incremental feeds: downsampling keeps every bucket's extremes; cached arrays match the points."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.jobs.context import RunContext
from workbench.store import queue
from workbench.store.db import Store
from workbench.store.feeds import MetricFeed, downsample


@pytest.fixture
def store(db_url, home):
    """This module's tests run on SQLite and on PostgreSQL (see conftest.db_url)."""
    s = Store()
    yield s
    s.dispose()


def naive_downsample(steps, values, max_points):
    buckets = max_points // 2
    bucket = np.arange(len(steps)) * buckets // len(steps)
    keep = set()
    for b in np.unique(bucket):
        idx = np.flatnonzero(bucket == b)
        seg = values[idx]
        if np.all(np.isnan(seg)):
            continue
        keep |= {idx[np.nanargmin(seg)], idx[np.nanargmax(seg)]}
    keep = sorted(keep)
    return steps[keep], values[keep]


def test_downsample_keeps_bucket_extremes_and_skips_nan():
    rng = np.random.default_rng(0)
    steps = np.arange(10_007)
    values = rng.normal(size=len(steps))
    values[5000] = 1e6  # a spike must survive
    values[100:140] = np.nan  # a whole bucket of NaN disappears, a partial one keeps its finite extremes
    x, y = downsample(steps, values, 500)
    ex, ey = naive_downsample(steps, values, 500)
    np.testing.assert_array_equal(x, ex)
    np.testing.assert_array_equal(y, ey)
    assert 1e6 in y and len(x) <= 500 and np.isfinite(y).all()
    short = downsample(steps[:10], values[:10], 500)
    np.testing.assert_array_equal(short[0], steps[:10])


def test_metric_feed_arrays_follow_appends_and_relogged_steps(store):
    _, (rid,) = queue.submit(
        store, name="e", kind="sleep", spec_text="", sweep={}, runs=[queue.NewRun("e", {"kind": "sleep"})]
    )
    queue.claim(store, "w", "cpu")
    ctx = RunContext(store, rid)
    feed = MetricFeed(store, rid)

    def check():
        points = feed.series["loss"]
        x, y = feed.sorted_arrays("loss")
        np.testing.assert_array_equal(x, sorted(points))
        np.testing.assert_array_equal(y, [points[s] for s in sorted(points)])

    for step in range(1, 11):
        ctx.log(step, loss=1.0 / step)
    ctx.flush()
    assert feed.poll()
    check()
    for step in range(11, 21):  # steps only grow: the arrays are extended in place
        ctx.log(step, loss=1.0 / step)
    ctx.flush()
    feed.poll()
    assert "loss" in feed.arrays
    check()
    for step in (15, 16, 21):  # a resumed attempt relogs steps: the newest value wins
        ctx.log(step, loss=-1.0)
    ctx.flush()
    feed.poll()
    check()
    assert feed.series["loss"][15] == -1.0 and len(feed.series["loss"]) == 21
    assert not feed.poll()


def test_a_first_page_then_the_older_runs_each_once(store):
    """A big store opens on its newest page; the next poll brings the older runs, read fresh (one that
    started in between shows as running), with nothing twice and nothing lost."""
    from workbench.store.feeds import RunsFeed

    def submit(n):
        runs = [queue.NewRun(f"r{i}", {"kind": "sleep"}) for i in range(n)]
        return queue.submit(store, name="e", kind="sleep", spec_text="", sweep={}, runs=runs)[1]

    ids = submit(5)
    feed = RunsFeed(store, first_page=2)
    first, _ = feed.poll()
    assert [r.id for r in first] == ids[-2:] and not feed.complete
    queue.claim(store, "w", "cpu")  # the oldest run starts ...
    (late,) = submit(1)  # ... and a new one arrives
    second, _ = feed.poll()
    assert sorted(r.id for r in second) == [*ids[:3], late] and feed.complete
    assert next(r for r in second if r.id == ids[0]).status == "running"
    third, _ = feed.poll()
    assert [r.id for r in third] == [ids[0]]  # only the running run, whose progress moves
    small = RunsFeed(store, first_page=100)
    assert len(small.poll()[0]) == 6 and small.complete

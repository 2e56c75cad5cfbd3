"""Incremental reads for live views (the TUI): each poll returns only what changed since the last one.

Runs: new ids, plus the runs touched by a life-cycle event (queued, started, finished, retried ...)
since the last seen event id, plus the runs that are running (progress and summary move). So a
store with 10 000 finished runs costs two indexed queries per poll, not a full scan.
Metrics: only points with a row id above the last one seen.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import func, select

from workbench.store.db import Store
from workbench.store.models import MetricPoint, Run, RunEvent, RunStatus
from workbench.store.queries import RunRecord, record_query, run_record


@dataclass
class RunsFeed:
    store: Store
    last_run_id: int = 0
    last_event_id: int = 0
    active: set[int] = field(default_factory=set)
    known: set[int] = field(default_factory=set)
    polls: int = 0
    # With first_page set, the first poll reads only the newest runs, so a big store shows at once; the
    # next poll reads the older ones (ids below older_than) and `complete` turns true.
    first_page: int | None = None
    older_than: int = 0
    sweep_every: int = 10  # deleted runs leave no event behind: look for them every few polls
    # Poll threads can overlap (an exclusive worker's thread runs on after it is cancelled): one at a time.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def poll(self) -> tuple[list[RunRecord], set[int]]:
        """(changed or new runs, ids of runs that disappeared)."""
        with self.lock:
            return self._poll()

    @property
    def complete(self) -> bool:
        """Every run has been read at least once."""
        return self.polls > 0 and not self.older_than

    def _poll(self) -> tuple[list[RunRecord], set[int]]:
        self.polls += 1
        deleted: set[int] = set()
        older = []
        with self.store.read() as s:
            if self.polls % self.sweep_every == 0 and self.known:
                deleted = self.known - set(s.scalars(select(Run.id)))
            newer = record_query().where(Run.id > self.last_run_id)
            if self.polls == 1 and self.first_page:
                new = s.execute(newer.order_by(Run.id.desc()).limit(self.first_page)).all()[::-1]
                self.older_than = new[0].id if len(new) == self.first_page else 0
            else:
                new = s.execute(newer.order_by(Run.id)).all()
                if self.older_than:
                    older = s.execute(record_query().where(Run.id < self.older_than).order_by(Run.id)).all()
                    self.older_than = 0
            touched = set()  # the first poll reads every run fresh (the older ones next poll)
            if self.polls > 1:
                touched = set(
                    s.scalars(select(RunEvent.run_id).where(RunEvent.id > self.last_event_id).distinct())
                )
            self.last_event_id = s.scalar(select(func.max(RunEvent.id))) or self.last_event_id
            refetch = (touched | self.active) - {r.id for r in new + older}
            changed = s.execute(record_query().where(Run.id.in_(refetch))).all() if refetch else []
        if new:
            self.last_run_id = new[-1].id
        rows = older + new + changed
        gone = (refetch - {r.id for r in changed}) | deleted
        # Only running runs change without an event (progress, summary); queued ones wait for "started".
        self.active = {r.id for r in rows if r.status == RunStatus.RUNNING}
        self.known = (self.known | {r.id for r in rows}) - gone
        now = self.store.now() if rows else 0.0
        return [run_record(r, now) for r in rows], gone


@dataclass
class MetricFeed:
    """The curves of one run: {key: {step: value}}, newest value per step (resumed runs relog steps).

    Sorted numpy copies of each series are kept alongside and extended in place while steps only grow
    (the usual case), so a refresh of a 100 000-point curve never re-sorts it."""

    store: Store
    run_id: int
    last_id: int = 0
    series: dict[str, dict[int, float]] = field(default_factory=dict)
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def poll(self) -> bool:
        with self.lock:
            return self._poll()

    def _poll(self) -> bool:
        with self.store.read() as s:
            rows = s.execute(
                select(MetricPoint.id, MetricPoint.key, MetricPoint.step, MetricPoint.value)
                .where(MetricPoint.run_id == self.run_id, MetricPoint.id > self.last_id)
                .order_by(MetricPoint.id)
            ).all()
        appended: dict[str, list[tuple[int, float]]] = {}
        for _id, key, step, value in rows:
            points = self.series.setdefault(key, {})
            value = float("nan") if value is None else value
            tail = appended.setdefault(key, [])
            last = tail[-1][0] if tail else (int(self.arrays[key][0][-1]) if key in self.arrays else None)
            if key in self.arrays and (last is None or step > last) and step not in points:
                tail.append((step, value))
            else:  # a relogged or out-of-order step: rebuild this series' arrays on next read
                self.arrays.pop(key, None)
            points[step] = value
        for key, tail in appended.items():
            if key in self.arrays and tail:
                steps, values = self.arrays[key]
                self.arrays[key] = (
                    np.concatenate([steps, np.array([p[0] for p in tail], dtype=np.int64)]),
                    np.concatenate([values, np.array([p[1] for p in tail], dtype=np.float64)]),
                )
        if rows:
            self.last_id = rows[-1][0]
        return bool(rows)

    def latest(self, prefix: str) -> dict[str, float]:
        """The value at the highest step of each series whose key starts with `prefix`."""
        with self.lock:
            return {k: v[max(v)] for k, v in self.series.items() if k.startswith(prefix) and v}

    def sorted_arrays(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        with self.lock:
            return self._sorted_arrays(key)

    def _sorted_arrays(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        if key not in self.arrays:
            points = self.series.get(key, {})
            steps = np.fromiter(points.keys(), dtype=np.int64, count=len(points))
            values = np.fromiter(points.values(), dtype=np.float64, count=len(points))
            order = np.argsort(steps, kind="stable")
            self.arrays[key] = (steps[order], values[order])
        return self.arrays[key]

    def xy(self, key: str, max_points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
        return downsample(*self.sorted_arrays(key), max_points)


def downsample(steps: np.ndarray, values: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (steps, values) reduced to about max_points by keeping each bucket's min and max, so
    spikes survive (a terminal plot cannot show more points than it has cells anyway). Vectorised:
    a 100 000-point curve takes about a millisecond."""
    n = len(steps)
    if n <= max_points:
        return steps, values
    buckets = max(1, max_points // 2)
    bucket = np.arange(n) * buckets // n
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    low = np.where(np.isnan(values), np.inf, values)
    high = np.where(np.isnan(values), -np.inf, values)
    lo_idx = _arg_reduce(low, starts, bucket, np.minimum)
    hi_idx = _arg_reduce(high, starts, bucket, np.maximum)
    keep = np.unique(np.concatenate([lo_idx, hi_idx]))
    keep = keep[~np.isnan(values[keep])]
    return steps[keep], values[keep]


def _arg_reduce(values: np.ndarray, starts: np.ndarray, bucket: np.ndarray, ufunc) -> np.ndarray:
    """Index of the first element equal to its bucket's ufunc-reduction (argmin/argmax per bucket)."""
    best = ufunc.reduceat(values, starts)
    hits = np.flatnonzero(values == best[bucket])
    _, first = np.unique(bucket[hits], return_index=True)
    return hits[first]

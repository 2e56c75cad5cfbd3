"""Incremental reads for the TUI: each poll returns only what changed since the last one.

Runs: new ids, plus the runs touched by a life-cycle event (queued, started, finished, retried ...)
since the last seen event id, plus the runs that are running (progress and summary move). So a
store with 10 000 finished runs costs two indexed queries per poll, not a full scan.
Metrics: only points with a row id above the last one seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import func, select

from store.db import Store
from store.models import Experiment, MetricPoint, Run, RunEvent
from store.queries import run_row


@dataclass
class RunsFeed:
    store: Store
    last_run_id: int = 0
    last_event_id: int = 0
    active: set[int] = field(default_factory=set)
    experiments: dict[int, str] = field(default_factory=dict)
    known: set[int] = field(default_factory=set)
    polls: int = 0
    sweep_every: int = 10  # deleted runs leave no event behind: look for them every few polls

    def poll(self) -> tuple[list[dict], set[int]]:
        """(changed or new run rows, ids of runs that disappeared)."""
        self.polls += 1
        deleted: set[int] = set()
        with self.store.read() as s:
            if self.polls % self.sweep_every == 0 and self.known:
                deleted = self.known - set(s.scalars(select(Run.id)))
            new = list(s.scalars(select(Run).where(Run.id > self.last_run_id).order_by(Run.id)))
            touched = set(s.scalars(select(RunEvent.run_id).where(RunEvent.id > self.last_event_id).distinct()))
            self.last_event_id = s.scalar(select(func.max(RunEvent.id))) or self.last_event_id
            refetch = (touched | self.active) - {r.id for r in new}
            changed = list(s.scalars(select(Run).where(Run.id.in_(refetch)))) if refetch else []
            missing_exp = {r.experiment_id for r in new + changed} - set(self.experiments)
            if missing_exp:
                self.experiments.update(s.execute(select(Experiment.id, Experiment.name)
                                                  .where(Experiment.id.in_(missing_exp))).all())
        if new:
            self.last_run_id = new[-1].id
        rows = new + changed
        gone = (refetch - {r.id for r in changed}) | deleted
        # Only running runs change without an event (progress, summary); queued ones wait for "started".
        self.active = {r.id for r in rows if r.status == "running"}
        self.known = (self.known | {r.id for r in rows}) - gone
        return [run_row(r, self.experiments.get(r.experiment_id)) for r in rows], gone


@dataclass
class MetricFeed:
    """The curves of one run: {key: {step: value}}, newest value per step (resumed runs relog steps)."""

    store: Store
    run_id: int
    last_id: int = 0
    series: dict[str, dict[int, float]] = field(default_factory=dict)

    def poll(self) -> bool:
        with self.store.read() as s:
            rows = s.execute(select(MetricPoint.id, MetricPoint.key, MetricPoint.step, MetricPoint.value)
                             .where(MetricPoint.run_id == self.run_id, MetricPoint.id > self.last_id)
                             .order_by(MetricPoint.id)).all()
        for _id, key, step, value in rows:
            self.series.setdefault(key, {})[step] = float("nan") if value is None else value
        if rows:
            self.last_id = rows[-1][0]
        return bool(rows)

    def xy(self, key: str, max_points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
        return downsample(self.series.get(key, {}), max_points)


def downsample(points: dict[int, float], max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (steps, values), reduced to about max_points by keeping each bucket's min and max,
    so spikes survive (a terminal plot cannot show more points than it has cells anyway)."""
    if not points:
        return np.empty(0), np.empty(0)
    steps = np.fromiter(points.keys(), dtype=np.int64, count=len(points))
    values = np.fromiter(points.values(), dtype=np.float64, count=len(points))
    order = np.argsort(steps, kind="stable")
    steps, values = steps[order], values[order]
    if len(steps) <= max_points:
        return steps, values
    buckets = max_points // 2
    edges = np.linspace(0, len(steps), buckets + 1).astype(int)
    keep = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        seg = values[a:b]
        if not len(seg) or np.all(np.isnan(seg)):
            continue
        lo, hi = a + int(np.nanargmin(seg)), a + int(np.nanargmax(seg))
        keep += sorted({lo, hi})
    keep = np.array(keep)
    return steps[keep], values[keep]

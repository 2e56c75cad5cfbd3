"""RunContext: the only API an experiment kind uses to report results, checkpoint, and build on other runs.

A kind's `run(ctx, spec)` gets one. Each method below says what it takes, what it returns, what it
costs and what survives a crash (a kill, an OOM, a lost machine) of the run's process; "written" means
committed to the store, visible to the TUI and `workbench show`, and kept by a resumed attempt.

Scalars are buffered and written about once a second in one transaction, so logging every step
costs microseconds; a store fault (locked, full or read-only) while flushing them keeps them in the
buffer for the next flush. Everything else (images, tables, summary, checkpoints) is written at once
and raises StoreFault when the store cannot take it: the worker then ends the run as interrupted,
resumable, never as failed.

One writer per run: every write checks, in its own transaction, that this context's attempt is still
the run's current, running attempt. An attempt whose lease was taken (reaped while slow, then retried)
gets LostOwnership on its next write and never writes into the newer attempt's metrics, events,
artifacts or checkpoints.
"""

from __future__ import annotations

import io
import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.jobs.figures import Grid
from workbench.store.artifacts import artifact_path, relative_to_home, run_dir, write_temporary
from workbench.store.db import Store
from workbench.store.models import PHASE_EVENT, RunStatus
from workbench.store.run_writer import (
    LostOwnership,
    RunWriter,
    StoreFault,
    is_store_fault,
    run_spec_and_attempt,
)

if TYPE_CHECKING:
    from workbench.jobs.spec import RunName

__all__ = [  # LostOwnership, StoreFault and is_store_fault live in the store; kinds and the worker take them here
    "FinishedRun",
    "LostOwnership",
    "RunCancelled",
    "RunContext",
    "RunPart",
    "StoreFault",
    "UnusableRun",
    "alive",
    "is_store_fault",
]

FLUSH_INTERVAL = 1.0
STOP_CHECK_INTERVAL = 1.0
ACTIVITY_INTERVAL = 1.0
MAX_BUFFERED_POINTS = 2_000_000  # kept through a store fault; past this the oldest are dropped
CHECKPOINTS = "checkpoints"


class RunCancelled(Exception):
    """Raised by a kind (or the shared training loop) when should_stop() asked it to stop."""


class UnusableRun(ValueError):
    """A run named as input (`model_run: ID`, say) cannot serve: missing, not succeeded, of another kind,
    or without the artifact asked for. The message names the run and what it lacks."""


@dataclass(frozen=True)
class FinishedRun:
    """A succeeded run, read once: what a kind needs to build on it (see RunContext.finished_run)."""

    id: int
    kind: str
    name: str
    spec: dict[str, Any]  # the resolved spec it ran with (validate it with its kind's Spec)
    summary: dict[str, Any]
    tables: dict[str, list[dict[str, Any]]]
    artifacts: dict[str, Path]  # name -> absolute path of its newest file or image of that name

    def artifact(self, name: str) -> Path:
        """The path of its artifact `name`; UnusableRun, naming the ones it has, when there is none."""
        path = self.artifacts.get(name)
        if path is None or not path.exists():
            have = ", ".join(sorted(self.artifacts)) or "none"
            raise UnusableRun(
                f"run {self.id} ({self.kind}) has no {'file for ' if path else ''}artifact {name!r} "
                f"(it has: {have})"
            )
        return path


def finished_run(store: Store, run_id: int | RunName, kinds: Iterable[str] | None = None) -> FinishedRun:
    """RunContext.finished_run's read, for whatever needs a finished run outside a run (the CLI's
    `attribute` and `publish` find their model here too)."""
    from workbench.jobs.spec import RunName
    from workbench.store.queries import UnknownRun, newest_succeeded, show

    wanted = tuple(kinds) if kinds is not None else None
    if isinstance(run_id, RunName):
        found = newest_succeeded(store, run_id.experiment, run_id.name, wanted)
        if found is None:
            raise UnusableRun(
                f"{run_id}: no succeeded {' or '.join(wanted) + ' ' if wanted else ''}run of experiment "
                f"{run_id.experiment!r}"
                + (f" named {run_id.name!r}" if run_id.name else "")
                + " (`workbench runs` lists them)"
            )
        run_id = found
    try:
        run = show(store, run_id)  # its record, spec, summary, tables and artifacts, in one go
    except UnknownRun:
        raise UnusableRun(f"run {run_id}: no such run") from None
    if run.status != RunStatus.SUCCEEDED or (wanted and run.kind not in wanted):
        need = f"a succeeded {' or '.join(wanted)} run" if wanted else "a succeeded run"
        raise UnusableRun(f"run {run_id} ({run.name}) is a {run.status} {run.kind} run; it must be {need}")
    files = {
        a.name: store.home / a.path
        for a in run.artifacts  # newest last
        if a.kind in ("file", "image")
    }
    return FinishedRun(run.id, run.kind, run.name, run.spec, run.summary, run.tables, files)


_active: RunContext | None = None


def alive() -> None:
    """Tell the worker the current run is making progress (for long loops that log nothing).

    Library code calls it freely: outside a run it does nothing.
    """
    if _active is not None:
        _active.alive()


class RunContext:
    """What a kind's `run(ctx, spec)` gets. Made by the worker in the run's process; tests make their own.

    A kind touches the store only through these methods (never `workbench.store` itself): caches through
    `cache_dir`, its own earlier files through `own_file`, other runs through `finished_run`.

    Attributes:
        run_id: this run's id.
        attempt: 1 for the first attempt, one more for each retry or resume; checkpoints are per attempt.
        device: the device slot the worker gave the run ("cpu", "cuda:0", ...): put tensors there.
        spec: the run's resolved spec as stored (a dict); the kind gets it validated as `spec` too.
        dir: the run's artifact folder, `<home>/runs/<run_id>`.
    """

    def __init__(
        self,
        store: Store,
        run_id: int,
        *,
        device: str = "cpu",
        attempt: int | None = None,
        on_activity: Callable[[int | None], None] | None = None,
    ):
        self._store = store
        self.run_id = run_id
        self.device = device
        spec, current = run_spec_and_attempt(store, run_id)
        self.spec: dict[str, Any] = spec
        self.attempt = attempt if attempt is not None else max(current, 1)
        self._writer = RunWriter(store, run_id, self.attempt)
        self.dir = run_dir(store.home, run_id)
        self._lock = threading.Lock()
        self._buffer: list[dict[str, Any]] = []
        self._progress: tuple[int, int] | None = None
        self._last_flush = time.time()
        self._stop = threading.Event()
        self._last_stop_check = 0.0
        self._on_activity = on_activity
        self._last_activity = 0.0
        self._step: int | None = None
        self.store_fault: str | None = None  # the last fault a metrics flush met (kept for retrying)

    # --- liveness --------------------------------------------------------------------------------

    def alive(self, step: int | None = None) -> None:
        """Progress without a result to report: keeps the worker's no-progress watchdog
        (`no_progress_minutes`) from killing a long loop that logs nothing.

        Args:
            step: the step reached, if the loop has one (the worker times its steps with it).
        Cost: a clock read; tells the worker at most once a second. Writes nothing to the store.
        """
        if step is not None:
            self._step = int(step)
        now = time.monotonic()
        if self._on_activity is not None and now - self._last_activity >= ACTIVITY_INTERVAL:
            self._last_activity = now
            self._on_activity(self._step)

    # --- scalars ---------------------------------------------------------------------------------

    def log(self, step: int, **scalars: float) -> None:
        """Record scalars (a loss, a learning rate) at `step`: the curves of the TUI's Curves tab.

        Args:
            step: the x value (a training step); logging a step again (after a resume) replaces it.
            **scalars: name -> float; NaN is kept as a gap, infinities as +-1e308.
        Cost: about a microsecond (a buffer append); the buffer is written at most once a second, in
            one transaction, by the call that finds it due.
        After a crash: up to the last second of points is lost; a store fault keeps them buffered
            for the next flush. `checkpoint` flushes first, so a resume never lacks points before it.
        """
        now = time.time()
        with self._lock:
            self._buffer.append((int(step), now, scalars))
        self.alive(step)
        if now - self._last_flush >= FLUSH_INTERVAL:
            self.flush(raise_fault=False)

    def _sampled(self, x: int, scalars: dict[str, float]) -> None:
        """What the run's process measured of itself (jobs.resources), from the sampler's thread: buffered
        for the kind's next flush (a second thread writing would race it), never counted as progress."""
        with self._lock:
            self._buffer.append((int(x), time.time(), scalars))

    def progress(self, done: int, total: int) -> None:
        """`done` of `total` units (steps, configurations) finished: the run's progress bar.

        Cost: a clock read; written with the scalars, at most once a second (a kind that logs no scalars,
            such as a sweep that only reports progress, still shows it moving). After a crash: the last
            flushed value stays.
        """
        self._progress = (int(done), int(total))
        self.alive(done)
        if time.time() - self._last_flush >= FLUSH_INTERVAL:
            self.flush(raise_fault=False)

    def flush(self, raise_fault: bool = True) -> None:
        """Write the buffered scalars and progress now (kinds rarely need to; `checkpoint` and the
        worker's `close` do).

        Args:
            raise_fault: raise StoreFault when the store cannot take them (they stay buffered either way).
        Cost: one transaction for all of them.
        """
        with self._lock:
            buffered, self._buffer = self._buffer, []
            progress, self._progress = self._progress, None
            self._last_flush = time.time()
        if not buffered and progress is None:
            return
        points = [
            (k, step, _finite_or_none(v), wall)
            for step, wall, scalars in buffered
            for k, v in scalars.items()
        ]
        try:
            self._writer.add_points(points, progress)
            self.store_fault = None
        except StoreFault as e:
            with self._lock:  # put them back in front of what was logged meanwhile
                self._buffer = (buffered + self._buffer)[-MAX_BUFFERED_POINTS:]
                self._progress = self._progress or progress
            self.store_fault = str(e)
            if raise_fault:
                raise

    # --- results ---------------------------------------------------------------------------------

    def summary(self, **values: Any) -> None:
        """The run's headline numbers, merged into what earlier calls stored (a key given again wins).

        Args:
            **values: JSON-able values (numbers, strings, lists, mappings; numpy and 0-d tensors are
                converted). An estimate gives `key`, `key_ci` = [low, high] and `key_n`
                (`Estimate.summary(key)` in jobs.metrics.stats); the kind's HEADLINE names the one the
                runs list shows.
        Cost: one transaction. After a crash: written at once; a resumed attempt sees it (and may
            overwrite it). Raises StoreFault or LostOwnership (see the module docstring).
        """
        self._writer.merge_summary(_jsonable(values, "summary"))

    def table(self, name: str, rows: list[dict[str, Any]]) -> None:
        """A result table: the TUI's Tables tab, `workbench export`, `show --json`.

        Args:
            name: the table's name; a second call with the same name replaces the table.
            rows: flat dicts, one per row, JSON-able values; estimates as `key`, `key_ci_low`,
                `key_ci_high`, `key_n` columns (`Estimate.columns(key)`), which people see folded into
                `value [low, high] n=N`.
        Cost: one transaction; the rows are stored as one JSON document (keep tables to thousands of rows).
        After a crash: written at once, replaced whole: never half a table.
        """
        self._writer.replace_table(name, _jsonable(list(rows), f"table {name!r}"))

    def event(self, message: str, level: str = "info") -> None:
        """A line in the run's event log (the TUI's Log tab).

        Args:
            message: one line for a person: what happened, with its numbers.
            level: "info", "warning" or "error" ("phase" is phase()'s).
        Cost: one transaction (about a millisecond): for milestones, not for every step.
        """
        self._writer.add_event(message, level)
        self.alive()

    def phase(self, name: str, total: int = 0) -> None:
        """The run enters one of its steps (`training`, `sampling`, `probing`): the runs list, the
        Overview and `submit --wait` show it with its own progress, elapsed time and ETA, instead of a
        bar that sits full while the run evaluates. progress(done, total) moves the phase's bar from 0.

        Args:
            name: a few words, no numbers that change (those go in progress).
            total: the phase's units when known (0: none yet).
        Cost: one transaction. After a crash: the resumed attempt says its phase again.
        """
        self.event(name, level=PHASE_EVENT)
        self.progress(0, total)
        self.flush(raise_fault=False)

    def image(self, name: str, step: int | None, image: Any, **meta: Any) -> Path:
        """A picture (a sample grid, a plot): the TUI's Images tab, where `[` `]` step through its steps.

        Args:
            name: a path-like name ("samples/w3"); the same name at another step is another picture.
            step: the training step it shows, or None for one picture of the run.
            image: a PIL image, an HxW or HxWxC array (uint8, or floats in [0, 1]), a tensor, a
                matplotlib figure, or a figures.Grid (its layout is stored in the notes as `grid`, so the
                TUI can zoom into a row or a cell).
            **meta: JSON-able notes stored with it.
        Returns: the PNG's path under `dir/images/`.
        Cost: PNG encoding plus one transaction. After a crash: the file is written atomically
            (never a torn PNG); the same (name, step) written again replaces it.
        """
        if isinstance(image, Grid):
            meta = {"grid": image.layout(), **meta}
            image = image.pixels
        data = _png_bytes(image)
        rel = f"images/{name}/{step:08d}.png" if step is not None else f"images/{name}.png"
        path = artifact_path(self._store.home, self.run_id, rel)
        self._store_file(name, "image", path, data, step, meta)
        return path

    def file(self, name: str, data: bytes, **meta: Any) -> Path:
        """A file artifact (a trained model, a cache of features) that other runs find by name
        through `finished_run(id).artifact(name)`.

        Args:
            name: its file name under `dir/files/`; written again, it is replaced.
            data: the bytes.
            **meta: JSON-able notes stored with it (a description, its spec).
        Returns: its path. Cost: writing the bytes (atomically) plus one transaction.
        """
        path = artifact_path(self._store.home, self.run_id, f"files/{name}")
        self._store_file(name, "file", path, data, None, meta)
        return path

    def _store_file(
        self, name: str, kind: str, path: Path, data: bytes, step: int | None, meta: dict[str, Any]
    ) -> None:
        """The bytes written beside `path`, then renamed onto it and recorded in one owned transaction: a
        superseded attempt never replaces the file of the attempt that took the run over. A resumed run
        that redoes a picture (or a checkpoint) replaces the old row."""
        notes = _jsonable(meta, f"the notes of {name!r}")
        self._writer.check_owner()  # cheap, before the bytes are written
        try:
            tmp = write_temporary(path, data)
        except OSError as e:
            if is_store_fault(e):
                raise StoreFault(f"cannot write {path.name}: {e.strerror}") from e
            raise
        rel = relative_to_home(self._store.home, path)
        self._writer.add_artifact(name, kind, rel, step, notes, replace=True, temporary=tmp)

    # --- checkpoints -----------------------------------------------------------------------------

    def checkpoint(self, state: dict[str, Any], step: int) -> None:
        """Save `state` (nested dicts, lists and tuples of tensors, arrays and plain values) as the run's
        last checkpoint, which `restore` gives back to a resumed attempt.

        Cost: the buffered metrics are flushed, the tensors copied to the CPU and written (safetensors)
        with fsync: seconds for a large model, so checkpoint every few minutes, not every step.
        Metrics are flushed first, so a resumed run never lacks points from before its checkpoint.
        The file (tensors, with the state's structure in its metadata) is named by attempt and step and
        written atomically; the run's checkpoint row then points at it, in a transaction that checks
        ownership. A kill at any moment leaves the previous checkpoint intact, and a superseded attempt
        can write a file but never make it the run's checkpoint. Raises StoreFault when the store
        cannot take it (the run is then interrupted, and resumes from the previous checkpoint).
        """
        from safetensors.torch import save

        self.flush()
        tensors: dict[str, Any] = {}
        skeleton = _pack(state, "", tensors)
        folder = artifact_path(self._store.home, self.run_id, CHECKPOINTS)
        path = folder / f"a{self.attempt}-step-{step:09d}.safetensors"
        data = save(tensors, metadata={"state": json.dumps(skeleton), "step": str(step)})
        self._store_file("checkpoint", "checkpoint", path, data, step, {})
        # Only this attempt's and earlier attempts' files go: should this attempt lose the run right now,
        # the attempt that takes it over resumes from `path` and writes files of a later attempt number.
        for old in folder.glob("a*-step-*.safetensors"):
            if old != path and _checkpoint_attempt(old) <= self.attempt:
                old.unlink(missing_ok=True)
        self.event(f"checkpoint at step {step}")

    def restore(self, announce: bool = True) -> dict[str, Any] | None:
        """The last checkpoint's state with its tensors on the CPU, or None when the run has none (a
        first attempt, or one that never checkpointed). Call it once, before the loop.

        Put each part where it belongs through its own API: `model.load_state_dict` and
        `optimizer.load_state_dict` copy onto their parameters' device, an EMA needs `.to(device)`,
        and generator states stay CPU byte tensors (`Generator.set_state` wants them so, CUDA too).
        """
        from safetensors import safe_open
        from safetensors.torch import load

        last = self._writer.last_checkpoint()
        folder = artifact_path(self._store.home, self.run_id, CHECKPOINTS)
        if (
            last is not None
            and last[0].endswith(".safetensors")
            and not (self._store.home / last[0]).exists()
        ):
            message = (
                f"the run's checkpoint at step {last[1]} ({last[0]}) is missing from {self._store.home}; "
                "resuming would silently start from step 0. Restore the file, or submit the spec again "
                "to start over"
            )
            self.event(message, "error")
            raise CheckpointMissing(message)
        if last is not None and last[0].endswith(".safetensors"):
            path = self._store.home / last[0]
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
            if "state" in meta:
                state = _unpack(json.loads(meta["state"]), load(path.read_bytes()))
                if announce:
                    self.event(f"resumed from checkpoint at step {last[1]}")
                return state
        if (folder / "last.json").exists():  # written by workbench before checkpoints carried their state
            meta = json.loads((folder / "last.json").read_text())
            state = _unpack(meta["state"], load((folder / meta["tensors"]).read_bytes()))
            if announce:
                self.event(f"resumed from checkpoint at step {meta['step']}")
            return state
        return None

    def remove_partial_files(self) -> int:
        """Delete temporary files an earlier attempt left in the run's folder: a write that could not even
        clean up after itself (the disk turned read-only under it, or the process was killed mid-write).
        The worker calls it when an attempt starts; returns how many it removed."""
        removed = 0
        for tmp in self.dir.rglob(".*.tmp*") if self.dir.exists() else ():
            tmp.unlink(missing_ok=True)
            removed += 1
        return removed

    # --- other runs ------------------------------------------------------------------------------

    def finished_run(self, run_id: int | RunName, kinds: Iterable[str] | None = None) -> FinishedRun:
        """Another run to build on (the model of `model_run: ID`, say), read once from the store.

        Args:
            run_id: the run's id, or a RunName (the newest succeeded run of that experiment and name).
            kinds: the kinds this run may be of (None: any).
        Returns:
            FinishedRun: its spec, summary, tables, and its file and image artifacts by name.
        Raises:
            UnusableRun: no such run, it has not succeeded (queued, running, failed, cancelled, interrupted
                runs cannot serve: their results may be partial), or it is of another kind.
        Costs: one read transaction, plus the run's tables (rows are JSON; a few ms for typical runs).
        Writes nothing: safe to call again after a crash and resume.
        """
        return finished_run(self._store, run_id, kinds)

    # --- caches and the run's own files ------------------------------------------------------------

    def cache_dir(self, name: str) -> Path:
        """The folder shared by every run of this store for one cache (`reference`, `synthetic`,
        `features`, `vae`, `attribution`), made if missing. What goes in it must be keyed by everything
        it depends on (its files are reused by other runs) and written atomically.

        Args:
            name: the cache's name, a lowercase word.
        Raises: ValueError for any other name (no `..`, no `/`: it stays under the store's cache folder).
        """
        if not re.fullmatch(r"[a-z][a-z0-9_-]{0,63}", name):
            raise ValueError(f"cache name {name!r}: use a lowercase word (letters, digits, - and _)")
        folder = self._store.home / "cache" / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def own_file(self, name: str) -> Path | None:
        """The file this run kept as `name` with `file()` in an earlier attempt (what a resumed run
        picks up instead of computing again), or None when there is none.

        Cost: one stat; reads nothing from the store."""
        path = artifact_path(self._store.home, self.run_id, f"files/{name}")
        return path if path.is_file() else None

    # --- control ---------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask the run to stop (the worker does, on cancel, Ctrl-C or SIGTERM)."""
        self._stop.set()

    def should_stop(self) -> bool:
        """True once a stop was requested (cancel, Ctrl-C, SIGTERM, a lapsed lease): the kind then
        checkpoints if it has something worth keeping and raises RunCancelled.

        Cost: cheap enough to ask at every step: the worker's request arrives as an event; the store is
        read at most once a second (for contexts outside a worker). A kind that never asks is killed
        after the worker's grace period and resumes from its last checkpoint.
        """
        if not self._stop.is_set() and time.monotonic() - self._last_stop_check >= STOP_CHECK_INTERVAL:
            self._last_stop_check = time.monotonic()
            if self._writer.cancel_requested():
                self._stop.set()
        return self._stop.is_set()

    def close(self) -> None:
        """Write what is buffered (the run's last metrics); raises StoreFault if the store cannot take them."""
        self.flush()

    def part(self, name: str, index: int, parts: int) -> RunPart:
        """A view of this context for one of `parts` trainings a run does in turn (a model per data
        subset, say), to hand to a loop written for a whole run such as jobs.diffusion.train.

        Args:
            name: the part's name: its curves, images, files and events carry it ("gen/n10-s0/loss").
            index: which part this is (0-based): its progress fills that share of the run's bar.
            parts: how many parts the run's progress bar counts.
        Its checkpoint is the run's (one at a time): `restore` gives a part only a checkpoint it wrote
        itself, so a run resumed in part 3 resumes part 3 and starts part 4 afresh. Parts that finished
        keep their results outside the checkpoint (the kind's cache), which is what makes this enough.
        """
        return RunPart(self, name, index, parts)


class RunPart:
    """One training among several in a run (see RunContext.part): the RunContext methods a training loop
    uses, with names under `name/` and the checkpoint tagged with the part."""

    PROGRESS_SCALE = 1000  # the run's bar counts parts in thousandths, so a part's steps show

    def __init__(self, ctx: RunContext, name: str, index: int, parts: int):
        self.ctx, self.name, self.index, self.parts = ctx, name, index, parts
        self.run_id, self.device = ctx.run_id, ctx.device

    def log(self, step: int, **scalars: float) -> None:
        self.ctx.log(step, **{f"{self.name}/{k}": v for k, v in scalars.items()})

    def progress(self, done: int, total: int) -> None:
        scale = self.PROGRESS_SCALE
        self.ctx.progress(self.index * scale + done * scale // max(total, 1), self.parts * scale)

    def event(self, message: str, level: str = "info") -> None:
        self.ctx.event(f"{self.name}: {message}", level)

    def phase(self, name: str, total: int = 0) -> None:
        self.ctx.event(f"{self.name}: {name}")  # a step within a part: the run keeps its phase and bar

    def image(self, name: str, step: int | None, image: Any, **meta: Any) -> Path:
        return self.ctx.image(f"{self.name}/{name}", step, image, **meta)

    def file(self, name: str, data: bytes, **meta: Any) -> Path:
        return self.ctx.file(f"{self.name}/{name}", data, **meta)

    def own_file(self, name: str) -> Path | None:
        return self.ctx.own_file(f"{self.name}/{name}")

    def cache_dir(self, name: str) -> Path:
        return self.ctx.cache_dir(name)

    def finished_run(self, run_id: int | RunName, kinds: Iterable[str] | None = None) -> FinishedRun:
        return self.ctx.finished_run(run_id, kinds)

    def checkpoint(self, state: dict[str, Any], step: int) -> None:
        self.ctx.checkpoint({"part": self.name, "state": state}, step)

    def restore(self) -> dict[str, Any] | None:
        state = self.ctx.restore(announce=False)
        if not (isinstance(state, dict) and state.get("part") == self.name):
            return None  # none, or another part's: this part starts afresh
        self.event(f"resumed from checkpoint at step {state['state'].get('step')}")
        return state["state"]

    def should_stop(self) -> bool:
        return self.ctx.should_stop()

    def alive(self, step: int | None = None) -> None:
        self.ctx.alive(step)


class CheckpointMissing(RuntimeError):
    """The run's checkpoint row names a file that is not there: the run fails rather than start over."""


def _checkpoint_attempt(path: Path) -> int:
    """The attempt that wrote a checkpoint file `a<attempt>-step-<step>.safetensors`."""
    try:
        return int(path.name[1:].split("-", 1)[0])
    except ValueError:
        return 0


def _finite_or_none(v: float) -> float | None:
    """A scalar as stored: NaN as NULL (the row stays, so a curve shows the gap), infinities as +-1e308,
    the same on every database."""
    v = float(v)
    if math.isfinite(v):
        return v
    return None if math.isnan(v) else math.copysign(1e308, v)


def _jsonable(obj: Any, what: str = "value") -> Any:
    """A value as stored in a summary, a table or an artifact's notes: numpy and torch numbers, arrays
    and 0-d tensors made plain, NaN as null and infinities as +-1e308 (the one place non-finite numbers
    are mapped; JSON has neither and PostgreSQL refuses them). Anything else that is not JSON raises
    ValueError naming `what`: a kind's bug fails its run with that reason, never a store fault."""
    clean = _plain(obj)
    try:
        json.dumps(clean, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what}: not storable as JSON ({e})") from None
    return clean


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if hasattr(obj, "tolist") and hasattr(obj, "ndim"):  # numpy scalars and arrays, torch tensors
        return _plain(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return _finite_or_none(obj)
    return obj


def _pack(obj: Any, key: str, tensors: dict[str, Any]) -> Any:
    """Split a state tree into a JSON skeleton and a flat dict of tensors, keeping key types."""
    import torch

    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().to("cpu").contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        tensors[key] = torch.from_numpy(np.ascontiguousarray(obj)).clone()
        return {"__ndarray__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[k, _pack(v, f"{key}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_pack(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_pack(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _unpack(obj: Any, tensors: dict[str, Any]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__ndarray__" in obj:
            return tensors[obj["__ndarray__"]].numpy()
        if "__tuple__" in obj:
            return tuple(_unpack(v, tensors) for v in obj["__tuple__"])
        return {k: _unpack(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [_unpack(v, tensors) for v in obj]
    return obj


def _png_bytes(image: Any) -> bytes:
    from PIL import Image

    if hasattr(image, "savefig"):  # a matplotlib figure
        buf = io.BytesIO()
        image.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        return buf.getvalue()
    if not isinstance(image, Image.Image):
        arr = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image)
        if arr.dtype != np.uint8:
            arr = (np.clip(arr, 0.0, 1.0) * 255).round().astype(np.uint8)
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        image = Image.fromarray(arr)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()

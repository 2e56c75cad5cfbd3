"""RunContext: the only API an experiment kind uses to report results and checkpoint.

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

import errno
import io
import json
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import delete, select, update
from sqlalchemy.exc import DBAPIError

from store.artifacts import artifact_path, atomic_write_bytes, relative_to_home, run_dir
from store.db import Store
from store.models import Artifact, MetricPoint, ResultTable, Run, RunEvent

FLUSH_INTERVAL = 1.0
STOP_CHECK_INTERVAL = 1.0
ACTIVITY_INTERVAL = 1.0
MAX_BUFFERED_POINTS = 2_000_000  # kept through a store fault; past this the oldest are dropped
CHECKPOINTS = "checkpoints"
_INSERT_POINTS = (f"INSERT INTO {MetricPoint.__tablename__} (run_id, key, step, value, wall_time, attempt) "
                  "VALUES (?, ?, ?, ?, ?, ?)")
_STORE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG}


class RunCancelled(Exception):
    """Raised by a kind (or the shared training loop) when should_stop() asked it to stop."""


class LostOwnership(Exception):
    """This attempt is no longer the run's current one: another attempt owns the run now."""


class StoreFault(Exception):
    """The store could not take a write (locked past the timeout, disk full, read-only, corrupt)."""


def is_store_fault(e: BaseException) -> bool:
    """A fault of the store (database or artifact disk), not of the run's own code."""
    if isinstance(e, StoreFault | DBAPIError):
        return True
    return isinstance(e, OSError) and e.errno in _STORE_ERRNOS


_active: RunContext | None = None


def alive() -> None:
    """Tell the worker the current run is making progress (for long loops that log nothing).

    Library code calls it freely: outside a run it does nothing.
    """
    if _active is not None:
        _active.alive()


class RunContext:
    """What a kind's `run(ctx, spec)` gets. Made by the worker in the run's process; tests make their own."""

    def __init__(self, store: Store, run_id: int, *, device: str = "cpu", attempt: int | None = None,
                 on_activity: Callable[[int | None], None] | None = None):
        self.store = store
        self.run_id = run_id
        self.device = device
        with store.read() as s:
            run = s.get(Run, run_id)
            if run is None:
                raise KeyError(f"no run {run_id}")
            self.spec: dict[str, Any] = run.spec
            self.attempt = attempt if attempt is not None else max(run.attempt, 1)
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

    # --- ownership -------------------------------------------------------------------------------

    def _write(self):
        """A write transaction that first checks this attempt still owns the run (see LostOwnership)."""
        return _OwnedWrite(self)

    def alive(self, step: int | None = None) -> None:
        """Progress without a result to report: keeps the worker's no-progress watchdog quiet."""
        if step is not None:
            self._step = int(step)
        now = time.monotonic()
        if self._on_activity is not None and now - self._last_activity >= ACTIVITY_INTERVAL:
            self._last_activity = now
            self._on_activity(self._step)

    # --- scalars ---------------------------------------------------------------------------------

    def log(self, step: int, **scalars: float) -> None:
        """Buffer scalars at `step`; written within about a second. A store fault keeps them buffered."""
        now = time.time()
        with self._lock:
            self._buffer.append((int(step), now, scalars))
        self.alive(step)
        if now - self._last_flush >= FLUSH_INTERVAL:
            self.flush(raise_fault=False)

    def progress(self, done: int, total: int) -> None:
        """`done` of `total` units (steps) finished; shown as the run's progress bar."""
        self._progress = (int(done), int(total))
        self.alive(done)

    def flush(self, raise_fault: bool = True) -> None:
        """Write the buffered scalars and progress now. On a store fault they stay buffered for the next
        flush; the fault is raised (as StoreFault) unless raise_fault is False."""
        with self._lock:
            buffered, self._buffer = self._buffer, []
            progress, self._progress = self._progress, None
            self._last_flush = time.time()
        if not buffered and progress is None:
            return
        points = [(self.run_id, k, step, _finite_or_none(v), wall, self.attempt)
                  for step, wall, scalars in buffered for k, v in scalars.items()]
        try:
            with self._write() as s:
                if points:  # plain executemany: the ORM's bulk insert costs several times more per row
                    s.connection().exec_driver_sql(_INSERT_POINTS, points)
                if progress is not None:
                    s.execute(update(Run).where(Run.id == self.run_id)
                              .values(progress_done=progress[0], progress_total=progress[1]))
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
        """Headline numbers of the run (merged into what earlier calls stored)."""
        values = _jsonable(values)
        with self._write() as s:
            run = s.get(Run, self.run_id)
            run.summary = {**(run.summary or {}), **values}

    def table(self, name: str, rows: list[dict[str, Any]]) -> None:
        """A result table (list of flat rows); a second call with the same name replaces it."""
        rows = _jsonable(list(rows))
        with self._write() as s:
            s.execute(delete(ResultTable).where(ResultTable.run_id == self.run_id, ResultTable.name == name))
            s.add(ResultTable(run_id=self.run_id, name=name, rows=rows, created_at=time.time()))

    def event(self, message: str, level: str = "info") -> None:
        """A line in the run's event log (the TUI's Log tab)."""
        with self._write() as s:
            s.add(RunEvent(run_id=self.run_id, time=time.time(), level=level, message=message))
        self.alive()

    def image(self, name: str, step: int | None, image: Any, **meta: Any) -> Path:
        """Save a PNG (PIL image, HxW/HxWxC array in [0,1] or uint8, or matplotlib figure)."""
        data = _png_bytes(image)
        rel = f"images/{name}/{step:08d}.png" if step is not None else f"images/{name}.png"
        path = artifact_path(self.store.home, self.run_id, rel)
        self._write_file(path, data)
        self._add_artifact(name, "image", path, step, meta, replace=True)
        return path

    def file(self, name: str, data: bytes, **meta: Any) -> Path:
        """A file artifact under the run's files/ (a trained model, say), replaced when written again."""
        path = artifact_path(self.store.home, self.run_id, f"files/{name}")
        self._write_file(path, data)
        self._add_artifact(name, "file", path, None, meta, replace=True)
        return path

    def _write_file(self, path: Path, data: bytes) -> None:
        self._check_owner()  # a superseded attempt must not overwrite the new attempt's files
        try:
            atomic_write_bytes(path, data)
        except OSError as e:
            if is_store_fault(e):
                raise StoreFault(f"cannot write {path.name}: {e.strerror}") from e
            raise

    def _check_owner(self) -> None:
        with self._write():
            pass

    def _add_artifact(self, name: str, kind: str, path: Path, step: int | None, meta: dict[str, Any],
                      replace: bool = False) -> None:
        rel = relative_to_home(self.store.home, path)
        with self._write() as s:
            if replace:  # a resumed run that redoes a picture (or a checkpoint) replaces the old row
                same = [Artifact.run_id == self.run_id, Artifact.name == name, Artifact.kind == kind]
                if kind != "checkpoint":  # one checkpoint row per run; one image row per (name, step)
                    same.append(Artifact.step.is_(None) if step is None else Artifact.step == step)
                s.execute(delete(Artifact).where(*same))
            s.add(Artifact(run_id=self.run_id, name=name, kind=kind, path=rel, step=step, meta=_jsonable(meta),
                           created_at=time.time()))

    # --- checkpoints -----------------------------------------------------------------------------

    def checkpoint(self, state: dict[str, Any], step: int) -> None:
        """Save `state` (nested dicts/lists of tensors and plain values) as the run's last checkpoint.

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
        folder = artifact_path(self.store.home, self.run_id, CHECKPOINTS)
        path = folder / f"a{self.attempt}-step-{step:09d}.safetensors"
        self._write_file(path, save(tensors, metadata={"state": json.dumps(skeleton), "step": str(step)}))
        self._add_artifact("checkpoint", "checkpoint", path, step, {}, replace=True)
        for old in folder.glob("*.safetensors"):  # only the owner gets here: the row above checked it
            if old != path:
                old.unlink(missing_ok=True)
        self.event(f"checkpoint at step {step}")

    def restore(self) -> dict[str, Any] | None:
        """The last checkpoint's state with its tensors on the CPU, or None when the run has none.

        Put each part where it belongs through its own API: `model.load_state_dict` and
        `optimizer.load_state_dict` copy onto their parameters' device, an EMA needs `.to(device)`,
        and generator states stay CPU byte tensors (`Generator.set_state` wants them so, CUDA too).
        """
        from safetensors import safe_open
        from safetensors.torch import load

        with self.store.read() as s:
            row = s.scalar(select(Artifact).where(Artifact.run_id == self.run_id, Artifact.kind == "checkpoint")
                           .order_by(Artifact.id.desc()).limit(1))
        folder = artifact_path(self.store.home, self.run_id, CHECKPOINTS)
        if row is not None and row.path.endswith(".safetensors") and (self.store.home / row.path).exists():
            path = self.store.home / row.path
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
            if "state" in meta:
                state = _unpack(json.loads(meta["state"]), load(path.read_bytes()))
                self.event(f"resumed from checkpoint at step {row.step}")
                return state
        if (folder / "last.json").exists():  # written by workbench before checkpoints carried their state
            meta = json.loads((folder / "last.json").read_text())
            state = _unpack(meta["state"], load((folder / meta["tensors"]).read_bytes()))
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

    # --- control ---------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask the run to stop (the worker does, on cancel, Ctrl-C or SIGTERM)."""
        self._stop.set()

    def should_stop(self) -> bool:
        """True once a stop was requested; kinds checkpoint and raise RunCancelled. Cheap enough to ask at
        every step: the worker's request arrives as an event; the store is read at most once a second
        (for contexts outside a worker)."""
        if not self._stop.is_set() and time.monotonic() - self._last_stop_check >= STOP_CHECK_INTERVAL:
            self._last_stop_check = time.monotonic()
            try:
                with self.store.read() as s:
                    if s.scalar(select(Run.cancel_requested).where(Run.id == self.run_id)):
                        self._stop.set()
            except DBAPIError:  # a store fault is not a reason to stop; the worker still relays cancels
                pass
        return self._stop.is_set()

    def close(self) -> None:
        """Write what is buffered (the run's last metrics); raises StoreFault if the store cannot take them."""
        self.flush()


class _OwnedWrite:
    """store.write() that refuses a superseded attempt and turns store errors into StoreFault."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self._cm = ctx.store.write()

    def __enter__(self):
        try:
            s = self._cm.__enter__()
            row = s.execute(select(Run.status, Run.attempt).where(Run.id == self.ctx.run_id)).first()
        except DBAPIError as e:
            raise StoreFault(_short(e)) from e
        if row is None or row.status != "running" or row.attempt != self.ctx.attempt:
            self._cm.__exit__(None, None, None)
            raise LostOwnership(f"run {self.ctx.run_id} attempt {self.ctx.attempt} no longer owns the run "
                                f"({'deleted' if row is None else f'{row.status}, attempt {row.attempt}'})")
        return s

    def __exit__(self, exc_type, exc, tb):
        try:
            self._cm.__exit__(exc_type, exc, tb)  # commits, or rolls back when the body raised
        except DBAPIError as e:
            raise StoreFault(_short(e)) from e
        if isinstance(exc, DBAPIError):
            raise StoreFault(_short(exc)) from exc
        return False


def _short(e: DBAPIError) -> str:
    return str(e.orig) if getattr(e, "orig", None) is not None else str(e).splitlines()[0]


# --- helpers -------------------------------------------------------------------------------------

def _finite_or_none(v: float) -> float | None:
    """SQLite stores NaN as NULL anyway; keep the row so a curve shows the gap."""
    v = float(v)
    return None if math.isnan(v) else v


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else (1e308 if obj > 0 else -1e308)
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # 0-d torch tensors
        return obj.item()
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

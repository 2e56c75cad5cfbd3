"""RunContext: the only API an experiment kind uses to report results and checkpoint.

Scalars are buffered and written about once a second in one transaction, so logging every step
costs microseconds. Everything else (images, tables, summary, checkpoints) is written at once.
"""

from __future__ import annotations

import io
import json
import math
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import delete, select, update

from store.artifacts import artifact_path, atomic_write_bytes, relative_to_home, run_dir
from store.db import Store
from store.models import Artifact, MetricPoint, ResultTable, Run, RunEvent

FLUSH_INTERVAL = 1.0
STOP_CHECK_INTERVAL = 1.0
CHECKPOINTS = "checkpoints"
_INSERT_POINTS = (f"INSERT INTO {MetricPoint.__tablename__} (run_id, key, step, value, wall_time, attempt) "
                  "VALUES (?, ?, ?, ?, ?, ?)")


class RunCancelled(Exception):
    """Raised by a kind (or the shared training loop) when should_stop() asked it to stop."""


class RunContext:
    def __init__(self, store: Store, run_id: int, *, device: str = "cpu", attempt: int | None = None):
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

    # --- scalars ---------------------------------------------------------------------------------

    def log(self, step: int, **scalars: float) -> None:
        now = time.time()
        with self._lock:
            self._buffer.append((int(step), now, scalars))
        if now - self._last_flush >= FLUSH_INTERVAL:
            self.flush()

    def progress(self, done: int, total: int) -> None:
        self._progress = (int(done), int(total))

    def flush(self) -> None:
        with self._lock:
            buffered, self._buffer = self._buffer, []
            progress, self._progress = self._progress, None
            self._last_flush = time.time()
        if not buffered and progress is None:
            return
        points = [(self.run_id, k, step, _finite_or_none(v), wall, self.attempt)
                  for step, wall, scalars in buffered for k, v in scalars.items()]
        with self.store.write() as s:
            if points:  # plain executemany: the ORM's bulk insert costs several times more per row
                s.connection().exec_driver_sql(_INSERT_POINTS, points)
            if progress is not None:
                s.execute(update(Run).where(Run.id == self.run_id)
                          .values(progress_done=progress[0], progress_total=progress[1]))

    # --- results ---------------------------------------------------------------------------------

    def summary(self, **values: Any) -> None:
        """Headline numbers of the run (merged into what earlier calls stored)."""
        values = _jsonable(values)
        with self.store.write() as s:
            run = s.get(Run, self.run_id)
            run.summary = {**(run.summary or {}), **values}

    def table(self, name: str, rows: list[dict[str, Any]]) -> None:
        """A result table (list of flat rows); a second call with the same name replaces it."""
        rows = _jsonable(list(rows))
        with self.store.write() as s:
            s.execute(delete(ResultTable).where(ResultTable.run_id == self.run_id, ResultTable.name == name))
            s.add(ResultTable(run_id=self.run_id, name=name, rows=rows, created_at=time.time()))

    def event(self, message: str, level: str = "info") -> None:
        with self.store.write() as s:
            s.add(RunEvent(run_id=self.run_id, time=time.time(), level=level, message=message))

    def image(self, name: str, step: int | None, image: Any, **meta: Any) -> Path:
        """Save a PNG (PIL image, HxW/HxWxC array in [0,1] or uint8, or matplotlib figure)."""
        data = _png_bytes(image)
        rel = f"images/{name}/{step:08d}.png" if step is not None else f"images/{name}.png"
        path = artifact_path(self.store.home, self.run_id, rel)
        atomic_write_bytes(path, data)
        self._add_artifact(name, "image", path, step, meta, replace=True)
        return path

    def file(self, name: str, data: bytes, **meta: Any) -> Path:
        path = artifact_path(self.store.home, self.run_id, f"files/{name}")
        atomic_write_bytes(path, data)
        self._add_artifact(name, "file", path, None, meta, replace=True)
        return path

    def _add_artifact(self, name: str, kind: str, path: Path, step: int | None, meta: dict[str, Any],
                      replace: bool = False) -> None:
        rel = relative_to_home(self.store.home, path)
        with self.store.write() as s:
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
        The tensors go to a file named by the step and `last.json` is replaced last, pointing at
        it: a kill at any moment leaves the previous json and its tensor file intact.
        """
        from safetensors.torch import save

        self.flush()
        tensors: dict[str, Any] = {}
        skeleton = _pack(state, "", tensors)
        folder = artifact_path(self.store.home, self.run_id, CHECKPOINTS)
        tensor_path = folder / f"step-{step:09d}.safetensors"
        atomic_write_bytes(tensor_path, save(tensors))
        atomic_write_bytes(folder / "last.json",
                           json.dumps({"step": step, "tensors": tensor_path.name, "state": skeleton}).encode())
        for old in folder.glob("step-*.safetensors"):
            if old != tensor_path:
                old.unlink(missing_ok=True)
        self._add_artifact("checkpoint", "checkpoint", tensor_path, step, {}, replace=True)
        self.event(f"checkpoint at step {step}")

    def restore(self) -> dict[str, Any] | None:
        """The last checkpoint's state (tensors on CPU), or None when the run has none."""
        from safetensors.torch import load

        folder = artifact_path(self.store.home, self.run_id, CHECKPOINTS)
        if not (folder / "last.json").exists():
            return None
        meta = json.loads((folder / "last.json").read_text())
        state = _unpack(meta["state"], load((folder / meta["tensors"]).read_bytes()))
        self.event(f"resumed from checkpoint at step {meta['step']}")
        return state

    # --- control ---------------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    def should_stop(self) -> bool:
        """True once a cancel was requested; kinds checkpoint and return (or raise RunCancelled)."""
        if not self._stop.is_set() and time.monotonic() - self._last_stop_check >= STOP_CHECK_INTERVAL:
            self._last_stop_check = time.monotonic()
            with self.store.read() as s:
                if s.scalar(select(Run.cancel_requested).where(Run.id == self.run_id)):
                    self._stop.set()
        return self._stop.is_set()

    def close(self) -> None:
        self.flush()


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

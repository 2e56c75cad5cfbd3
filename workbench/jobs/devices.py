"""Devices: the worker's slots (`--devices`), the torch device a run uses inside its slot, and the
host-wide lock that keeps one run per device across every worker on the host.

The worker (jobs.runner) and the backends' run processes (jobs.backends.attempt) both import this; it
imports neither, so there is no circle between the worker and its backends.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def parse_devices(devices: str) -> list[str]:
    """`cpu`, `cpu:2` (two CPU slots), `0,1` (GPU indices) or `auto` -> one entry per slot."""
    if devices == "auto":
        n = gpu_count()
        return [str(i) for i in range(n)] or ["cpu"]
    slots: list[str] = []
    for part in devices.split(","):
        part = part.strip()
        if part == "cpu" or part.startswith("cpu:"):
            count = part.partition(":")[2] or "1"
            if not count.isdigit() or int(count) < 1:
                raise ValueError(f"--devices: bad CPU slot count in {part!r}")
            slots += ["cpu"] * int(count)
        elif part.isdigit():
            slots.append(part)
        else:
            raise ValueError(f"--devices: {part!r} is neither 'cpu', 'cpu:N', a GPU index nor 'auto'")
    if len(set(s for s in slots if s != "cpu")) != len([s for s in slots if s != "cpu"]):
        raise ValueError("--devices: a GPU index is listed twice (one run per GPU)")
    return slots


def gpu_count() -> int:
    """GPUs on this host, from NVML where it answers (it does not initialise CUDA in the worker)."""
    import torch

    if not torch.cuda._is_compiled():
        return 0
    n = torch.cuda._device_count_nvml()
    return n if n >= 0 else torch.cuda.device_count()


def resolve_device(requested: str, slot: str) -> str:
    """The torch device a run uses inside its slot (its GPU is always cuda:0 there)."""
    import torch

    if requested == "cpu" or (requested == "auto" and slot == "cpu"):
        if requested == "auto" and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if requested.startswith("cuda") or requested == "auto":
        if slot == "cpu" or not torch.cuda.is_available():
            if requested == "auto":
                return "cpu"
            raise RuntimeError(f"the spec asks for device {requested!r} but this worker slot has no GPU")
        return "cuda:0"
    return requested


def lock_dir() -> Path:
    """Where device locks live: one folder per host, shared by every user's workers."""
    d = Path(os.environ.get("WORKBENCH_LOCK_DIR") or "/tmp/workbench-devices")
    if not d.is_dir():
        d.mkdir(parents=True, exist_ok=True)
        try:
            d.chmod(0o1777)  # like /tmp: any user's worker can lock, none can remove another's lock
        except OSError:
            pass
    return d


class DeviceLock:
    """A host-wide exclusive lock on one device slot (flock: released by the kernel if the worker dies)."""

    def __init__(self, name: str):
        self.name = name
        self.path = lock_dir() / f"{name}.lock"
        self._file = None

    def acquire(self) -> bool:
        if self._file is not None:
            return True
        f = open(self.path, "a")  # noqa: SIM115 - held while the slot runs a run
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return False
        f.truncate(0)  # the holder's PID, for a worker that waits on it to name (holder())
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._file = f
        return True

    def holder(self) -> int | None:
        """The PID of the process that holds the lock, as it wrote it (None when unreadable)."""
        try:
            with open(self.path, "rb") as f:
                text = f.read(32).decode("ascii", "replace").strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the flock
            self._file = None

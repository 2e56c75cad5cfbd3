"""What a run uses while it runs: its process's CPU and memory, and where it has a GPU, the GPU's use (NVML)
and the memory its allocator holds. Sampled every INTERVAL seconds into the run's own metrics as
`system/...` with x the seconds into the attempt, so the Curves tab plots them, the Overview shows the
latest, and exports carry them like any curve. Never counted as progress: a hung run still looks hung."""

from __future__ import annotations

import os
import resource
import threading
import time
from collections.abc import Callable

INTERVAL = 10.0  # seconds; $WORKBENCH_RESOURCE_SECONDS changes it (the tests sample faster)
PREFIX = "system/"
RESOURCES = CPU, MEMORY, GPU, GPU_MEMORY = tuple(
    f"{PREFIX}{k}" for k in ("cpu_percent", "memory_gb", "gpu_percent", "gpu_memory_gb")
)


def cpu_seconds() -> float:
    """CPU time of this process, every thread, user and system."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


def memory_gb() -> float:
    """This process's resident memory now (Linux); its peak elsewhere."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        return peak / (2**30 if os.uname().sysname == "Darwin" else 2**20)


def gpu_use(device: str) -> dict[str, float]:
    """The run's GPU: how busy it was (NVML, through torch; absent without nvidia-ml-py) and the memory
    this process's allocator holds. Nothing before the run has started CUDA: sampling must not start it."""
    if not device.startswith("cuda"):
        return {}
    import torch

    if not torch.cuda.is_initialized():
        return {}
    use = {GPU_MEMORY: torch.cuda.memory_reserved(device) / 2**30}
    try:
        use[GPU] = float(torch.cuda.utilization(device))
    except Exception:  # noqa: BLE001 - no NVML (nvidia-ml-py missing, or a driver without it): memory only
        pass
    return use


class Sampler:
    """A daemon thread that hands `record(seconds, scalars)` a sample every `interval` seconds until
    stopped."""

    def __init__(
        self,
        device: Callable[[], str],
        record: Callable[[int, dict[str, float]], None],
        interval: float | None = None,
    ):
        if interval is None:
            try:
                interval = max(0.1, float(os.environ.get("WORKBENCH_RESOURCE_SECONDS") or INTERVAL))
            except ValueError:
                interval = INTERVAL
        self.device, self.record, self.interval = device, record, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="resources")

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        start = last_wall = time.monotonic()
        last_cpu = cpu_seconds()
        while not self._stop.wait(self.interval):
            wall, cpu = time.monotonic(), cpu_seconds()
            scalars = {CPU: 100.0 * (cpu - last_cpu) / max(wall - last_wall, 1e-9), MEMORY: memory_gb()}
            try:
                scalars |= gpu_use(self.device())
            except Exception:  # noqa: BLE001 - a sample is never worth failing the run
                pass
            last_wall, last_cpu = wall, cpu
            self.record(round(wall - start), scalars)

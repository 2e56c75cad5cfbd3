"""What the worker's fork server imports before it forks any run, without touching the CUDA runtime.

A process forked after the CUDA runtime was initialised cannot use CUDA ("Cannot re-initialize CUDA in
forked subprocess"), and a CUDA_VISIBLE_DEVICES set after that no longer pins it to its GPU. Importing
diffusers asks torch whether an accelerator is available, and torch answers with cudaGetDeviceCount,
which initialises the runtime and marks every later fork as bad. So the server imports the heavy
modules under `no_cuda_runtime()`: while they import, availability and device counts come from NVML,
which leaves CUDA alone (and count 0 where NVML cannot answer); afterwards torch's own functions are
back, for the runs. PYTORCH_NVML_BASED_CUDA_CHECK alone is not enough: torch falls back to the runtime
whenever NVML fails (MIG devices, a machine without the NVIDIA driver).

The worker checks the result: its first fork reports whether torch considers the fork poisoned.

Importing this module does the preloading (multiprocessing's forkserver preloads by module name), so
only the fork server imports it.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator


@contextlib.contextmanager
def no_cuda_runtime() -> Iterator[None]:
    """Answer CUDA availability from NVML only, never from the CUDA runtime, inside the block."""
    import torch

    cuda, c = torch.cuda, torch._C
    saved = (cuda.is_available, cuda.device_count, getattr(c, "_cuda_getDeviceCount", None))

    def nvml_count() -> int:
        return max(0, cuda._device_count_nvml()) if cuda._is_compiled() else 0

    cuda.is_available = lambda: nvml_count() > 0
    cuda.device_count = nvml_count
    if saved[2] is not None:
        c._cuda_getDeviceCount = nvml_count
    try:
        yield
    finally:
        cuda.is_available, cuda.device_count = saved[0], saved[1]
        if saved[2] is not None:
            c._cuda_getDeviceCount = saved[2]


def modules() -> list[str]:
    from workbench.jobs.kinds import kind_names, preload_modules

    return ["workbench.jobs.context", "workbench.jobs.spec", "workbench.jobs.jobfile", *preload_modules()] + [
        f"workbench.jobs.kinds.{k}" for k in kind_names()
    ]


def preload() -> None:
    with no_cuda_runtime():
        for name in modules():
            importlib.import_module(name)


preload()

"""Execution backends: where a claimed run executes.

The worker (jobs.runner) claims a run, holds its lease, relays cancel and stop, and records the outcome.
A backend only starts the run's execution, says whether it has ended and how, asks it to stop, kills it,
and names its log:

- `local`: a child process per run on this host, forked from a warm fork server (the default);
- `ray`: a Ray task per run on the cluster at an address (jobs.backends.ray_tasks);
- `slurm`: a Slurm job per run through submitit (jobs.backends.slurm_jobs).

Every backend's run process sends its stdout and stderr to runs/<id>/output.log under $WORKBENCH_HOME
(`workbench logs RUN`), so a run's log is found the same way wherever it ran.

A run on Ray or Slurm executes jobs.backends.remote.execute_run on whichever host the cluster picks. It
writes through the same RunContext, and reads cancel, stop and its lease from the store, since no pipe
reaches it; its artifacts go under the same $WORKBENCH_HOME, which must be a path every host shares.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from typing import Any

from workbench.store.models import RunStatus

# A run that reports no step, metric or event for this long is hung (a spec's `no_progress_minutes`):
# the worker kills a local one; a remote one ends itself (jobs.backends.remote).
DEFAULT_NO_PROGRESS_MINUTES = 30.0


class BackendUnavailable(Exception):
    """The cluster cannot be reached or used (exit code 2 in the CLI)."""


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended: what the run's process reports (through a pipe, Ray or submitit, so plain
    picklable fields), or what the worker concludes when the process could not say."""

    status: RunStatus  # one of the final states
    error: str | None = None
    traceback: str | None = None
    lost: bool = False  # the attempt no longer owned the run (reaped or retried): nothing is recorded

    @classmethod
    def lost_run(cls, why: str) -> Outcome:
        return cls(RunStatus.INTERRUPTED, why, None, lost=True)


@dataclass
class Execution:
    """One attempt of a run as its backend tracks it."""

    run_id: int
    attempt: int
    job: Any = None  # the backend's own handle: a process, a Ray ObjectRef, a submitit Job
    pid: int | None = None
    job_id: str | None = None  # Ray task id, Slurm job id
    last_alive: float = field(default_factory=time.monotonic)  # last sign of progress (local only)
    started_at: float = field(default_factory=time.monotonic)  # when the backend took it
    began: bool = False  # its process has started (a cluster may keep it pending)
    last_step: tuple[int, float] | None = None
    step_seconds: float = 0.0
    result: Outcome | None = None  # the run's own report, when it made one


@dataclass(frozen=True)
class Ended:
    """How an execution ended: the run's report when it made one, else what the backend saw."""

    result: Outcome | None
    how: str = ""  # "killed by signal 9", "the Ray task's process died", "Slurm job FAILED"


class Backend:
    """The interface; see the module docstring. Slots are device labels the worker shows and claims by."""

    name = ""
    address: str | None = None
    watches_progress = False  # True where the worker sees every step (a pipe) and can kill a hung run
    # Seconds a run may wait for the cluster to start it before it ends `interrupted` (None: for ever); a
    # task no node can take (more CPUs or GPUs than any node has) would otherwise hold its slot for ever.
    pending_limit: float | None = None

    def slots(self) -> list[str]:
        raise NotImplementedError

    def slot_has_gpu(self, slot: str) -> bool:
        raise NotImplementedError

    def default_threads(self, slot: str) -> int | None:
        """CPU threads for a run whose spec sets none; None: the worker's share of this host's cores."""
        return None

    def prepare(self, log) -> None:
        """Work before the first claim (the local fork server starts here)."""

    def start(self, run, slot: str, threads: int) -> Execution:
        raise NotImplementedError

    def poll(self, ex: Execution) -> Ended | None:
        """None while it executes."""
        raise NotImplementedError

    def stop(self, ex: Execution) -> None:
        """Ask it to checkpoint and end (the worker is stopping, or the run was cancelled)."""
        raise NotImplementedError

    def kill(self, ex: Execution) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class ClusterBackend(Backend):
    """Ray and Slurm: the run executes jobs.backends.remote.execute_run wherever the cluster places it and
    hears cancel and stop from the store, so `stop` has nothing to send. Slots are `<name>:gpu|cpu`."""

    def slot_has_gpu(self, slot: str) -> bool:
        return slot.endswith(":gpu")

    def wants_gpu(self, run, slot: str) -> bool:
        return self.slot_has_gpu(slot) and run.spec.get("device", "auto") != "cpu"

    def run_args(self, run, gpu: bool, threads: int) -> tuple:
        """execute_run's arguments for one attempt."""
        return (self.store.url, str(self.store.home), run.id, run.attempt, gpu, threads, self.name)

    def stop(self, ex: Execution) -> None:
        pass  # the run reads cancel and stop requests from the store (jobs.backends.remote)


@dataclass(frozen=True)
class Option:
    """A `workbench worker` flag a backend takes. The CLI builds the worker's flags from every backend's
    options; a flag is passed to the backend's constructor as keyword `name` only when it is given (the
    constructor's default is the default: say it in `help`)."""

    name: str  # the constructor's keyword
    type: type  # str, int or float
    help: str
    required: bool = False
    low: float | None = None  # bounds the CLI checks
    high: float | None = None
    minutes: bool = False  # given in minutes, passed in seconds
    flag: str | None = None  # default: --name with dashes
    hidden: bool = False

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class BackendInfo:
    """Where a backend's class lives (imported only when chosen: Ray and submitit are heavy) and the flags
    it takes."""

    module: str
    cls: str
    options: tuple[Option, ...] = ()


_PENDING = "minutes a run may wait for the cluster to start it, then it ends interrupted"
# Every backend, declared once: `worker --backend NAME` and its flags come from here.
BACKENDS: dict[str, BackendInfo] = {
    "local": BackendInfo("workbench.jobs.backends.local", "LocalBackend"),
    "ray": BackendInfo(
        "workbench.jobs.backends.ray_tasks",
        "RayBackend",
        (
            Option("address", str, "the cluster's address (HEAD:6379, or ray://HEAD:10001)", required=True),
            Option("slots", int, "runs in flight at once (default: the cluster's GPUs)", low=1, high=4096),
            Option("pending_limit", float, _PENDING + " (default 60)", low=0.05, minutes=True),
        ),
    ),
    "slurm": BackendInfo(
        "workbench.jobs.backends.slurm_jobs",
        "SlurmBackend",
        (
            Option("partition", str, "the partition jobs go to"),
            Option("slots", int, "jobs in flight at once (default 4)", low=1, high=4096),
            Option("gpus_per_run", int, "GPUs a run's job asks for (0: CPU jobs; default 1)", low=0, high=8),
            Option(
                "time_limit",
                float,
                "a job's time limit in minutes unless its spec sets time_limit_minutes (default 1440)",
                low=1,
            ),
            Option("pending_limit", float, _PENDING + " (default: none)", low=0.05, minutes=True),
            Option("cluster", str, "submitit's cluster (local: tests)", flag="--slurm-cluster", hidden=True),
        ),
    ),
}


def make_backend(name: str, store, **options) -> Backend:
    """The backend a worker was configured with (`workbench worker --backend ...`)."""
    try:
        return _make(name, store, **options)
    except ImportError as e:
        raise BackendUnavailable(
            f"the {name} backend needs {e.name}: pip install 'workbench[cluster]'"
        ) from None


def _make(name: str, store, **options) -> Backend:
    if name != "local" and store.has_password:  # the URL would travel in every task's arguments
        raise BackendUnavailable(
            f"the {name} backend sends the store's URL to every run, so it must not hold a password: "
            "put the password in ~/.pgpass (mode 0600) or a file named by $PGPASSFILE, on every host, and "
            f"drop it from $WORKBENCH_DB_URL ({store.safe_url})"
        )
    if name not in BACKENDS:
        raise ValueError(f"--backend: {name!r} is not one of {', '.join(BACKENDS)}")
    info = BACKENDS[name]
    return getattr(importlib.import_module(info.module), info.cls)(store, **options)

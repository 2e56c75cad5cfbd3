"""The Slurm backend: each run one Slurm job, submitted through submitit.

The job asks for one GPU when the spec allows one (unless `--gpus-per-run 0`), `threads` CPUs, and the
spec's `time_limit_minutes` (else `--time-limit`). Before a preemption or its time limit Slurm signals
the job (USR2); submitit then requeues it with the same arguments, and the requeued job resumes the
same attempt from the run's last checkpoint: the worker holds the run's lease all the while, since the
job is still alive in Slurm's queue. `cluster="local"` runs the same jobs as processes on this host
(submitit's local executor, which signals and requeues the same way): tests, and a box without Slurm.
"""

from __future__ import annotations

from pathlib import Path

from workbench.jobs.backends import BackendUnavailable, ClusterBackend, Ended, Execution
from workbench.jobs.backends.remote import execute_run


def _checkpointable():
    import submitit

    class SlurmRun(submitit.helpers.Checkpointable):
        """submitit's default checkpoint() requeues the same call: the run resumes from its checkpoint."""

        def __call__(self, *args):
            return execute_run(*args)

    return SlurmRun


class SlurmBackend(ClusterBackend):
    name = "slurm"

    def __init__(
        self,
        store,
        partition: str | None = None,
        slots: int = 4,
        gpus_per_run: int = 1,
        time_limit: float = 24 * 60,
        cluster: str = "slurm",
        pending_limit: float
        | None = None,  # a busy queue may hold a job for days; sbatch refuses the impossible
    ):
        import submitit

        self.store, self.partition, self.n_slots = store, partition, slots
        self.pending_limit = pending_limit
        self.gpus_per_run, self.time_limit = gpus_per_run, time_limit
        self.address = (
            f"partition {partition or '(default)'}" if cluster == "slurm" else "submitit's local executor"
        )
        try:
            self.executor = submitit.AutoExecutor(folder=Path(store.home) / "slurm" / "%j", cluster=cluster)
        except RuntimeError as e:  # no sbatch on this host
            raise BackendUnavailable(f"cannot submit Slurm jobs from this host: {e}") from None
        self.cluster = self.executor.cluster
        self._run_cls = _checkpointable()

    def slots(self) -> list[str]:
        return ["slurm:gpu" if self.gpus_per_run else "slurm:cpu"] * self.n_slots

    def default_threads(self, slot: str) -> int | None:
        return 8 if self.slot_has_gpu(slot) else 4

    def start(self, run, slot: str, threads: int) -> Execution:
        gpu = self.wants_gpu(run, slot)
        params = {
            "name": f"workbench-run-{run.id}",
            "timeout_min": int(run.spec.get("time_limit_minutes") or self.time_limit),
            "gpus_per_node": self.gpus_per_run if gpu else 0,
            "cpus_per_task": threads,
            "tasks_per_node": 1,
            "nodes": 1,
        }
        if self.cluster == "slurm":
            params["slurm_signal_delay_s"] = 120
            if self.partition:
                params["slurm_partition"] = self.partition
        self.executor.update_parameters(**params)
        job = self.executor.submit(self._run_cls(), *self.run_args(run, gpu, threads))
        return Execution(run.id, run.attempt, job=job, job_id=str(job.job_id))

    def poll(self, ex: Execution) -> Ended | None:
        job = ex.job
        if not job.done():
            return None
        try:
            return Ended(job.result())
        except Exception as e:  # noqa: BLE001 - the job died, was cancelled, or timed out too often
            return Ended(None, f"Slurm job {ex.job_id} ended ({job.state}: {str(e).splitlines()[0][:200]})")

    def kill(self, ex: Execution) -> None:
        try:
            ex.job.cancel(check=False)
        except Exception:  # noqa: BLE001 - already gone
            pass

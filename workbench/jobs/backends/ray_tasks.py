"""The Ray backend: each run one Ray task on the cluster at `address` (`ray start --head` on one host,
`ray start --address HEAD:6379` on the others; or a `ray://` client address).

A task asks for one GPU when the cluster has GPUs and the spec allows one (`device: auto | cuda`), and
for `threads` CPUs (at most the largest node's: a task runs on one node); `max_calls=1` gives each run
a fresh worker process (its GPU memory and its stdout are its own), `max_retries=0` because a run's
retry is workbench's (`workbench retry`: a new attempt, resumed from the last checkpoint), not Ray's.
A task Ray has not started within `pending_limit` (60 min) is cancelled and its run ends `interrupted`.
"""

from __future__ import annotations

from workbench.jobs.backends import BackendUnavailable, ClusterBackend, Ended, Execution
from workbench.jobs.backends.remote import execute_run


class RayBackend(ClusterBackend):
    name = "ray"

    def __init__(self, store, address: str, slots: int | None = None, pending_limit: float | None = 3600.0):
        import ray

        self.store, self.address, self.pending_limit = store, address, pending_limit
        try:
            ray.init(
                address=address,
                logging_level="ERROR",
                log_to_driver=False,
                ignore_reinit_error=True,
                namespace="workbench",
            )
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise BackendUnavailable(f"cannot reach the Ray cluster at {address}: {e}") from None
        resources = ray.cluster_resources()
        self.gpus = int(resources.get("GPU", 0))
        self.cpus = max(1, int(resources.get("CPU", 1)))
        # A task must fit on one node: asking for more CPUs than the largest node has leaves it pending.
        per_node = [n.get("Resources", {}).get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
        self.node_cpus = max(1, int(max(per_node, default=self.cpus)))
        self.n_slots = slots or self.gpus or 1
        self._remote = ray.remote(max_calls=1)(execute_run)

    def slots(self) -> list[str]:
        return ["ray:gpu" if self.gpus else "ray:cpu"] * self.n_slots

    def default_threads(self, slot: str) -> int | None:
        return max(1, self.cpus // self.n_slots)

    def start(self, run, slot: str, threads: int) -> Execution:
        gpu = self.wants_gpu(run, slot)
        ref = self._remote.options(
            num_gpus=1 if gpu else 0,
            num_cpus=min(threads, self.node_cpus),
            max_retries=0,
            name=f"workbench-run-{run.id}",
        ).remote(*self.run_args(run, gpu, threads))
        return Execution(run.id, run.attempt, job=ref, job_id=ref.task_id().hex())

    def poll(self, ex: Execution) -> Ended | None:
        import ray

        ready, _ = ray.wait([ex.job], timeout=0)
        if not ready:
            return None
        try:
            return Ended(ray.get(ex.job))
        except ray.exceptions.TaskCancelledError:
            return Ended(None, "the Ray task was cancelled")
        except ray.exceptions.RayError as e:  # the task's process died (killed, out of memory, node lost)
            return Ended(None, f"the Ray task ended ({type(e).__name__}: {str(e).splitlines()[0][:200]})")

    def kill(self, ex: Execution) -> None:
        import ray

        try:
            ray.cancel(ex.job, force=True)
        except Exception:  # noqa: BLE001 - already finished
            pass

    def close(self) -> None:
        import ray

        ray.shutdown()

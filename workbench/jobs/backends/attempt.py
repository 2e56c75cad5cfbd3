"""One attempt of a run inside the process that executes it, whatever started that process."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

from workbench.jobs.backends import Outcome
from workbench.jobs.context import LostOwnership, RunCancelled, RunContext, is_store_fault
from workbench.store.artifacts import run_dir
from workbench.store.models import RunStatus


def redirect_output(home: Path, run_id: int) -> Path:
    """Send this process's stdout and stderr (file descriptors, so C libraries too) to the run's log."""
    log_path = run_dir(Path(home), run_id) / "output.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab", buffering=0) as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
    return log_path


def limit_threads(threads: int) -> None:
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    # numpy's BLAS and scikit-learn's OpenMP keep their own pools, one thread per core: left alone, a
    # probe's small matrix products beside another run were 10x slower than on one thread.
    threadpool_limits(threads)


def run_attempt(ctx: RunContext, slot: str, where: str, refuse: str | None = None) -> Outcome:
    """Run the kind on `ctx`'s run in this process; the outcome to report: succeeded, cancelled, lost (the
    attempt no longer owns the run), or failed | interrupted with error and traceback. A store fault
    interrupts the run (resumable) instead of failing it. `refuse`: a reason this process must not run
    it (reported failed)."""
    import workbench.jobs.context

    workbench.jobs.context._active = ctx
    try:
        from workbench.jobs.devices import resolve_device
        from workbench.jobs.jobfile import spec_from_dict
        from workbench.jobs.kinds import load_kind
        from workbench.jobs.resources import Sampler

        ctx.event(where)
        if refuse:
            raise RuntimeError(refuse)
        if removed := ctx.remove_partial_files():
            ctx.event(f"removed {removed} partly written file(s) an earlier attempt left")
        spec = spec_from_dict(ctx.spec)
        ctx.device = resolve_device(spec.device, slot)
        sampler = Sampler(lambda: ctx.device, ctx._sampled).start()
        try:
            load_kind(spec.kind).run(ctx, spec)
            result = Outcome(RunStatus.SUCCEEDED)
        except RunCancelled:
            result = Outcome(RunStatus.CANCELLED)
        finally:
            sampler.stop()
        ctx.close()
    except LostOwnership as e:
        result = Outcome.lost_run(str(e))
    except SystemExit:  # how submitit requeues a preempted job: let it, keeping what was logged
        try:
            ctx.flush()
        finally:
            raise
    except BaseException as e:  # noqa: BLE001 - everything a kind raises fails its run, store faults excepted
        fault = is_store_fault(e) or (e.__cause__ is not None and is_store_fault(e.__cause__))
        result = Outcome(
            RunStatus.INTERRUPTED if fault else RunStatus.FAILED,
            f"store fault: {e}" if fault else f"{type(e).__name__}: {e}",
            traceback.format_exc(),
        )
        try:
            ctx.flush()
        except Exception:  # noqa: BLE001
            pass
    try:  # output.log may sit on the very disk that is full: the result must reach the worker anyway
        if result.lost:  # the worker that could say why may be gone: the run's own log says it
            sys.stderr.write(f"stopped without writing: {result.error}\n")
        elif result.traceback:
            sys.stderr.write(result.traceback)
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:
        pass
    return result

"""sleep: a trivial kind for trying the queue, the worker and the TUI without torch work.

It "trains" for `steps` steps of `seconds / steps` each, logs a decaying fake loss, checkpoints,
resumes, and honours cancel, exactly like a real kind does.
"""

from __future__ import annotations

import math
import time
from typing import Literal

from pydantic import Field

from workbench.jobs.context import RunCancelled, RunContext
from workbench.jobs.spec import BaseSpec


class Spec(BaseSpec):
    kind: Literal["sleep"] = "sleep"
    seconds: float = Field(0.0, ge=0.0, le=86_400.0, description="total time to sleep")
    steps: int = Field(1, ge=1, le=1_000_000)
    checkpoint_every: int = Field(10, ge=1, le=1_000_000)
    fail_at_step: int | None = Field(None, ge=0, description="raise an error at this step (for testing)")
    hang_at_step: int | None = Field(
        None, ge=0, description="stop reporting at this step, as a hung run does"
    )


def run(ctx: RunContext, spec: Spec) -> None:
    state = ctx.restore() or {"step": 0}
    start = state["step"]
    for step in range(start + 1, spec.steps + 1):
        if ctx.should_stop():
            ctx.checkpoint({"step": step - 1}, step - 1)
            raise RunCancelled
        if spec.fail_at_step is not None and step == spec.fail_at_step:
            raise RuntimeError(f"failing at step {step} as the spec asks")
        while spec.hang_at_step is not None and step == spec.hang_at_step:
            time.sleep(1.0)  # alive, silent and deaf to stop requests: what a deadlocked run looks like
        time.sleep(spec.seconds / spec.steps)
        ctx.log(step, loss=math.exp(-step / max(spec.steps, 1)))
        ctx.progress(step, spec.steps)
        if step % spec.checkpoint_every == 0:
            ctx.checkpoint({"step": step}, step)
    ctx.summary(steps=spec.steps, resumed_from=start)
    ctx.table("steps", [{"first": start + 1, "last": spec.steps}])

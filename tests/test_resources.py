"""What a run uses (jobs.resources): sampled in the run's process, stored as its `system/` curves, shown
on the Overview and by `show` while it runs."""

from __future__ import annotations

import time

from workbench.jobs.resources import CPU, GPU, GPU_MEMORY, MEMORY, Sampler, gpu_use
from workbench.report import resources_line


def test_the_sampler_measures_a_busy_thread_as_a_busy_core():
    """A thread spinning for 0.8 s reads near 100 % of a core (the sampler's own thread sleeps); memory is
    this process's (a Python with numpy holds tens of MB); a CPU run reports no GPU. Seen red with the CPU
    time divided by the whole run's wall time instead of the interval's."""
    samples = []
    sampler = Sampler(lambda: "cpu", lambda x, scalars: samples.append((x, scalars)), interval=0.2).start()
    time.sleep(0.5)  # an idle start: a cumulative average would drag the busy samples down
    end = time.monotonic() + 0.8
    while time.monotonic() < end:
        pass
    sampler.stop()
    busy = [s[CPU] for _, s in samples[3:]]
    assert busy and min(busy) > 40 and max(s[CPU] for _, s in samples[:2]) < 30, samples
    assert all(0.01 < s[MEMORY] < 64 for _, s in samples)
    assert all(GPU not in s for _, s in samples) and gpu_use("cpu") == {}


def test_the_line_people_read():
    assert resources_line({CPU: 184.2, MEMORY: 1.26}) == "CPU 184 % of a core, 1.3 GB"
    assert resources_line({CPU: 99.0, MEMORY: 2.0, GPU: 87.0, GPU_MEMORY: 12.14}) == (
        "CPU 99 % of a core, 2.0 GB; GPU 87 %, 12.1 GB"
    )
    assert resources_line({CPU: 99.0, GPU_MEMORY: 3.0}) == "CPU 99 % of a core; GPU 3.0 GB"
    assert resources_line({}) == ""

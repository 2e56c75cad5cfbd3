"""A GPU check anyone can run on a CUDA machine, through the real worker and CLI:

1. the images smoke spec on the GPU (bf16 autocast and channels_last, as the training loop uses there),
   longer so that it can be killed mid-training;
2. SIGKILL of the run's process mid-training, `retry`, and a check that the new attempt resumed from
   the checkpoint, on the GPU, and succeeded;
3. with two or more GPUs, two runs side by side on two GPUs (their running times overlap, one per GPU);
4. a table of what passed.

    make gpu-check            (or: python bench/gpu_check.py [--keep])

Exit code 0 when every check passed, 1 when one failed, 2 when there is no CUDA device.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPEC = """kind: images
name: gpu-check
preset: smoke
device: cuda
data: {name: digits}
train: {steps: 3000, checkpoint_every: 250, log_every: 50, mixed_precision: true}
sample: {guidance_scales: [0.0, 3.0], n_samples: 200}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary store")
    args = parser.parse_args()

    from workbench.jobs.devices import gpu_count

    n_gpus = gpu_count()
    if n_gpus == 0:
        print("gpu-check: no CUDA device on this machine (NVML and torch see none)", file=sys.stderr)
        return 2

    from workbench.store.db import Store
    from workbench.store.queries import events, get_run, show

    home = Path(tempfile.mkdtemp(prefix="wb-gpu-check-"))
    env = dict(
        os.environ, WORKBENCH_HOME=str(home), WORKBENCH_LOCK_DIR=str(home / "locks"), PYTHONUNBUFFERED="1"
    )
    env.pop("WORKBENCH_DB_URL", None)
    wb = [sys.executable, "-m", "workbench"]
    (home / "job.yaml").write_text(SPEC)
    (home / "pair.yaml").write_text(
        SPEC.replace("name: gpu-check", "name: gpu-pair") + "sweep:\n  seed: [1, 2]\n"
    )
    results: list[tuple[str, bool, str]] = []

    def check(name: str, ok: bool, detail: str) -> bool:
        results.append((name, bool(ok), detail))
        return bool(ok)

    def submit(spec: str) -> list[int]:
        out = subprocess.run(
            [*wb, "submit", str(home / spec), "--no-worker", "--json"],
            env=env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return json.loads(out)["run_ids"]

    def wait(pred, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred():
                return True
            time.sleep(0.2)
        return False

    devices = ",".join(str(i) for i in range(min(n_gpus, 2)))
    worker = subprocess.Popen(
        [*wb, "worker", "--devices", devices],
        env=env,
        cwd=ROOT,
        stdout=open(home / "worker.log", "w"),
        stderr=subprocess.STDOUT,
    )
    store = Store(home=home)
    try:
        (rid,) = submit("job.yaml")
        started = wait(lambda: get_run(store, rid).progress[0] >= 600, 600)
        run = get_run(store, rid)
        first = events(store, rid)
        process_line = next((e.message for e in first if e.message.startswith("process ")), "")
        check(
            "run starts on a GPU slot",
            started and run.device in devices.split(","),
            f"slot {run.device}, step {run.progress[0]}; {process_line}",
        )
        check("fork server left CUDA alone", "never touched CUDA" in process_line, process_line)
        gpu_line = next((e.message for e in first if "parameters on cuda" in e.message), "")
        check("model on cuda (bf16 autocast, channels_last)", bool(gpu_line), gpu_line)
        if started:
            step_at_kill = get_run(store, rid).progress[0]
            os.kill(run.pid, signal.SIGKILL)
            interrupted = wait(lambda: get_run(store, rid).status == "interrupted", 60)
            check("SIGKILL mid-training -> interrupted", interrupted, f"killed at step {step_at_kill}")
            subprocess.run(
                [*wb, "retry", str(rid), "--no-worker"], env=env, cwd=ROOT, check=True, capture_output=True
            )
            done = wait(lambda: get_run(store, rid).status in ("succeeded", "failed"), 1800)
            rec = show(store, rid).as_json()
            resumed = [
                e.message for e in events(store, rid) if e.message.startswith("resumed from checkpoint")
            ]
            check(
                "retry resumes from the checkpoint",
                bool(resumed) and rec["attempt"] == 2,
                f"{resumed[-1] if resumed else 'no resume event'}, attempt {rec['attempt']}",
            )
            check(
                "resumed run succeeds on the GPU",
                done and rec["status"] == "succeeded" and rec["device"] != "cpu",
                f"{rec['status']} on slot {rec['device']}: {rec['error'] or ''} "
                f"guided_accuracy {rec['summary'].get('guided_accuracy')}",
            )
        if n_gpus >= 2:
            a, b = submit("pair.yaml")
            both = wait(
                lambda: all(get_run(store, r).status in ("succeeded", "failed") for r in (a, b)), 1800
            )
            ra, rb = get_run(store, a), get_run(store, b)
            overlap = min(ra.finished_at or 0, rb.finished_at or 0) - max(
                ra.started_at or 0, rb.started_at or 0
            )
            check(
                "two runs side by side on two GPUs",
                both
                and ra.status == rb.status == "succeeded"
                and {ra.device, rb.device} == {"0", "1"}
                and overlap > 0,
                f"slots {ra.device}, {rb.device}; overlapped {overlap:.1f} s",
            )
        else:
            results.append(("two runs on two GPUs", None, "skipped: one GPU"))
    finally:
        worker.send_signal(signal.SIGINT)
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()

    import torch

    print(
        f"\ngpu-check on {n_gpus} x {torch.cuda.get_device_name(0) if torch.cuda.is_available() else '?'}, "
        f"torch {torch.__version__}, store {home}\n"
    )
    print(f"| {'check':<46} | result | detail")
    print(f"|{'-' * 48}|--------|-------")
    for name, ok, detail in results:
        print(f"| {name:<46} | {'pass' if ok else 'skip' if ok is None else 'FAIL':<6} | {detail}")
    if not args.keep:
        print(f"\n(worker log and store kept in {home} only with --keep)")
    failed = [r for r in results if r[1] is False]
    if not args.keep and not failed:
        import shutil

        shutil.rmtree(home, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

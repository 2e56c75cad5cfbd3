"""The worker on the machines it is made for: CUDA and the fork server, one owner per run, Ctrl-C,
hung runs, device slots shared by several workers, and store faults it must outlive.

Each test names the defect it catches in its docstring. Four take 20-70 s each and carry the `slow`
marker (`make test-all` runs them).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.conftest import ROOT, subprocess_env, wb_command, write_spec
from tests.test_runner import alive, diagnose, submit, wait_for
from workbench.store.db import Store
from workbench.store.models import MetricPoint, Run, RunEvent
from workbench.store.queries import get_run, list_runs, show
from workbench.store.queue import live_workers


@pytest.fixture
def env(home):
    return subprocess_env(home)  # with its own device-lock folder


def start_worker(env, *args: str, devices: str = "cpu", new_session: bool = False) -> subprocess.Popen:
    return subprocess.Popen(
        wb_command("worker", "--devices", devices, *args),
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=new_session,
    )


def events(store: Store, run_id: int) -> list[str]:
    with store.read() as s:
        return list(
            s.scalars(select(RunEvent.message).where(RunEvent.run_id == run_id).order_by(RunEvent.id))
        )


def stop(*procs: subprocess.Popen) -> str:
    out = ""
    for p in procs:
        if p.poll() is None:
            p.kill()
        out += p.communicate(timeout=30)[0] or ""
    return out


# --- nothing of the user's folder is imported ---------------------------------------------------


def test_submit_in_a_folder_with_its_own_packages_imports_none_of_them(home, tmp_path):
    """A regular (non-editable) install, used from a research folder that holds packages named
    `workbench`, `jobs` and `store`: the submitter, the worker it starts, its fork server and the run
    import none of them (each would leave a marker file), and the run succeeds."""
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", wheels, ROOT],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    site = tmp_path / "site"  # a wheel unpacked is an installed pure-Python package
    zipfile.ZipFile(next(wheels.glob("workbench-*.whl"))).extractall(site)
    research = tmp_path / "research"
    for name in ("workbench", "jobs", "store"):
        (research / name).mkdir(parents=True)
        (research / name / "__init__.py").write_text(
            f"open({str(research / f'imported-{name}')!r}, 'w').close()\n"
        )
    write_spec(research, "kind: sleep\nseconds: 0.5\nsteps: 5\n")
    env = subprocess_env(home, PYTHONPATH=str(site))
    where = subprocess.run(
        [sys.executable, "-P", "-c", "import workbench; print(workbench.__file__)"],
        env=env,
        cwd=research,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(site)), where  # the wheel's copy, not the editable checkout
    console_script = "import sys; from workbench.cli import main; sys.argv[0] = 'workbench'; main()"
    done = subprocess.run(
        [sys.executable, "-P", "-c", console_script, "submit", "job.yaml", "--wait"],
        env=env,
        cwd=research,
        capture_output=True,
        text=True,
        timeout=240,
    )
    store = Store(home=home)
    try:
        for w in live_workers(store):
            os.kill(w.pid, signal.SIGTERM)
        wait_for(lambda: not live_workers(store), 60, "the started worker to exit")
        runs = list_runs(store)
    finally:
        store.dispose()
    assert sorted(p.name for p in research.iterdir() if p.name.startswith("imported-")) == []
    assert done.returncode == 0, done.stdout + done.stderr
    assert [r.status for r in runs] == ["succeeded"]


# --- CUDA and the fork server ---------------------------------------------------------------------

PROBE = textwrap.dedent("""
    import os, sys, torch
    calls = []
    real = torch._C._cuda_getDeviceCount
    def recorded():
        import traceback
        calls.append("".join(traceback.format_stack(limit=6)))
        return real()
    torch._C._cuda_getDeviceCount = recorded
    import workbench.jobs.preload  # what the fork server imports: torch, diffusers, every kind
    assert "diffusers" in sys.modules
    during = list(calls)
    pid = os.fork()
    if pid == 0:
        os._exit(3 if torch._C._cuda_isInBadFork() else 0)
    _, status = os.waitpid(pid, 0)
    torch.cuda.is_available()  # after the preload, torch's own function (and our recorder) is back
    print(len(during), os.waitstatus_to_exitcode(status), len(calls) > len(during))
    if during:
        print(during[0])
""")


def test_the_fork_server_preload_never_queries_the_cuda_runtime():
    """Catches: importing diffusers in the fork server calls cudaGetDeviceCount (through
    torch.accelerator.is_available), which poisons every fork for CUDA."""
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    during, child_status, restored = out.stdout.split("\n", 1)[0].split()
    assert during == "0", f"the CUDA runtime was queried while preloading:\n{out.stdout}"
    assert child_status == "0", "a child forked after the preload is in torch's 'bad fork' state"
    assert restored == "True", "torch.cuda's own functions were not put back after the preload"


def test_runs_pin_their_gpu_before_cuda_can_start(env, home, tmp_path):
    """Catches: a child that sets CUDA_VISIBLE_DEVICES after CUDA started (or never), and a fork server
    that touched CUDA. Slot 0 is a GPU slot with no GPU behind it here: the run still records what it got."""
    ids = submit(env, write_spec(tmp_path, "kind: sleep\nseconds: 1\nsteps: 5\nsweep:\n  seed: [1, 2]\n"))
    worker = start_worker(env, "--once", devices="cpu,0")
    try:
        assert worker.wait(timeout=120) == 0, stop(worker)
        store = Store(home=home)
        first = {r: events(store, r)[2] for r in ids}  # queued, started, then the process's own first event
        assert all("fork server never touched CUDA" in e for e in first.values()), first
        assigned = sorted(e.split("CUDA_VISIBLE_DEVICES=")[1].split()[0] for e in first.values())
        assert assigned == ["''", "'0'"], first
    finally:
        stop(worker)


# --- one owner per run ----------------------------------------------------------------------------


def test_a_run_whose_lease_lapses_while_alive_has_exactly_one_writer(env, home, tmp_path):
    """Catches: a worker that goes on writing (or records an outcome) for a run taken from it while it
    was slow. Worker A is frozen (SIGSTOP) while its run process keeps running; worker B, on another
    host (its own lock folder), reaps the lapsed lease; the run is retried and B runs attempt 2. The old
    process must stop writing at once, and A, thawed, must kill it and record nothing."""
    env = dict(env, WORKBENCH_HEARTBEAT_TIMEOUT="2", WORKBENCH_BUSY_TIMEOUT_MS="3000")  # lapse: 5 s
    # long enough to outlive B's start on a loaded machine: the old process must be alive when it is reaped
    (rid,) = submit(env, write_spec(tmp_path, "kind: sleep\nseconds: 40\nsteps: 400\ncheckpoint_every: 10\n"))
    a = start_worker(env)
    b = None
    store = Store(home=home)
    try:
        wait_for(lambda: get_run(store, rid).status == "running", 60, "worker A to start the run")
        b = start_worker(dict(env, WORKBENCH_LOCK_DIR=str(tmp_path / "other-host")))
        while "ready" not in b.stdout.readline():  # B's fork server is up: it will reap within seconds
            assert b.poll() is None, stop(b)
        old_pid = get_run(store, rid).pid
        os.kill(a.pid, signal.SIGSTOP)
        wait_for(lambda: get_run(store, rid).status == "interrupted", 30, "worker B to reap the run")
        assert subprocess.run(wb_command("retry", rid, "--no-worker"), env=env).returncode == 0
        wait_for(
            lambda: get_run(store, rid).attempt == 2 and get_run(store, rid).status == "running",
            30,
            "worker B to start attempt 2",
        )
        taken_at = time.time()
        wait_for(lambda: not alive(old_pid), 10, "the superseded process to stop by itself at its next write")
        os.kill(a.pid, signal.SIGCONT)
        wait_for(lambda: get_run(store, rid).status == "succeeded", 90, "attempt 2 to finish")
        time.sleep(2)  # A has renewed (and found nothing) at least once since it was thawed
        rec = show(store, rid).as_json()
        assert rec["attempt"] == 2 and rec["worker"].split(":")[1] == str(b.pid)
        with store.read() as s:
            late = s.scalars(
                select(MetricPoint.step).where(
                    MetricPoint.run_id == rid,
                    MetricPoint.attempt == 1,
                    MetricPoint.wall_time > taken_at + 0.5,
                )
            ).all()
            finished = s.scalars(
                select(RunEvent.message).where(RunEvent.run_id == rid, RunEvent.message.like("succeeded%"))
            ).all()
        assert late == [], f"the old attempt wrote metrics after the new one started: steps {late}"
        assert len(finished) == 1
        assert rec["summary"]["resumed_from"] >= 10  # attempt 2 resumed from attempt 1's checkpoint
        # the old process was alive when its lease was taken, and it stopped itself at a write (A was frozen)
        output = (home / "runs" / str(rid) / "output.log").read_text()
        assert f"run {rid} attempt 1 no longer owns the run" in output, output
        ckpt = [x for x in rec["artifacts"] if x["kind"] == "checkpoint"]
        assert all(Path(x["path"]).name.startswith("a2-") for x in ckpt)
    finally:
        if a.poll() is None:
            os.kill(a.pid, signal.SIGCONT)
        log_a = stop(a)
        stop(*([b] if b else []))
    assert "was taken from this worker" in log_a or "ended after losing the run" in log_a, log_a


# --- Ctrl-C, hung runs ----------------------------------------------------------------------------


def test_ctrl_c_on_a_foreground_worker_checkpoints_and_interrupts(env, home, tmp_path):
    """Catches: Ctrl-C reaching the run's process as KeyboardInterrupt and the run marked failed."""
    (rid,) = submit(
        env, write_spec(tmp_path, "kind: sleep\nseconds: 60\nsteps: 600\ncheckpoint_every: 1000\n")
    )
    worker = start_worker(env, new_session=True)  # its own process group: the terminal's Ctrl-C, not pytest's
    store = Store(home=home)
    try:
        wait_for(lambda: get_run(store, rid).progress[0] >= 10, 60, "progress")
        os.killpg(worker.pid, signal.SIGINT)  # what a terminal does: the whole foreground group gets it
        assert worker.wait(timeout=60) == 0
        rec = show(store, rid).as_json()
        assert rec["status"] == "interrupted", diagnose(store, rid)
        assert any(x["kind"] == "checkpoint" for x in rec["artifacts"]), "it stopped without saving first"
    finally:
        stop(worker)


def test_a_hung_run_is_killed_with_a_reason(env, home, tmp_path):
    """Catches: a run whose process is alive but makes no progress holding its slot forever."""
    (rid,) = submit(
        env,
        write_spec(
            tmp_path, "kind: sleep\nseconds: 1\nsteps: 10\nhang_at_step: 3\nno_progress_minutes: 0.05\n"
        ),
    )
    worker = start_worker(env, "--once")
    try:
        assert worker.wait(timeout=120) == 0
        rec = show(Store(home=home), rid).as_json()
        assert rec["status"] == "failed" and rec["error"].startswith("no progress for 0.05 min"), rec["error"]
    finally:
        stop(worker)


def test_the_stop_grace_grows_with_the_step_time(store):
    """Catches: a fixed grace that kills a run whose steps are slow before it can checkpoint."""
    import multiprocessing

    from workbench.jobs.backends import Execution
    from workbench.jobs.runner import Worker

    worker = Worker(store, ["cpu"], stop_grace=10.0)
    slot = worker.slots[0]
    parent, child = multiprocessing.Pipe()
    slot.ex = Execution(1, 1, job=(None, parent))
    for step, sent in [(10, 100.0), (20, 150.0), (30, 200.0), (30, 201.0)]:  # 5 s a step
        child.send(("alive", step, sent))
    worker.backend.receive(slot.ex)
    assert slot.ex.step_seconds == pytest.approx(5.0)
    assert worker._grace(slot) == pytest.approx(20.0)


# --- devices --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_workers_on_one_host_never_share_the_cpu(env, home, tmp_path):
    """Catches: a manual worker beside the auto-started one, each putting a run on the same CPU slot."""
    ids = submit(
        env, write_spec(tmp_path, "kind: sleep\nseconds: 1.5\nsteps: 3\nsweep:\n  seed: [1, 2, 3, 4]\n")
    )
    workers = [start_worker(env, "--idle-exit", "2") for _ in range(2)]
    try:
        for w in workers:
            assert w.wait(timeout=120) == 0
        store = Store(home=home)
        with store.read() as s:
            spans = sorted(
                (r.started_at, r.finished_at) for r in s.scalars(select(Run).where(Run.id.in_(ids)))
            )
        assert all(r.status == "succeeded" for r in map(lambda i: get_run(store, i), ids))
        overlaps = [(a, b) for a, b in zip(spans, spans[1:], strict=False) if b[0] < a[1]]
        assert not overlaps, f"two runs held the CPU at once: {overlaps}"
    finally:
        stop(*workers)


def test_a_cuda_run_waits_for_a_gpu_and_threads_can_be_set(env, home, tmp_path):
    """Catches: a `device: cuda` run claimed (and failed) by a CPU-only worker; --threads and the spec's
    threads ignored."""
    (gpu_run,) = submit(env, write_spec(tmp_path, "kind: sleep\ndevice: cuda\n", "gpu.yaml"))
    cpu_run, spec_run = submit(
        env, write_spec(tmp_path, "kind: sleep\nsweep:\n  threads: [null, 2]\n", "cpu.yaml")
    )
    worker = start_worker(env, "--once", "--threads", "1")
    try:
        assert worker.wait(timeout=120) == 0
        store = Store(home=home)
        assert get_run(store, gpu_run).status == "queued"
        listed = json.loads(
            subprocess.run(wb_command("runs", "--json"), env=env, capture_output=True, text=True).stdout
        )
        assert {r["id"]: r["label"] for r in listed}[gpu_run] == "queued (needs a GPU)"
        assert "1 CPU thread(s)" in events(store, cpu_run)[2]
        assert "2 CPU thread(s)" in events(store, spec_run)[2]
    finally:
        stop(worker)


# --- store faults ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_locked_database_loses_no_metric_and_no_run(env, home, tmp_path):
    """Catches: one 'database is locked' ending the worker loop (and its runs), or metrics dropped
    when a flush meets the lock. Another process holds the write lock for 4 s, longer than the 1 s
    busy timeout the worker is given."""
    env = dict(env, WORKBENCH_BUSY_TIMEOUT_MS="1000")
    (rid,) = submit(env, write_spec(tmp_path, "kind: sleep\nseconds: 8\nsteps: 80\ncheckpoint_every: 1000\n"))
    worker = start_worker(env, "--once")
    store = Store(home=home)
    try:
        wait_for(lambda: get_run(store, rid).progress[0] >= 10, 60, "progress")
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                textwrap.dedent(f"""
            import sqlite3, time
            c = sqlite3.connect({str(home / "workbench.db")!r}, isolation_level=None)
            c.execute("BEGIN IMMEDIATE"); time.sleep(4); c.execute("COMMIT")
        """),
            ]
        )
        assert holder.wait(timeout=30) == 0
        assert worker.wait(timeout=120) == 0, stop(worker)
        log = worker.stdout.read()
        assert "store fault" in log and "locked" in log, log
        rec = show(store, rid).as_json()
        assert rec["status"] == "succeeded", diagnose(store, rid)
        with store.read() as s:
            steps = set(s.scalars(select(MetricPoint.step).where(MetricPoint.run_id == rid)))
        assert steps == set(range(1, 81)), f"steps lost: {sorted(set(range(1, 81)) - steps)}"
    finally:
        stop(worker)


def hold_write_lock(db: Path, seconds: float) -> subprocess.Popen:
    """Another process holding SQLite's write lock, as a VACUUM, a large flush or a schema upgrade does."""
    code = (
        f"import sqlite3, time; c = sqlite3.connect({str(db)!r}, isolation_level=None); "
        f"c.execute('BEGIN IMMEDIATE'); print('held', flush=True); time.sleep({seconds}); c.execute('COMMIT')"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


@pytest.mark.parametrize(
    "heartbeat, lock_wait_ms, held, run_s",
    [
        pytest.param(15, 30_000, 25, 30, marks=pytest.mark.slow, id="the review's 25 s, default timings"),
        pytest.param(3, 6_000, 6, 12, id="scaled: 6 s against a 3 s heartbeat"),
    ],
)
def test_a_lock_held_past_the_heartbeat_costs_no_healthy_run_its_lease(
    env, home, tmp_path, heartbeat, lock_wait_ms, held, run_s
):
    """The review's case: two workers, a run each, and the database's write lock held longer than the
    heartbeat timeout but shorter than the lapse (heartbeat + lock wait). Both runs go on and succeed as
    attempt 1: neither worker reaps the other's run, nor its own (was: both interrupted and killed,
    nothing logged). At the default timings (slow) and scaled down five-fold (make test)."""
    env = dict(env, WORKBENCH_HEARTBEAT_TIMEOUT=str(heartbeat), WORKBENCH_BUSY_TIMEOUT_MS=str(lock_wait_ms))
    spec = f"kind: sleep\nseconds: {run_s}\nsteps: {run_s}\nsweep:\n  seed: [1, 2]\n"
    ids = submit(env, write_spec(tmp_path, spec))
    workers = [
        start_worker(dict(env, WORKBENCH_LOCK_DIR=str(tmp_path / f"host{i}")), "--once") for i in range(2)
    ]
    store = Store(home=home)
    try:
        wait_for(lambda: all(get_run(store, r).progress[0] >= 2 for r in ids), 120, "both runs running")
        assert len({get_run(store, r).worker for r in ids}) == 2
        assert hold_write_lock(home / "workbench.db", held).wait(timeout=60) == 0
        for w in workers:
            assert w.wait(timeout=180) == 0, stop(w)
        logs = "".join(w.stdout.read() for w in workers)
        for r in ids:
            rec = show(store, r).as_json()
            assert (rec["status"], rec["attempt"]) == ("succeeded", 1), diagnose(store, r)
            assert not [e for e in events(store, r) if "interrupted" in e or "heartbeat" in e]
        assert "lease lapsed" not in logs and "taken from this worker" not in logs, logs
        assert "store fault while renewing leases" in logs, logs  # the stall was logged
    finally:
        stop(*workers)
        store.dispose()


@pytest.mark.parametrize(
    "start_s, heartbeat, run_s",
    [
        pytest.param(20, 15, 25, marks=pytest.mark.slow, id="the review's 20 s start"),
        pytest.param(6, 3, 9, id="scaled: a 6 s start against a 3 s heartbeat"),
    ],
)
def test_a_slow_backend_start_does_not_stop_lease_renewal(home, monkeypatch, start_s, heartbeat, run_s):
    """A backend whose start takes longer than the lease lapse (a slow sbatch) while another run is live,
    and another worker's reaper running all along: no run is reaped (was: start() ran under the lock the
    lease thread needs, so every run of the worker lost its lease). Lapse: heartbeat + 1 s lock wait."""
    import threading

    from workbench.jobs.backends.local import LocalBackend
    from workbench.jobs.runner import Worker
    from workbench.store import queue

    monkeypatch.setenv("WORKBENCH_HEARTBEAT_TIMEOUT", str(heartbeat))
    monkeypatch.setenv("WORKBENCH_BUSY_TIMEOUT_MS", "1000")  # lapse: heartbeat + 1 s, shorter than the start
    monkeypatch.setenv("WORKBENCH_LOCK_DIR", str(home.parent / "locks"))
    store = Store()
    specs = [
        queue.NewRun(f"r{i}", {"kind": "sleep", "seconds": s, "steps": 10}) for i, s in ((1, run_s), (2, 1))
    ]
    _, ids = queue.submit(store, name="slow", kind="sleep", spec_text="", sweep={}, runs=specs)

    class SlowStart(LocalBackend):
        def start(self, run, slot, threads):
            if run.id == ids[1]:
                time.sleep(start_s)
            return super().start(run, slot, threads)

    worker = Worker(
        store, ["cpu", "cpu"], backend=SlowStart(store, ["cpu", "cpu"]), once=True, log=lambda m: None
    )
    done = []
    thread = threading.Thread(target=lambda: done.append(worker.run()), daemon=True)
    thread.start()
    reaped = []
    try:
        while thread.is_alive():  # what another worker's loop does
            reaped += queue.reap_stale(store)
            time.sleep(0.5)
        assert done == [0] and reaped == []
        assert [(get_run(store, r).status, get_run(store, r).attempt) for r in ids] == [("succeeded", 1)] * 2
    finally:
        worker.request_stop()
        thread.join(timeout=60)
        store.dispose()


def test_the_worker_never_logs_an_outcome_the_store_did_not_take(store):
    """Catches: "run 1 succeeded" in the worker's log for a run that was reaped and retried meanwhile
    (queue.finish refused it: the worker no longer held it)."""
    from workbench.jobs.backends import Outcome
    from workbench.jobs.runner import Slot, Worker
    from workbench.store import queue
    from workbench.store.models import RunStatus

    _, (rid,) = queue.submit(
        store, name="t", kind="sleep", spec_text="", sweep={}, runs=[queue.NewRun("r", {"kind": "sleep"})]
    )
    lines: list[str] = []
    worker = Worker(store, ["cpu"], log=lines.append)
    worker.id = queue.register_worker(store, ["cpu"])
    queue.claim(store, worker.id, "cpu")
    queue.reap_stale(store, timeout=-5)  # its lease taken while it was slow ...
    queue.retry(store, rid)
    queue.claim(store, "other", "cpu")  # ... and the run is another worker's attempt 2
    slot = Slot("cpu", None, run_id=rid, attempt=1, outcome=Outcome(RunStatus.SUCCEEDED))
    worker._poll(slot)
    assert not [m for m in lines if "succeeded" in m and "nothing recorded" not in m], lines
    assert any(f"run {rid}: ended succeeded, but attempt 1 no longer holds it" in m for m in lines), lines
    assert get_run(store, rid).status == "running" and slot.run_id is None


@pytest.fixture
def small_fs(tmp_path):
    """A 6 MiB tmpfs (root only): the store on it can be filled, or remounted read-only."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], capture_output=True
        ).returncode
    ):
        pytest.skip("needs root to mount a small tmpfs")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.slow
def test_a_full_disk_interrupts_the_run_resumably(small_fs, tmp_path):
    """Catches: a full disk failing the run (or killing the worker), and half-written files left
    behind. The run is interrupted, the worker lives on, and once there is room again a retry resumes
    from the last checkpoint and succeeds."""
    home = small_fs / "wb"
    env = subprocess_env(home, WORKBENCH_LOCK_DIR=str(tmp_path / "locks"), WORKBENCH_BUSY_TIMEOUT_MS="1000")
    (rid,) = submit(env, write_spec(tmp_path, "kind: sleep\nseconds: 40\nsteps: 400\ncheckpoint_every: 20\n"))
    worker = start_worker(env)
    store = Store(home=home)
    try:
        wait_for(lambda: get_run(store, rid).progress[0] >= 45, 60, "progress past two checkpoints")
        with open(small_fs / "filler", "wb") as f:  # fill every free byte
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        time.sleep(8)  # the run meets the fault at its next checkpoint; the worker cannot record it yet
        assert worker.poll() is None, "the worker died of a store fault:\n" + stop(worker)
        (small_fs / "filler").unlink()
        wait_for(
            lambda: get_run(store, rid).status == "interrupted", 60, "the run to be recorded as interrupted"
        )
        rec = show(store, rid).as_json()
        assert rec["error"].startswith("store fault"), rec["error"]
        assert not list(home.rglob("*.tmp*")), "half-written files were left behind"
        assert store.integrity_check() == "ok"
        assert subprocess.run(wb_command("retry", rid, "--no-worker"), env=env).returncode == 0
        wait_for(lambda: get_run(store, rid).status == "succeeded", 120, "the retried run to succeed")
        assert show(store, rid).as_json()["summary"]["resumed_from"] >= 40
        assert worker.poll() is None
    finally:
        log = stop(worker)
        store.dispose()
    assert "store fault" in log, log


def test_a_read_only_store_is_refused_cleanly_and_nothing_changes(small_fs, tmp_path):
    """Catches: a traceback (or a half-started worker) on a store that cannot be written. Linux refuses to
    remount a file system read-only while files on it are open for writing, so a store that turns
    read-only under a running worker cannot be staged here; this is the state such a store is found in."""
    home = small_fs / "wb"
    env = subprocess_env(home, WORKBENCH_LOCK_DIR=str(tmp_path / "locks"))
    (rid,) = submit(env, write_spec(tmp_path, "kind: sleep\nseconds: 1\nsteps: 5\n"))
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    try:
        for args in (["worker", "--devices", "cpu", "--once"], ["retry", str(rid)], ["runs"]):
            out = subprocess.run(wb_command(*args), env=env, capture_output=True, text=True, timeout=60)
            assert out.returncode == 2 and "read-only file system" in out.stderr, (args, out.stderr)
            assert "Traceback" not in out.stderr
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)
    assert get_run(Store(home=home), rid).status == "queued"


@pytest.fixture
def ext4_image(tmp_path):
    """A 32 MiB ext4 file system on a loop device with errors=remount-ro (root only): the kernel can be
    made to turn it read-only under open files, as it does on a disk error."""
    image, mnt = tmp_path / "disk.img", tmp_path / "disk"
    mnt.mkdir()
    made = (
        os.geteuid() == 0
        and subprocess.run(["truncate", "-s", "32M", str(image)]).returncode == 0
        and subprocess.run(["mkfs.ext4", "-q", str(image)], capture_output=True).returncode == 0
        and subprocess.run(
            ["mount", "-o", "loop,errors=remount-ro", str(image), str(mnt)], capture_output=True
        ).returncode
        == 0
    )
    if not made:
        pytest.skip("needs root, mkfs.ext4 and a loop device")
    yield image, mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _device_of(mnt: Path) -> str:
    line = next(x for x in Path("/proc/mounts").read_text().splitlines() if x.split()[1] == str(mnt))
    return Path(line.split()[0]).name


@pytest.mark.slow
def test_a_store_that_turns_read_only_under_a_running_worker(ext4_image, tmp_path):
    """Catches: a worker that dies, or hangs on Ctrl-C, when its store's disk turns read-only mid-run
    (ext4's emergency remount after a disk error), and a run lost or failed because of it. The worker
    must log the fault, stop cleanly on Ctrl-C, and leave the run resumable: once the disk is repaired
    the next worker marks it interrupted and a retry resumes it from its last checkpoint."""
    image, mnt = ext4_image
    home = mnt / "wb"
    env = subprocess_env(home, WORKBENCH_HEARTBEAT_TIMEOUT="3", WORKBENCH_BUSY_TIMEOUT_MS="1000")
    (rid,) = submit(env, write_spec(tmp_path, "kind: sleep\nseconds: 30\nsteps: 300\ncheckpoint_every: 20\n"))
    worker = start_worker(env, new_session=True)
    store = Store(home=home)
    try:
        wait_for(lambda: get_run(store, rid).progress[0] >= 45, 60, "progress past two checkpoints")
        store.dispose()
        Path(f"/sys/fs/ext4/{_device_of(mnt)}/trigger_fs_error").write_text("1")
        time.sleep(6)  # the run meets the read-only disk at its next checkpoint
        assert worker.poll() is None, "the worker died of a read-only store:\n" + stop(worker)
        os.killpg(worker.pid, signal.SIGINT)
        assert worker.wait(timeout=60) == 0, "the worker did not stop on Ctrl-C"
    finally:
        log = stop(worker)
    assert "store fault" in log, log
    subprocess.run(["umount", str(mnt)], check=True)
    subprocess.run(["e2fsck", "-fy", str(image)], capture_output=True)  # repair, as an admin would
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    store = Store(home=home)
    assert store.integrity_check() == "ok"
    worker = start_worker(env)
    try:
        try:
            wait_for(
                lambda: get_run(store, rid).status == "interrupted", 30, "the next worker to mark the run"
            )
            assert subprocess.run(wb_command("retry", rid, "--no-worker"), env=env).returncode == 0
            wait_for(lambda: get_run(store, rid).status == "succeeded", 120, "the retried run to succeed")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{diagnose(store, rid, worker)}\nfirst worker:\n{log}") from None
        assert show(store, rid).as_json()["summary"]["resumed_from"] >= 40
        # A write cut off by the read-only disk could not remove its temporary file then; the next attempt did.
        assert not list(home.rglob("*.tmp*")), "half-written files were left behind"
    finally:
        stop(worker)
        store.dispose()

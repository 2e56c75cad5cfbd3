"""Execution backends with the real engines: a Ray head on loopback started for this module, and
Slurm jobs through submitit's local executor (the same submitit code path as `sbatch`, minus Slurm).

Each test names what it catches. The store is SQLite here unless a test takes `db_url` (then it runs on
PostgreSQL too: the deployment a cluster actually uses).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.conftest import ROOT, subprocess_env, wb_command, write_spec
from tests.test_runner import diagnose, submit, wait_for
from workbench.store.db import Store
from workbench.store.models import RunEvent
from workbench.store.queries import get_run, metric_series, show

LONG_SLEEP = "kind: sleep\nseconds: 30\nsteps: 300\ncheckpoint_every: 10\n"


@pytest.fixture(scope="module")
def ray_head():
    """`ray start --head` on 127.0.0.1 with 2 CPUs and no GPU, its own temp folder; stopped after."""
    ray = Path(sys.executable).with_name("ray")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="wbray-")
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(ROOT))
    started = subprocess.run(
        [ray, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
         "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
        env=env, capture_output=True, text=True, timeout=180, cwd=ROOT,
    )  # fmt: skip
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)


def start(env, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        wb_command("worker", *args), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def messages(store: Store, run_id: int) -> list[str]:
    with store.read() as s:
        return list(
            s.scalars(select(RunEvent.message).where(RunEvent.run_id == run_id).order_by(RunEvent.id))
        )


def stop(worker: subprocess.Popen) -> str:
    if worker.poll() is None:
        worker.send_signal(signal.SIGINT)
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
    return worker.stdout.read()


def test_a_smoke_run_on_ray_streams_to_the_store_and_the_worker_is_listed(db_url, home, tmp_path, ray_head):
    """Catches: a task that cannot import the kinds or reach the store; metrics that only arrive at the
    end (a TUI on the submitting host must see a remote run's curves while it runs); a worker that
    `workbench workers` does not show with its backend and runs."""
    env = subprocess_env(home, db_url)
    (rid,) = submit(env, write_spec(tmp_path, "kind: sleep\nseconds: 8\nsteps: 40\n"))
    worker = start(env, "--backend", "ray", "--address", ray_head, "--slots", "1")
    try:
        store = Store(home=home)
        wait_for(lambda: metric_series(store, rid, "loss"), 120, "loss points from the Ray task")
        assert get_run(store, rid).status == "running", diagnose(store, rid, worker)
        listed = json.loads(subprocess.run(wb_command("workers", "--json"), env=env, capture_output=True,
                                           text=True, check=True).stdout)  # fmt: skip
        assert [(w["backend"], w["address"], w["devices"], w["running"]) for w in listed] == [
            ("ray", ray_head, ["ray:cpu"], [rid])
        ]
        wait_for(lambda: get_run(store, rid).status != "running", 120, "the run to end")
        rec = show(store, rid).as_json()
        assert rec["status"] == "succeeded", diagnose(store, rid, worker)
        assert len(metric_series(store, rid, "loss")) == 40
        assert any(m.startswith("ray on ") for m in messages(store, rid))
        assert rec["device"] == "ray:cpu"
    finally:
        stop(worker)


@pytest.mark.slow
def test_a_real_kind_runs_through_ray(home, ray_head):
    """Catches: a kind that works in a forked child but not in a fresh Ray worker process (its imports,
    its device, its artifact files on the shared home)."""
    env = subprocess_env(home)
    (rid,) = submit(env, ROOT / "examples" / "images-smoke.yaml")
    done = subprocess.run(
        wb_command("worker", "--backend", "ray", "--address", ray_head, "--once"),
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    store = Store(home=home)
    assert get_run(store, rid).status == "succeeded", done.stdout + diagnose(store, rid)
    rec = show(store, rid).as_json()
    assert rec["summary"] and any(a["kind"] == "image" for a in rec["artifacts"])
    assert all((home / a["path"]).exists() for a in rec["artifacts"])


def test_cancel_and_a_killed_ray_task_then_retry_resumes(home, tmp_path, ray_head):
    """Catches: a cancel that never reaches a task on another host; a killed task recorded as failed (or
    left running) instead of interrupted; a retry that starts over instead of resuming its checkpoint."""
    env = subprocess_env(home)
    spec = "kind: sleep\nseconds: 15\nsteps: 150\ncheckpoint_every: 10\nsweep:\n  seed: [1, 2]\n"
    cancelled, killed = submit(env, write_spec(tmp_path, spec))
    worker = start(env, "--backend", "ray", "--address", ray_head, "--slots", "2")
    store = Store(home=home)
    try:
        wait_for(lambda: get_run(store, cancelled).progress[0] >= 5, 120, "the first run to make progress")
        subprocess.run(wb_command("cancel", cancelled), env=env, check=True, capture_output=True)
        wait_for(lambda: get_run(store, cancelled).status == "cancelled", 60, "the cancel to land")

        wait_for(lambda: get_run(store, killed).progress[0] >= 25, 120, "progress past the checkpoint at 20")
        pid = show(store, killed).as_json()["pid"]
        os.kill(pid, signal.SIGKILL)  # the task's own process (it records its pid)
        wait_for(lambda: get_run(store, killed).status == "interrupted", 60, "the kill to be seen")
        rec = show(store, killed).as_json()
        assert rec["error"].startswith("the Ray task ended"), rec["error"]

        subprocess.run(wb_command("retry", killed, "--no-worker"), env=env, check=True, capture_output=True)
        wait_for(lambda: get_run(store, killed).status == "succeeded", 180, "the retried run")
        rec = show(store, killed).as_json()
        assert rec["attempt"] == 2 and rec["summary"]["resumed_from"] >= 20, diagnose(store, killed, worker)
    finally:
        stop(worker)


def test_stopping_a_ray_worker_checkpoints_its_runs_as_interrupted(home, tmp_path, ray_head):
    """Catches: a worker shutdown that leaves its remote runs executing unowned, or records them failed."""
    env = subprocess_env(home)
    (rid,) = submit(env, write_spec(tmp_path, LONG_SLEEP))
    worker = start(env, "--backend", "ray", "--address", ray_head)
    store = Store(home=home)
    wait_for(lambda: get_run(store, rid).progress[0] >= 3, 120, "progress")
    log = stop(worker)
    assert worker.returncode == 0, log
    rec = show(store, rid).as_json()
    assert rec["status"] == "interrupted" and rec["error"] == "the worker was stopped", log + diagnose(
        store, rid
    )


@pytest.mark.slow  # cluster behaviour, with the other slow cluster tests (make test-all)
def test_a_run_the_cluster_never_starts_ends_interrupted_after_the_pending_limit(home, tmp_path, ray_head):
    """Catches: a task Ray cannot place (here: the head's 2 CPUs are held by the first run) keeping its
    slot and its lease for ever. With --pending-limit 0.1 (6 s) the second run ends `interrupted`, with
    the reason, and a retry runs it once the cluster has room."""
    env = subprocess_env(home)
    spec = "kind: sleep\nseconds: 20\nsteps: 20\nthreads: 2\nsweep:\n  seed: [1, 2]\n"
    first, second = submit(env, write_spec(tmp_path, spec))
    worker = start(env, "--backend", "ray", "--address", ray_head, "--slots", "2", "--pending-limit", "0.1")
    store = Store(home=home)
    try:
        wait_for(lambda: get_run(store, second).status == "interrupted", 120, "the pending run to give up")
        rec = show(store, second).as_json()
        assert rec["error"].startswith("the ray cluster did not start it within 0.1 min"), rec["error"]
        assert get_run(store, first).status == "running"  # the one the cluster placed goes on
        subprocess.run(wb_command("retry", second, "--no-worker"), env=env, check=True, capture_output=True)
        wait_for(lambda: get_run(store, first).status == "succeeded", 120, "the first run")
    finally:
        log = stop(worker)
    assert "did not start it within 0.1 min" in log, log


def test_a_preempted_slurm_job_is_requeued_and_resumes_the_same_attempt(home, tmp_path):
    """Through submitit (its local executor): USR2, as Slurm sends before a preemption or the time limit,
    makes submitit requeue the job. Catches: a requeued job that starts over, or that the worker takes
    for finished (recording the run before it has run)."""
    env = subprocess_env(home)
    (rid,) = submit(env, write_spec(tmp_path, "kind: sleep\nseconds: 12\nsteps: 120\ncheckpoint_every: 10\n"))
    worker = start(
        env, "--backend", "slurm", "--slurm-cluster", "local", "--gpus-per-run", "0", "--slots", "1"
    )
    store = Store(home=home)
    try:
        wait_for(lambda: get_run(store, rid).progress[0] >= 25, 120, "progress past a checkpoint")
        first_pid = show(store, rid).as_json()["pid"]
        os.kill(first_pid, signal.SIGUSR2)
        wait_for(lambda: get_run(store, rid).status != "running", 180, "the run to end")
        rec = show(store, rid).as_json()
        assert rec["status"] == "succeeded" and rec["attempt"] == 1, diagnose(store, rid, worker)
        assert rec["pid"] != first_pid  # the requeued job's process
        assert rec["summary"]["resumed_from"] >= 20
        starts = [m for m in messages(store, rid) if m.startswith("slurm on ")]
        assert len(starts) == 2, messages(store, rid)
        assert rec["job_id"] and (home / "slurm" / rec["job_id"]).is_dir()
        log = subprocess.run(wb_command("logs", rid), env=env, capture_output=True, text=True)
        assert log.returncode == 0 and "Requeued job" in log.stdout, log.stdout + log.stderr
    finally:
        stop(worker)


@pytest.mark.slow  # cluster behaviour, with the other slow cluster tests (make test-all)
def test_a_hung_remote_run_ends_itself_failed_with_the_reason(home, tmp_path):
    """Through submitit's local executor. Catches: a run on Slurm or Ray that stops reporting (a deadlock)
    holding its slot and lease for ever: no worker sees a remote process's liveness, so the run's own
    process must end it, failed, with the local watchdog's reason."""
    env = subprocess_env(home)
    spec = "kind: sleep\nseconds: 60\nsteps: 60\nhang_at_step: 3\nno_progress_minutes: 0.1\n"
    (rid,) = submit(env, write_spec(tmp_path, spec))
    worker = start(env, "--backend", "slurm", "--slurm-cluster", "local", "--gpus-per-run", "0", "--once")
    store = Store(home=home)
    try:
        wait_for(
            lambda: get_run(store, rid).status != "running" and get_run(store, rid).status != "queued",
            120,
            "the hung run to end",
        )
        rec = show(store, rid).as_json()
        assert rec["status"] == "failed", diagnose(store, rid, worker)
        assert rec["error"].startswith("no progress for 0.1 min (no step or report from the run)"), rec[
            "error"
        ]
        assert worker.wait(timeout=60) == 0  # --once: the slot came free, the queue is empty
    finally:
        stop(worker)


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A single-node Slurm (Debian's slurm-wlm: slurmctld + slurmd as root, auth/none, its own ports and
    state folder); yields the environment its commands need (SLURM_CONF)."""
    import shutil

    if shutil.which("slurmctld") is None or shutil.which("sbatch") is None or os.geteuid() != 0:
        pytest.skip("a local Slurm needs Debian's slurm-wlm and root (apt-get install slurm-wlm)")
    root = tmp_path_factory.mktemp("slurm")
    ports = []
    for _ in range(2):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    host = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(
        f"ClusterName=wbtest\nSlurmctldHost={host}\nSlurmctldPort={ports[0]}\nSlurmdPort={ports[1]}\n"
        "SlurmUser=root\nSlurmdUser=root\nAuthType=auth/none\nCredType=cred/none\n"
        f"StateSaveLocation={root}/state\nSlurmdSpoolDir={root}/spool\n"
        f"SlurmctldPidFile={root}/ctld.pid\nSlurmdPidFile={root}/d.pid\n"
        f"SlurmctldLogFile={root}/ctld.log\nSlurmdLogFile={root}/d.log\n"
        "ProctrackType=proctrack/pgid\nTaskPlugin=task/none\nSelectType=select/cons_tres\n"
        "SelectTypeParameters=CR_Core\nJobAcctGatherType=jobacct_gather/none\n"
        "AccountingStorageType=accounting_storage/none\nMpiDefault=none\nReturnToService=2\n"
        f"NodeName={host} CPUs={os.cpu_count()} RealMemory=2000 State=UNKNOWN\n"
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n"
    )
    (root / "state").mkdir()
    (root / "spool").mkdir()
    env = dict(os.environ, SLURM_CONF=str(conf))
    daemons = [
        subprocess.Popen([d, "-D", "-f", conf], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        for d in ("slurmctld", "slurmd")
    ]
    try:
        up = lambda: " idle " in subprocess.run(["sinfo"], env=env, capture_output=True, text=True).stdout  # noqa: E731
        wait_for(up, 60, "the Slurm node to come up")
        yield env
    finally:
        subprocess.run(["scancel", "--partition", "debug"], env=env, capture_output=True)
        for d in daemons:
            d.terminate()
        for d in daemons:
            try:
                d.wait(timeout=30)
            except subprocess.TimeoutExpired:
                d.kill()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_run_through_real_sbatch_survives_a_preemption(home, tmp_path, slurm_cluster):
    """Real `sbatch` on a single-node Slurm: a run's job gets USR2 (`scancel --signal=USR2`, as before a
    preemption or the time limit), submitit runs `scontrol requeue`, Slurm starts the job again after its
    requeue delay (2 min), and the same attempt resumes from its checkpoint. Catches what the local
    executor cannot: the sbatch script and parameters submitit writes, Slurm's job states while requeued
    (the worker must keep the lease while the job is PENDING), and the job's environment."""
    env = dict(subprocess_env(home), SLURM_CONF=slurm_cluster["SLURM_CONF"])
    (rid,) = submit(env, write_spec(tmp_path, "kind: sleep\nseconds: 12\nsteps: 120\nthreads: 1\n"))
    worker = start(env, "--backend", "slurm", "--partition", "debug", "--gpus-per-run", "0", "--slots", "1")
    store = Store(home=home)
    try:
        wait_for(lambda: get_run(store, rid).progress[0] >= 25, 120, "the job to run past a checkpoint")
        job = show(store, rid).as_json()["job_id"]
        subprocess.run(["scancel", "--signal=USR2", job], env=env, check=True)
        wait_for(lambda: get_run(store, rid).status != "running", 600, "the requeued job to finish")
        rec = show(store, rid).as_json()
        assert rec["status"] == "succeeded" and rec["attempt"] == 1, diagnose(store, rid, worker)
        assert rec["summary"]["resumed_from"] >= 20 and rec["job_id"] == job
        assert len([m for m in messages(store, rid) if m.startswith("slurm on ")]) == 2
    finally:
        stop(worker)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--backend", "kubernetes"], "is not one of local, ray, slurm"),
        (["--backend", "ray"], "needs --address"),
        (["--address", "1.2.3.4:6379"], "--address is for --backend ray"),
        (
            ["--backend", "ray", "--partition", "gpu", "--address", "x:1"],
            "--partition is for --backend slurm",
        ),
        (["--backend", "slurm", "--devices", "0,1"], "--devices is for --backend local"),
    ],
)
def test_bad_worker_options_exit_2(cli, args, message):
    code, _, stderr = cli("worker", *args)
    assert code == 2 and message in stderr


def test_a_backend_brings_its_own_worker_flags(tmp_path):
    """A backend declared in jobs.backends.BACKENDS gets its flags on `workbench worker` without an edit
    to the CLI: required ones are asked for, and none is taken by another backend."""
    code = (
        "import workbench.jobs.backends as b\n"
        "b.BACKENDS['k8s'] = b.BackendInfo('no.such.module', 'K8s', (b.Option('namespace', str, 'the pods', required=True),))\n"
        "from typer.testing import CliRunner\n"
        "from workbench.cli import app\n"
        "for args in (['worker', '--help'], ['worker', '--backend', 'k8s'], ['worker', '--namespace', 'x']):\n"
        "    r = CliRunner().invoke(app, args)\n"
        "    print(r.exit_code, ' '.join((r.stdout + r.stderr).split()))\n"
    )
    env = {**os.environ, "WORKBENCH_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    help_, needs, foreign = out.stdout.splitlines()
    assert help_.startswith("0 ") and "--namespace" in help_ and "k8s: the pods" in help_
    assert needs.startswith("2 ") and "--backend k8s needs --namespace (the pods)" in needs
    assert foreign.startswith("2 ") and "--namespace is for --backend k8s" in foreign

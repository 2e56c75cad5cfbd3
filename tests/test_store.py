from __future__ import annotations

import os
import threading
import time

import pytest
from sqlalchemy import func, inspect, select, update

from workbench.store import queries, queue
from workbench.store.artifacts import UnsafeArtifactName, artifact_path
from workbench.store.db import Store, StoreError
from workbench.store.models import Run
from workbench.store.schema import SCHEMA_VERSION


@pytest.fixture
def store(db_url, home):
    """This module's tests run on SQLite and on PostgreSQL (see conftest.db_url)."""
    s = Store()
    yield s
    s.dispose()


def _submit(store, n=1, priority=0, kind="sleep"):
    return queue.submit(
        store,
        name="t",
        kind=kind,
        spec_text="kind: sleep\n",
        sweep={},
        priority=priority,
        runs=[queue.NewRun(f"r{i}", {"kind": kind}) for i in range(n)],
    )[1]


def test_pragmas_and_schema_version(store):
    if store.dialect != "sqlite":
        assert store.integrity_check() == "ok" and "workers" in inspect(store.engine).get_table_names()
        return
    with store.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
        assert c.exec_driver_sql("PRAGMA user_version").scalar() == SCHEMA_VERSION
    assert store.integrity_check() == "ok"


def test_newer_schema_is_refused(store, home):
    with store.engine.begin() as c:
        c.exec_driver_sql(
            f"UPDATE store_meta SET value = '{SCHEMA_VERSION + 1}' WHERE key = 'schema_version'"
        )
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}, newer than this workbench"):
        Store(home=home)


def test_db_url_override(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'other.db'}"
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("WORKBENCH_DB_URL", url)
    s = Store()
    assert s.url == url and (tmp_path / "other.db").exists()


def test_claim_order_priority_then_age(store):
    low = _submit(store, 2)
    high = _submit(store, 1, priority=5)
    order = [queue.claim(store, "w", "cpu").id for _ in range(3)]
    assert order == [high[0], low[0], low[1]]
    assert queue.claim(store, "w", "cpu") is None


def test_concurrent_claims_never_share_a_run(db_url, home):
    """Catches: two claimers getting one run; and, on PostgreSQL, a claim that comes back empty while
    plenty of runs are queued because it waited on a row another claimer had just taken (what a claim
    without SKIP LOCKED does under concurrency: the worker then idles a poll interval for nothing)."""
    ids = set(_submit(Store(home=home), 200))
    claimed: list[int] = []
    empty_while_queued: list[int] = []  # queued runs left when a claim came back empty
    lock = threading.Lock()
    n_claimers = 6

    def claimer(n: int):
        s = Store(home=home)  # own engine, own connections, as separate workers have
        while True:
            run = queue.claim(s, f"w{n}", "cpu")
            if run is not None:
                with lock:
                    claimed.append(run.id)
                continue
            with s.read() as r:
                left = r.scalar(select(func.count()).select_from(Run).where(Run.status == "queued"))
            if not left:
                return
            with lock:
                empty_while_queued.append(left)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(n_claimers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(ids)
    # Near the end every queued row may be held by a claim in flight; before that, none may come back empty.
    assert all(left <= n_claimers for left in empty_while_queued), empty_while_queued


def test_a_claim_skips_a_run_another_claim_holds(pg_url, home, monkeypatch):
    """PostgreSQL: while another transaction holds the first queued run's row lock (as a claim in flight
    does), a claim takes the next run at once (SKIP LOCKED). With plain FOR UPDATE it waits for the lock,
    then finds that run still queued and takes it instead: both assertions go red."""
    monkeypatch.setenv("WORKBENCH_DB_URL", pg_url)
    store = Store(home=home)
    first, second = _submit(store, 2)
    got: dict = {}
    with store.engine.connect() as holder:
        tx = holder.begin()
        holder.execute(select(Run.id).where(Run.id == first).with_for_update())
        claimer = threading.Thread(target=lambda: got.update(run=queue.claim(Store(home=home), "w", "cpu")))
        start = time.monotonic()
        claimer.start()
        claimer.join(timeout=5)
        waited = time.monotonic() - start
        tx.rollback()
    claimer.join()
    assert waited < 5, f"the claim waited {waited:.1f} s on a locked row"
    assert got["run"].id == second


def test_cancel_retry_and_finish(store):
    a, b = _submit(store, 2)
    assert queue.request_cancel(store, a) == "cancelled"
    with pytest.raises(StoreError):
        queue.request_cancel(store, a)
    run = queue.claim(store, "w", "cpu")
    assert run.id == b
    assert queue.request_cancel(store, b) == "running"
    assert queue.renew_leases(store, "w", {b: run.attempt}) == queue.Renewal({b}, {b})
    assert queue.finish(store, b, "w", "cancelled")
    assert not queue.finish(store, b, "w", "succeeded")  # no longer held
    queue.retry(store, b)
    run = queue.claim(store, "w2", "cpu")
    assert run.id == b and run.attempt == 2 and not queries.get_run(store, b).cancel_requested
    assert queue.finish(store, b, "w2", "succeeded")
    with pytest.raises(StoreError, match="only failed"):
        queue.retry(store, b)
    with pytest.raises(queue.UnknownRun):
        queue.retry(store, 12345)


def test_reap_marks_silent_runs_interrupted(store):
    (a,) = _submit(store)
    queue.claim(store, "w", "cpu")
    assert queue.reap_stale(store, timeout=60) == []
    with store.write() as s:
        s.execute(update(Run).where(Run.id == a).values(heartbeat_at=time.time() - 120))
    assert queue.reap_stale(store, timeout=60) == [a]
    with store.read() as s:
        assert s.get(Run, a).status == "interrupted"


def test_a_lease_taken_from_a_slow_worker_stays_taken(store):
    """Reaped while its worker was slow, then retried and claimed again: the old holder keeps nothing."""
    (a,) = _submit(store)
    first = queue.claim(store, "w1", "cpu")
    with store.write() as s:
        s.execute(update(Run).where(Run.id == a).values(heartbeat_at=store.now() - 120))
    assert queue.reap_stale(store, timeout=60) == [a]
    queue.retry(store, a)
    second = queue.claim(store, "w2", "cpu")
    assert second.attempt == first.attempt + 1
    renewal = queue.renew_leases(store, "w1", {a: first.attempt})
    assert renewal.kept == set(), "the slow worker was told it still holds the run"
    assert not queue.finish(store, a, "w1", "failed", attempt=first.attempt)
    assert queue.renew_leases(store, "w2", {a: second.attempt}).kept == {a}
    # The same worker id with an old attempt (a worker that retried its own run) holds nothing either.
    assert queue.renew_leases(store, "w2", {a: first.attempt}).kept == set()
    assert queue.finish(store, a, "w2", "succeeded", attempt=second.attempt)


def test_lease_ages_use_the_database_clock(store, monkeypatch):
    """A host whose clock runs an hour ahead must not reap a run whose lease was just renewed."""
    (a,) = _submit(store)
    queue.claim(store, "w", "cpu")
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)
    assert queue.reap_stale(store, timeout=60) == []
    wid = queue.register_worker(store, ["cpu"])
    assert wid in [w.id for w in queue.live_workers(store)]
    with store.read() as s:
        assert not queue.is_stale(s.get(Run, a), store.now())


def test_a_stale_run_can_be_retried_and_a_live_one_cannot(store):
    (a,) = _submit(store)
    queue.claim(store, "w", "cpu")
    with pytest.raises(StoreError, match="is running"):
        queue.retry(store, a)
    with store.write() as s:
        s.execute(update(Run).where(Run.id == a).values(heartbeat_at=store.now() - 3600))
    queue.retry(store, a)
    with store.read() as s:
        assert s.get(Run, a).status == "queued"


def test_a_cuda_run_is_never_claimed_by_a_cpu_slot(store):
    gpu_run, cpu_run = queue.submit(
        store,
        name="t",
        kind="sleep",
        spec_text="",
        sweep={},
        runs=[queue.NewRun("g", {"kind": "sleep", "device": "cuda"}), queue.NewRun("c", {"kind": "sleep"})],
    )[1]
    assert queue.claim(store, "w", "cpu").id == cpu_run
    assert queue.claim(store, "w", "cpu") is None
    assert queue.claim(store, "w", "0").id == gpu_run


MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:35 / /mnt/lab rw,relatime shared:2 - nfs4 server:/export rw,vers=4.2
41 40 0:36 / /mnt/lab/local\\040disk rw shared:3 - ext4 /dev/sdb1 rw
42 22 0:37 / /home/me/remote rw,nosuid - fuse.sshfs me@box:/data rw
"""


@pytest.mark.parametrize(
    "path, fstype",
    [
        ("/home/me/wb", "ext4"),
        ("/mnt/lab/wb", "nfs4"),
        ("/mnt/lab/local disk/wb", "ext4"),
        ("/home/me/remote/x", "fuse.sshfs"),
        ("/mnt/labx", "ext4"),
    ],
)
def test_mount_type_finds_the_innermost_mount(path, fstype):
    from workbench.store.db import mount_type

    assert mount_type(path, MOUNTINFO) == fstype


def test_a_store_on_a_network_file_system_is_refused(tmp_path, monkeypatch):
    import workbench.store.db

    info = tmp_path / "mountinfo"
    info.write_text(f"22 1 8:1 / / rw - ext4 /dev/sda1 rw\n40 22 0:35 / {tmp_path} rw - nfs4 srv:/x rw\n")
    monkeypatch.setattr(workbench.store.db, "MOUNTINFO", info)
    with pytest.raises(StoreError, match=r"nfs4 file system.*WORKBENCH_DB_URL"):
        Store(home=tmp_path / "wb")
    assert not (tmp_path / "wb" / "workbench.db").exists()


def test_workers_registry(store):
    wid = queue.register_worker(store, ["cpu"])
    assert [w.id for w in queue.live_workers(store)] == [wid]
    queue.stop_worker(store, wid)
    assert queue.live_workers(store) == []


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/../../b", "", ".", "a\\..\\b", "a/./b"])
def test_artifact_names_cannot_escape(tmp_path, name):
    with pytest.raises(UnsafeArtifactName):
        artifact_path(tmp_path, 1, name)


def test_artifact_symlink_escape_is_refused(tmp_path):
    root = tmp_path / "runs" / "1"
    root.mkdir(parents=True)
    os.symlink(tmp_path.parent, root / "link")
    with pytest.raises(UnsafeArtifactName):
        artifact_path(tmp_path, 1, "link/secret.png")
    assert artifact_path(tmp_path, 1, "images/a/00000001.png") == root / "images" / "a" / "00000001.png"


def test_the_read_queries_give_the_same_answers_on_both_databases(store):
    """Catches SQL that only SQLite reads (JSON access, ordering, grouping, REAL arithmetic): what the
    CLI, the TUI and exports ask, checked against counted values."""
    from workbench.jobs.context import RunContext
    from workbench.store.queries import (
        active_runs,
        events,
        get_run,
        latest_metrics,
        list_runs,
        metric_keys,
        metric_series,
        show,
        tables,
    )

    a, b, c = queue.submit(
        store,
        name="q",
        kind="sleep",
        spec_text="",
        sweep={},
        priority=0,
        runs=[
            queue.NewRun(n, {"kind": "sleep", "device": d})
            for n, d in (("a", "cpu"), ("b", "cuda"), ("c", "auto"))
        ],
    )[1]
    run = queue.claim(store, "w", "cpu")
    assert run.id == a
    ctx = RunContext(store, a, attempt=run.attempt)
    for step in (1, 2, 3):
        ctx.log(step, loss=1.0 / step, acc=step / 10)
    ctx.log(2, loss=0.25)  # a relogged step: the newest value wins
    ctx.flush()
    ctx.table("t", [{"x": 1, "y": "é"}, {"x": 2, "y": None}])
    ctx.summary(top1=0.5, top1_ci=[0.4, 0.6])
    ctx.event("hello")
    assert [r.id for r in list_runs(store)] == [a, b, c]
    assert [r.id for r in list_runs(store, status="queued")] == [b, c]
    queue.set_priority(store, c, 5)
    assert [r.id for r in active_runs(store)] == [a, c, b]  # running first, then by priority
    assert get_run(store, b).label == "queued (needs a GPU)"
    assert metric_keys(store, a) == ["acc", "loss"]
    assert metric_series(store, a, "loss") == [(1, 1.0), (2, 0.25), (3, pytest.approx(1 / 3))]
    assert latest_metrics(store, [a, b], "loss") == {a: (2, 0.25)}
    assert tables(store, a) == {"t": [{"x": 1, "y": "é"}, {"x": 2, "y": None}]}
    assert [e.message for e in events(store, a)][-1] == "hello"
    rec = show(store, a).as_json()
    assert rec["summary"] == {"top1": 0.5, "top1_ci": [0.4, 0.6]} and rec["spec"]["device"] == "cpu"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg2://lab:s3cret@db.example/wb",  # the driver is not installed
        "postgresql+nodriver://lab:s3cret@db.example/wb",  # no such dialect plugin
        "lab:s3cret@@db.example",  # not a URL at all
    ],
)
def test_a_password_in_a_bad_url_is_never_printed(url, cli, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DB_URL", url)
    code, out, err = cli("runs")
    assert code == 2 and "cannot use database URL" in err
    assert "s3cret" not in out + err, err


def test_cluster_backends_refuse_a_url_with_a_password(pg_url, cli, monkeypatch):
    """Ray and Slurm send the store's URL with every run (task arguments, submitit's pickles on a shared
    mount): a password in it is refused, with the way out, before anything is sent."""
    with_password = pg_url.replace("://wb@", "://wb:s3cret@")  # the test server trusts any password
    assert with_password != pg_url
    monkeypatch.setenv("WORKBENCH_DB_URL", with_password)
    code, out, err = cli("worker", "--backend", "slurm", "--slurm-cluster", "local", "--once")
    assert code == 2 and "~/.pgpass" in err and "PGPASSFILE" in err, err
    assert "s3cret" not in out + err
    code, out, err = cli("runs")  # the local faces still open the store with it
    assert code == 0, err

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from workbench.jobs.context import RunContext
from workbench.store import queue
from workbench.store.db import Store
from workbench.store.queries import artifacts, events, metric_series, show


@pytest.fixture
def store(db_url, home):
    """This module's tests run on SQLite and on PostgreSQL (see conftest.db_url)."""
    s = Store()
    yield s
    s.dispose()


def _ctx(store) -> RunContext:
    (rid,) = queue.submit(
        store, name="t", kind="sleep", spec_text="", sweep={}, runs=[queue.NewRun("r", {"kind": "sleep"})]
    )[1]
    queue.claim(store, "w", "cpu")
    return RunContext(store, rid)


def test_log_is_buffered_until_flush(store):
    ctx = _ctx(store)
    for step in range(5):
        ctx.log(step, loss=1.0 / (step + 1))
    assert metric_series(store, ctx.run_id, "loss") == []  # under a second: still buffered
    ctx.flush()
    assert [s for s, _ in metric_series(store, ctx.run_id, "loss")] == [0, 1, 2, 3, 4]


def test_progress_alone_reaches_the_store_once_a_second(store):
    """A kind that logs no scalars (a sweep) still shows its progress: progress flushes when one is due."""
    ctx = _ctx(store)
    ctx.progress(1, 10)
    assert show(store, ctx.run_id).as_json()["progress"] == [0, 0]  # under a second: buffered
    ctx._last_flush -= 2  # a second and more since the last write
    ctx.progress(2, 10)
    assert show(store, ctx.run_id).as_json()["progress"] == [2, 10]


def test_newest_value_of_a_relogged_step_wins(store):
    ctx = _ctx(store)
    ctx.log(1, loss=5.0)
    ctx.flush()
    ctx.log(1, loss=3.0)  # a resumed run logging step 1 again
    ctx.log(2, loss=float("nan"))
    ctx.flush()
    series = metric_series(store, ctx.run_id, "loss")
    assert series[0] == (1, 3.0) and series[1][0] == 2 and math.isnan(series[1][1])


def test_checkpoint_roundtrip_keeps_structure(store):
    ctx = _ctx(store)
    assert ctx.restore() is None
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99))
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    gen = torch.Generator().manual_seed(3)
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "generator": gen.get_state(),
        "step": 7,
        "array": np.arange(3),
        "nested": {"t": (1, 2.5, "x")},
    }
    ctx.checkpoint(state, 7)
    back = ctx.restore()
    assert back["step"] == 7 and back["nested"] == {"t": (1, 2.5, "x")}
    assert torch.equal(back["model"]["weight"], model.weight.detach())
    assert np.array_equal(back["array"], np.arange(3))
    opt2 = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=1e-3)
    opt2.load_state_dict(back["optimizer"])  # int keys and tuples survived
    assert opt2.state_dict()["param_groups"][0]["betas"] == (0.9, 0.99)
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    gen2 = torch.Generator()
    gen2.set_state(back["generator"])
    assert torch.equal(torch.rand(3, generator=gen2), torch.rand(3, generator=gen))
    ctx.checkpoint(state, 9)
    assert [a.step for a in artifacts(store, ctx.run_id, "checkpoint")] == [9]  # one row per run


def test_images_tables_summary(store):
    ctx = _ctx(store)
    p = ctx.image("samples", 10, np.random.default_rng(0).random((8, 8, 3)))
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ctx.image("samples", 10, np.zeros((8, 8), dtype=np.uint8))  # redone picture replaces its row
    ctx.table("acc", [{"a": 1}])
    ctx.table("acc", [{"a": 2}])
    ctx.summary(x=1.5)
    ctx.summary(y=np.float32(2.0), z={"3.0": 0.9})
    rec = show(store, ctx.run_id).as_json()
    assert rec["tables"] == {"acc": [{"a": 2}]}
    assert rec["summary"] == {"x": 1.5, "y": 2.0, "z": {"3.0": 0.9}}
    assert [(a["name"], a["step"]) for a in rec["artifacts"]] == [("samples", 10)]
    assert rec["artifacts"][0]["path"] == f"runs/{ctx.run_id}/images/samples/00000010.png"


def test_should_stop_sees_cancel(store):
    ctx = _ctx(store)
    assert not ctx.should_stop()
    queue.request_cancel(store, ctx.run_id)
    ctx._last_stop_check = 0.0
    assert ctx.should_stop()


def test_finished_run_serves_a_succeeded_run_and_names_what_is_wrong_otherwise(store):
    import pytest

    from workbench.jobs.context import UnusableRun

    done = _ctx(store)
    done.summary(loss=0.5)
    done.table("t", [{"a": 1}])
    done.file("model.safetensors", b"first")
    done.file("model.safetensors", b"second")  # written again: the newest one serves
    done.image("grid", 3, np.zeros((4, 4), np.uint8))
    queue.finish(store, done.run_id, "w", "succeeded")
    failed = _ctx(store)
    queue.finish(store, failed.run_id, "w", "failed")
    running = _ctx(store)

    ctx = _ctx(store)
    run = ctx.finished_run(done.run_id, kinds=["sleep"])
    assert (run.id, run.kind, run.summary, run.tables) == (
        done.run_id,
        "sleep",
        {"loss": 0.5},
        {"t": [{"a": 1}]},
    )
    assert run.artifact("model.safetensors").read_bytes() == b"second"
    assert run.artifact("grid").suffix == ".png"
    with pytest.raises(UnusableRun, match=r"has no artifact 'weights' \(it has: grid, model.safetensors\)"):
        run.artifact("weights")
    with pytest.raises(
        UnusableRun, match=f"run {done.run_id} .* is a succeeded sleep run; it must be a succeeded images run"
    ):
        ctx.finished_run(done.run_id, kinds=["images"])
    with pytest.raises(UnusableRun, match="is a failed sleep run; it must be a succeeded run"):
        ctx.finished_run(failed.run_id)
    with pytest.raises(UnusableRun, match="is a running sleep run"):
        ctx.finished_run(running.run_id)
    with pytest.raises(UnusableRun, match="run 999: no such run"):
        ctx.finished_run(999)


def test_finished_run_by_experiment_and_name_is_the_newest_succeeded_one(store):
    """Catches: the oldest (or a failed) run serving a name; a run of another experiment with that name."""
    import pytest

    from workbench.jobs.context import UnusableRun
    from workbench.jobs.spec import RunName

    def run(experiment: str, name: str, status: str) -> int:
        (rid,) = queue.submit(
            store,
            name=experiment,
            kind="sleep",
            spec_text="",
            sweep={},
            runs=[queue.NewRun(name, {"kind": "sleep"})],
        )[1]
        queue.claim(store, "w", "cpu")
        queue.finish(store, rid, "w", status)
        return rid

    run("mnist", "mnist", "succeeded")
    newer = run("mnist", "mnist", "succeeded")
    run("mnist", "mnist", "failed")  # newest, but failed
    other = run("mnist", "mnist steps=10", "succeeded")  # a sweep's run: named by its values
    run("fashion", "mnist", "succeeded")  # another experiment, the same run name
    ctx = _ctx(store)
    assert ctx.finished_run(RunName(experiment="mnist")).id == newer
    assert ctx.finished_run(RunName(experiment="mnist", name="mnist steps=10")).id == other
    with pytest.raises(UnusableRun, match="mnist/nope: no succeeded run of experiment 'mnist' named 'nope'"):
        ctx.finished_run(RunName(experiment="mnist", name="nope"))
    with pytest.raises(UnusableRun, match="no succeeded run of experiment 'cifar'"):
        ctx.finished_run(RunName(experiment="cifar"))
    with pytest.raises(UnusableRun, match="no succeeded images run of experiment 'mnist'"):
        ctx.finished_run(RunName(experiment="mnist"), kinds=["images"])  # only of the kinds asked for


def test_a_part_names_its_results_and_resumes_only_its_own_checkpoint(store):
    """Several trainings in one run (a generator per data subset): part 1 must not resume from part 0's
    checkpoint, and its curves and images must not land on part 0's."""
    ctx = _ctx(store)
    first, second = ctx.part("gen/a", 0, 4), ctx.part("gen/b", 1, 4)
    first.log(1, loss=0.5)
    first.checkpoint({"w": torch.ones(2), "step": 7}, 7)
    assert second.restore() is None  # the run's checkpoint is the first part's
    resumed = first.restore()
    assert resumed["step"] == 7 and torch.equal(resumed["w"], torch.ones(2))
    second.log(1, loss=0.25)
    second.image("samples", None, np.zeros((4, 4), dtype=np.uint8))
    second.progress(50, 100)  # half of the second of 4 parts
    ctx.flush()
    assert [tuple(p) for p in metric_series(store, ctx.run_id, "gen/a/loss")] == [(1, 0.5)]
    assert [tuple(p) for p in metric_series(store, ctx.run_id, "gen/b/loss")] == [(1, 0.25)]
    assert "gen/b/samples" in {a.name for a in artifacts(store, ctx.run_id)}
    assert show(store, ctx.run_id).as_json()["progress"] == [1500, 4000]


def test_non_finite_numbers_are_mapped_once_as_documented(store, cli):
    """NaN -> null and +-inf -> +-1e308 in summaries, tables and notes, from Python, numpy and torch
    numbers alike (numpy's NaN used to pass: SQLite stored it, `show --json` printed `NaN`, and PostgreSQL
    refused the write as a store fault every retry repeated); curves keep NaN as a gap and store
    infinities as +-1e308."""
    import json

    ctx = _ctx(store)
    nan, inf = float("nan"), float("inf")
    ctx.summary(
        a=nan,
        b=np.float64(inf),
        c=np.float32(-inf),
        d=torch.tensor(nan),
        e=np.array([1.0, nan]),
        f={"g": [inf]},
    )
    ctx.table("t", [{"x": np.float32(nan), "y": torch.tensor([inf, 2.0])}])
    ctx.log(1, loss=inf, lr=-inf, gap=nan)
    ctx.flush()
    rec = show(store, ctx.run_id).as_json()
    big = 1e308
    assert rec["summary"] == {"a": None, "b": big, "c": -big, "d": None, "e": [1.0, None], "f": {"g": [big]}}
    assert rec["tables"]["t"] == [{"x": None, "y": [big, 2.0]}]
    assert metric_series(store, ctx.run_id, "loss") == [(1, big)]
    assert metric_series(store, ctx.run_id, "lr") == [(1, -big)]
    assert math.isnan(metric_series(store, ctx.run_id, "gap")[0][1])
    code, out, _ = cli("show", ctx.run_id, "--json")
    assert code == 0
    json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))


def test_a_value_that_is_not_json_is_the_kinds_error_not_a_store_fault(store):
    from workbench.jobs.context import is_store_fault

    ctx = _ctx(store)
    with pytest.raises(ValueError, match=r"summary: not storable as JSON") as e:
        ctx.summary(where=store.home)  # a Path
    assert not is_store_fault(e.value)
    with pytest.raises(ValueError, match=r"table 't'"):
        ctx.table("t", [{"s": {1, 2}}])
    assert show(store, ctx.run_id).as_json()["summary"] == {}


# --- an attempt that lost the run writes nothing ---------------------------------------------------


def _take_over(store, ctx) -> RunContext:
    """What a slow attempt meets: its lease reaped as lapsed, the run retried and claimed again."""
    assert queue.reap_stale(store, timeout=-5) == [ctx.run_id]
    queue.retry(store, ctx.run_id)
    assert queue.claim(store, "w2", "cpu").id == ctx.run_id
    return RunContext(store, ctx.run_id, attempt=ctx.attempt + 1)


def test_a_superseded_attempt_never_replaces_the_new_attempts_file(store, monkeypatch):
    """The interleaving: attempt 1 has written its picture's bytes when it loses the run, and attempt 2
    writes the same picture; attempt 1 then carries on. The file holds attempt 2's picture (was:
    attempt 1's rename landed on it, after its ownership check had passed)."""
    from workbench.jobs import context as context_module
    from workbench.store.run_writer import LostOwnership

    old = _ctx(store)
    new: list[RunContext] = []
    real = context_module.write_temporary

    def then_taken_over(path, data):
        tmp = real(path, data)
        if not new:  # attempt 1's bytes are on disk: now attempt 2 takes the run and draws its own
            new.append(_take_over(store, old))
            new[0].image("samples", 10, np.ones((8, 8)))
        return tmp

    monkeypatch.setattr(context_module, "write_temporary", then_taken_over)
    with pytest.raises(LostOwnership):
        old.image("samples", 10, np.zeros((8, 8)))
    (art,) = artifacts(store, old.run_id, "image")
    from PIL import Image

    assert np.asarray(Image.open(store.home / art.path)).min() == 255, (
        "attempt 1's picture replaced attempt 2's"
    )
    assert not list((store.home / art.path).parent.glob(".*.tmp*")), "a temporary file was left behind"


def test_a_superseded_attempt_never_deletes_the_new_attempts_checkpoint(store, monkeypatch):
    """The interleaving: attempt 1 records its checkpoint, loses the run before it clears its older files,
    and attempt 2 resumes and checkpoints; attempt 1 then clears. Attempt 2's checkpoint survives and a
    third attempt resumes from it (was: attempt 1 deleted every file but its own)."""
    old = _ctx(store)
    old.checkpoint({"step": torch.tensor(5)}, 5)
    new: list[RunContext] = []
    real = old._store_file

    def then_taken_over(*args, **kwargs):
        real(*args, **kwargs)
        new.append(_take_over(store, old))
        assert int(new[0].restore()["step"]) == 10
        new[0].checkpoint({"step": torch.tensor(11)}, 11)

    monkeypatch.setattr(old, "_store_file", then_taken_over)
    from workbench.store.run_writer import LostOwnership

    with pytest.raises(LostOwnership):  # records, clears (now as a superseded attempt), is told at its event
        old.checkpoint({"step": torch.tensor(10)}, 10)
    third = _take_over(store, new[0])
    assert int(third.restore()["step"]) == 11


def test_restore_fails_loudly_when_the_checkpoint_file_is_gone(store):
    from workbench.jobs.context import CheckpointMissing

    ctx = _ctx(store)
    ctx.checkpoint({"step": torch.tensor(7)}, 7)
    (ckpt,) = artifacts(store, ctx.run_id, "checkpoint")
    (store.home / ckpt.path).unlink()
    again = _take_over(store, ctx)
    with pytest.raises(CheckpointMissing, match="checkpoint at step 7 .* is missing"):
        again.restore()
    assert any("is missing" in e.message for e in events(store, ctx.run_id))


def test_a_value_the_database_refuses_fails_the_run_not_the_store(store):
    """PostgreSQL refuses a table name longer than its column (SQLite stores it): the same write would
    fail on every retry, so it is the run's error (was: a store fault, `interrupted`, retried for ever)."""
    from workbench.jobs.context import is_store_fault
    from workbench.store.run_writer import RefusedValue

    ctx = _ctx(store)
    name = "t" * 150
    if store.dialect == "sqlite":
        ctx.table(name, [{"a": 1}])
        return
    with pytest.raises(RefusedValue, match="the store refused a value: value too long") as e:
        ctx.table(name, [{"a": 1}])
    assert not is_store_fault(e.value)
    ctx.table("short", [{"a": 1}])  # the run's next write goes through: nothing was left half done
    assert show(store, ctx.run_id).as_json()["tables"] == {"short": [{"a": 1}]}


def test_a_checkpoint_is_durable_once_recorded(store, monkeypatch):
    """The rename that puts a checkpoint (or any artifact) in place is synced with its folder before the
    row that points at it commits (was: the folder was never synced: a power cut could lose the rename)."""
    from workbench.store import artifacts as artifacts_module

    synced = []
    real = artifacts_module.sync_folder
    monkeypatch.setattr(artifacts_module, "sync_folder", lambda folder: (synced.append(folder), real(folder)))
    ctx = _ctx(store)
    ctx.checkpoint({"w": torch.ones(2)}, 3)
    (ckpt,) = artifacts(store, ctx.run_id, "checkpoint")
    assert synced == [(store.home / ckpt.path).parent]


def test_a_kind_finds_caches_and_its_own_earlier_files_through_the_context(store):
    """cache_dir stays under the store's cache folder whatever name it is given; own_file sees only what
    this run kept with file() (a part's under the part's name), not another run's file of that name."""
    ctx = _ctx(store)
    assert ctx.cache_dir("reference") == store.home / "cache" / "reference"
    assert (store.home / "cache" / "reference").is_dir()
    for bad in ("../runs", "a/b", "", ".", "Reference", "x" * 65):
        with pytest.raises(ValueError, match="cache name"):
            ctx.cache_dir(bad)
    assert not (store.home / "runs" / "cache").exists()
    other = _ctx(store)
    other.file("model.bin", b"theirs")
    assert ctx.own_file("model.bin") is None
    kept = ctx.file("model.bin", b"mine")
    assert ctx.own_file("model.bin") == kept and kept.read_bytes() == b"mine"
    part = ctx.part("train", 0, 2)
    assert part.own_file("model.bin") is None
    assert part.own_file("w.bin") is None and part.file("w.bin", b"p").read_bytes() == b"p"
    assert part.own_file("w.bin") == ctx.own_file("train/w.bin")


def test_a_phase_names_the_step_and_its_progress_gives_the_time_left(store, cli):
    """Catches a run sitting at `running 3000/3000` while it evaluates for minutes: the phase says what
    it does now, its bar starts from 0, and the pace so far gives the time left."""
    from workbench.report import status_line
    from workbench.store.queries import phases

    ctx = _ctx(store)
    ctx.phase("training", 3000)
    ctx.progress(3000, 3000)
    ctx.phase("sampling and scoring", 6)
    ctx.progress(3, 6)
    ctx.flush()
    rec = show(store, ctx.run_id)
    assert rec.progress == (3, 6) and rec.phase.name == "sampling and scoring"
    assert phases(store, [ctx.run_id, 999]) == {ctx.run_id: rec.phase}
    assert (
        status_line(rec.progress, rec.phase, rec.phase.since + 60)
        == "sampling and scoring 3/6, 1:00 in, about 1:00 left"
    )
    assert status_line((0, 6), rec.phase, rec.phase.since + 5) == "sampling and scoring 0/6, 0:05 in"
    assert status_line((2, 4), None, 0.0) == "2/4"
    code, out, _ = cli("runs")
    assert code == 0 and "sampling and scoring 3/6," in out and "left" in out
    part = ctx.part("gen", 0, 2)
    part.phase("training")  # a part's step is an event; the run keeps its phase
    assert phases(store, [ctx.run_id])[ctx.run_id].name == "sampling and scoring"

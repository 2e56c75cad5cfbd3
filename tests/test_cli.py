"""The machine-readable CLI surface: submit, runs, show, export, schema, validate."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from tests.conftest import ROOT, write_spec
from workbench.jobs.context import RunContext
from workbench.store import queue
from workbench.store.queries import show


@pytest.fixture
def finished_runs(store, cli, tmp_path):
    """Two succeeded runs with summaries and a result table, written through RunContext."""
    code, out, _ = cli(
        "submit", write_spec(tmp_path, "kind: sleep\nsweep:\n  seed: [1, 2]\n"), "--no-worker", "--json"
    )
    ids = json.loads(out)["run_ids"]
    for i, rid in enumerate(ids):
        queue.claim(store, "w", "cpu")
        ctx = RunContext(store, rid)
        ctx.summary(energy_distance=0.001 * (i + 1), guided_accuracy={"0.0": 0.1, "3.0": 0.99})
        ctx.table(
            "samplers",
            [
                {"sampler": "ddpm", "steps": 1000, "nfe": 1000, "seconds": 1.5 + i},
                {"sampler": "ddim", "steps": 50, "nfe": 50, "seconds": 0.1},
            ],
        )
        queue.finish(store, rid, "w", "succeeded")
    return ids


def test_submit_json_and_runs(cli, tmp_path):
    code, out, _ = cli(
        "submit",
        write_spec(tmp_path, "kind: sleep\nsweep:\n  seed: [1, 2, 3]\n"),
        "--no-worker",
        "--json",
        "--priority",
        "3",
    )
    assert code == 0
    ids = json.loads(out)["run_ids"]
    assert len(ids) == 3
    code, out, _ = cli("runs", "--json", "--status", "queued")
    rows = json.loads(out)
    assert [r["id"] for r in rows] == ids
    assert rows[0]["name"] == "job seed=1" and rows[0]["experiment"] == "job" and rows[0]["priority"] == 3
    assert json.loads(cli("runs", "--json", "--kind", "ddpm")[1]) == []


def test_show_json_shape(finished_runs, cli):
    """The shape scripts read (unchanged since records became RunDetail): every key, in order, ISO times."""
    rec = json.loads(cli("show", finished_runs[0], "--json")[1])
    assert list(rec) == [
        "id", "experiment", "experiment_id", "name", "kind", "status", "label", "stale", "spec", "priority",
        "attempt", "device", "worker", "pid", "job_id", "created_at", "started_at", "finished_at", "progress",
        "error", "traceback", "summary", "tables", "artifacts", "phase", "tags", "note", "archived",
    ]  # fmt: skip
    assert rec["status"] == "succeeded" and rec["finished_at"][:2] == "20" and "T" in rec["finished_at"]
    assert isinstance(rec["progress"], list) and isinstance(rec["spec"], dict)
    assert all(set(a) == {"name", "kind", "path", "step", "meta"} for a in rec["artifacts"])
    assert rec["spec"]["kind"] == "sleep" and rec["spec"]["seed"] == 1
    assert rec["summary"]["guided_accuracy"]["3.0"] == 0.99
    assert rec["tables"]["samplers"][1]["nfe"] == 50


def test_export_every_format(finished_runs, cli, tmp_path):
    a, b = map(str, finished_runs)
    code, out, _ = cli("export", a, b, "--format", "csv", "--table", "samplers")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["run"], r["sampler"], r["nfe"]) for r in rows] == [
        (a, "ddpm", "1000"),
        (a, "ddim", "50"),
        (b, "ddpm", "1000"),
        (b, "ddim", "50"),
    ]
    cli("export", a, b, "--format", "csv", "-o", tmp_path / "out.csv")
    summary = list(csv.DictReader(open(tmp_path / "out-summary.csv")))
    assert summary[1]["guided_accuracy[3.0]"] == "0.99" and summary[1]["energy_distance"] == "0.002"
    assert (tmp_path / "out-samplers.csv").exists()

    cli("export", a, "--format", "md", "-o", tmp_path / "out.md")
    md = (tmp_path / "out.md").read_text()
    assert "## samplers" in md and "| run | run_name | sampler | steps | nfe | seconds |" in md

    cli("export", a, "--format", "latex", "-o", tmp_path / "out.tex")
    tex = (tmp_path / "out.tex").read_text()
    assert "\\begin{tabular}" in tex and "run\\_name" in tex and "guided\\_accuracy[3.0]" in tex

    cli("export", a, b, "--format", "json", "-o", tmp_path / "out.json")
    data = json.loads((tmp_path / "out.json").read_text())
    assert set(data) == {"summary", "samplers"} and len(data["samplers"]) == 4


def test_schema_lists_every_kind(cli):
    code, out, _ = cli("schema")
    schema = json.loads(out)
    kinds = {
        v["properties"]["kind"]["const"]
        for v in schema["$defs"].values()
        if "kind" in v.get("properties", {})
    }
    assert {"ddpm", "sleep"} <= kinds


def test_validate_every_example(cli):
    for spec in sorted((ROOT / "examples").glob("*.yaml")):
        code, out, err = cli("validate", spec)
        assert code == 0, (spec, err)


def test_bare_workbench_lists_runs(finished_runs, cli):
    code, out, _ = cli()
    assert code == 0 and "job seed=1" in out and "succeeded" in out


def test_show_human_output(finished_runs, cli):
    code, out, _ = cli("show", finished_runs[0])
    assert code == 0 and "samplers" in out and "energy_distance" in out


def test_human_output_prints_brackets_literally(store, cli, tmp_path):
    """Names, errors and flattened keys like best[sampler] are text, not Rich markup."""
    code, out, _ = cli(
        "submit", write_spec(tmp_path, "kind: sleep\nname: exp [beta]\n"), "--no-worker", "--json"
    )
    (rid,) = json.loads(out)["run_ids"]
    queue.claim(store, "w", "cpu")
    ctx = RunContext(store, rid)
    ctx.summary(best={"sampler": "ddim", "nfe": 20})
    ctx.table("t", [{"cfg": {"w": 3}, "note": "[red]not a style[/]"}])
    queue.finish(store, rid, "w", "failed", "ValueError: bad [SQL: x]")
    code, out, _ = cli("show", rid)
    assert "exp [beta]" in out and "[SQL: x]" in out and "[red]not a style[/]" in out
    code, out, _ = cli("runs")
    assert "exp [beta]" in out
    code, out, _ = cli("export", rid, "--format", "md")
    assert "best[sampler]" in out and "cfg[w]" in out


def test_show_prints_a_page_of_a_long_table_and_says_how_to_get_the_rest(store, cli, tmp_path):
    """Catches: `show` rendering every row of a 50 000-row table (68 s in a terminal, a minute of scroll)."""
    code, out, _ = cli("submit", write_spec(tmp_path, "kind: sleep\n"), "--no-worker", "--json")
    (rid,) = json.loads(out)["run_ids"]
    queue.claim(store, "w", "cpu")
    RunContext(store, rid).table("long", [{"i": i, "name": f"row{i}"} for i in range(250)])
    queue.finish(store, rid, "w", "succeeded")
    code, out, _ = cli("show", rid)
    assert code == 0 and "row99" in out and "row100" not in out
    assert f"150 more rows: --rows 0, or workbench export {rid} --table long" in out
    code, out, _ = cli("show", rid, "--rows", "0")
    assert "row249" in out and "more rows" not in out
    code, out, _ = cli("show", rid, "--json")
    assert len(json.loads(out)["tables"]["long"]) == 250


def test_piped_show_prints_a_wide_table_uncut(store, cli, tmp_path):
    """Catches: piped output cut at a fixed width (the campaign's and CI logs' tables read `verd…`)."""
    code, out, _ = cli("submit", write_spec(tmp_path, "kind: sleep\n"), "--no-worker", "--json")
    (rid,) = json.loads(out)["run_ids"]
    queue.claim(store, "w", "cpu")
    RunContext(store, rid).table("wide", [{f"column_number_{i:02d}": f"value_{i:02d}" for i in range(30)}])
    queue.finish(store, rid, "w", "succeeded")
    code, out, _ = cli("show", rid)
    assert code == 0 and "…" not in out and "column_number_29" in out and "value_29" in out


def test_export_curves_and_samples_of_names_with_slashes(store, cli, tmp_path):
    """Catches: `export --curves` crashing on `part0/loss` (every run part and feature_sweep log such
    names), and a name that could climb out of the export's folder."""
    code, out, _ = cli("submit", write_spec(tmp_path, "kind: sleep\n"), "--no-worker", "--json")
    (rid,) = json.loads(out)["run_ids"]
    queue.claim(store, "w", "cpu")
    ctx = RunContext(store, rid)
    for step in range(3):
        ctx.log(step, **{"part0/loss": 1.0 / (step + 1), "part0_loss": 2.0, "../../escape": 1.0})
    ctx.flush()
    ctx.image("probe/t=10", None, np.zeros((4, 4)))
    queue.finish(store, rid, "w", "succeeded")
    target = tmp_path / "out" / "e.csv"
    code, _, err = cli("export", rid, "--curves", "--samples", "-o", target)
    assert code == 0, err
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png"))
    assert written == [
        "e-curve-_.._escape.png",
        "e-curve-part0_loss-2.png",  # `part0_loss` after `part0/loss`: both keep a file
        "e-curve-part0_loss.png",
        f"e-images/run{rid}-probe_t=10.png",
    ]
    rows = list(csv.DictReader((tmp_path / "out" / "e-curves.csv").open()))  # the curves as numbers
    assert len(rows) == 9 and {r["metric"] for r in rows} == {"part0/loss", "part0_loss", "../../escape"}
    loss = [(int(r["step"]), float(r["value"])) for r in rows if r["metric"] == "part0/loss"]
    assert loss == [(0, 1.0), (1, 0.5), (2, 1 / 3)] and {r["run"] for r in rows} == {str(rid)}


def test_runs_shows_and_filters_on_summary_keys_and_spec_fields(finished_runs, cli):
    """`--columns` takes summary keys (nested ones by `[key]`) and spec fields; `--where` keeps the runs
    where every term holds, comparing numbers as numbers."""
    a, b = finished_runs
    code, out, _ = cli(
        "runs",
        "--columns",
        "energy_distance,seed,guided_accuracy[3.0]",
        "--where",
        "energy_distance>0.0015 seed=2",
    )
    lines = [line.split() for line in out.splitlines() if line.strip()]
    assert code == 0 and lines[0] == [
        "id",
        "name",
        "kind",
        "status",
        "energy_distance",
        "seed",
        "guided_accuracy[3.0]",
    ]
    assert [line[0] for line in lines[1:]] == [str(b)] and lines[1][-3:] == ["0.002", "2", "0.99"]
    code, out, _ = cli("runs", "--json", "--columns", "seed", "--where", "name~SEED=1")
    assert [(r["id"], r["columns"]) for r in json.loads(out)] == [(a, {"seed": 1})]
    assert cli("runs", "--where", "seed>=1 seed<2")[1].count("job seed=") == 1
    assert "no runs match" in cli("runs", "--where", "energy_distance>1")[1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--kind", "nope"], "--kind: unknown kind 'nope'; one of attribution,"),
        (
            ["--columns", "energy_distnce"],
            "no run here has a field 'energy_distnce'; did you mean 'energy_distance'",
        ),
        (["--where", "seed"], "--where: 'seed': write FIELD OP VALUE"),
        (["--where", "nosuch>1"], "no run here has a field 'nosuch'"),
    ],
)
def test_runs_refuses_what_it_cannot_read(finished_runs, cli, args, message):
    code, _, err = cli("runs", *args)
    assert code == 2 and message in " ".join(err.split())


def test_where_terms_compare_numbers_as_numbers_and_miss_on_absent_fields():
    from workbench.report import Condition, parse_where

    fields = {"steps": 10, "top1": 0.91, "source": "dragon", "ok": True, "none": None}
    holds = [c.holds(fields) for c in parse_where("steps>9 top1>=0.91 source=dragon source~RAG ok=true")]
    assert holds == [True, True, True, True, True]  # 10 > 9 as numbers (as text "10" < "9")
    assert not any(c.holds(fields) for c in parse_where("steps<9 source!=dragon missing<1 none=1 source>a"))
    assert Condition.parse("a<=b=c") == Condition("a", "<=", "b=c")  # the first operator splits
    assert Condition.parse("name~x=1") == Condition("name", "~", "x=1")


def test_retry_of_several_runs_queues_all_or_names_each_refusal(store, cli, tmp_path):
    """Catches: `retry 1 2` queueing run 1, then stopping at run 2 with exit 2 (half a batch done, and the
    message naming only the first refusal)."""
    from workbench.store.queries import get_run

    spec = write_spec(tmp_path, "kind: sleep\nsweep:\n  seed: [1, 2, 3]\n")
    ids = json.loads(cli("submit", spec, "--no-worker", "--json")[1])["run_ids"]
    for rid, status in zip(ids, ("failed", "succeeded", "cancelled"), strict=True):
        queue.claim(store, "w", "cpu")
        queue.finish(store, rid, "w", status)
    code, _, err = cli("retry", *map(str, ids), "--no-worker")
    assert code == 2 and f"run {ids[1]} is succeeded" in err and "none was queued" in err
    assert [get_run(store, r).status for r in ids] == ["failed", "succeeded", "cancelled"]
    code, out, _ = cli("retry", str(ids[0]), str(ids[2]), "--no-worker")
    assert code == 0 and [get_run(store, r).status for r in ids] == ["queued", "succeeded", "queued"]


def test_logs_show_the_events_then_the_process_output(finished_runs, store, cli):
    """A run that printed nothing (most succeeded ones) still has a story: its events. Catches `logs`
    printing an empty output log, or refusing a run that has none yet."""
    from workbench.store.artifacts import run_dir

    rid = finished_runs[0]
    code, out, _ = cli("logs", rid)
    lines = out.splitlines()
    assert code == 0 and "queued" in lines[0] and "started on cpu by w (attempt 1)" in lines[1]
    assert lines[-1].endswith("succeeded")
    log = run_dir(store.home, rid) / "output.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("step 1 loss 0.5\n")
    lines = cli("logs", rid)[1].splitlines()
    assert lines[-2] == f"--- output of the run's process ({log}) ---" and lines[-1] == "step 1 loss 0.5"
    assert cli("logs", rid, "--no-events")[1].splitlines() == ["step 1 loss 0.5"]


def test_ctrl_c_on_wait_says_the_runs_go_on(store, home, tmp_path):
    """Catches: Ctrl-C on `submit --wait` exiting 130 without a word (did it cancel the runs?)."""
    import signal
    import subprocess
    import time

    from tests.conftest import subprocess_env, wb_command
    from workbench.store.queries import list_runs

    spec = write_spec(tmp_path, "kind: sleep\n")
    proc = subprocess.Popen(
        wb_command("submit", spec, "--wait", "--no-worker"),
        env=subprocess_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not list_runs(store) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # following by now
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    (run,) = list_runs(store)
    assert proc.returncode == 130 and f"stopped following; run(s) {run.id} go on in the worker" in " ".join(
        err.split()
    )
    assert run.status == "queued"  # untouched


def test_show_prints_the_spec_the_run_ran_with(finished_runs, cli):
    """Its help promised the spec; it printed none. Catches the spec missing, or its text unescaped."""
    code, out, _ = cli("show", finished_runs[1])
    lines = out.splitlines()
    start = lines.index("spec")
    spec = [line.strip() for line in lines[start + 1 : lines.index("summary")]]
    assert code == 0 and "kind: sleep" in spec and "seed: 2" in spec


@pytest.mark.parametrize(
    "width, rows, shape", [(100, 2, "table"), (60, 2, "side"), (44, 2, "rows"), (60, 12, "rows")]
)
def test_result_tables_fit_the_terminal_without_cutting_a_cell(monkeypatch, width, rows, shape):
    """Catches: a 120-column terminal cutting the verdict column to `un...` (Rich shrinks no-wrap columns
    with an ellipsis). Every cell must come out whole at any width: as a table, on its side, or row by row."""
    from rich.console import Console

    import workbench.cli as cli_module

    console = Console(width=width, file=io.StringIO(), highlight=False, color_system=None)
    monkeypatch.setattr(cli_module, "out", console)
    table = [
        {"sampler": f"dpmsolver++ {i}", "steps": 10, "fid": 1.5 + i, "fid_ci_low": 1.25, "fid_ci_high": 1.75,
         "verdict": "unresolved" if i % 2 else "matches", "margin_classifier_fid": 0.123456}
        for i in range(rows)
    ]  # fmt: skip
    console.print(cli_module.rows_table("samplers", table), soft_wrap=False)
    text = console.file.getvalue()
    assert max(len(line) for line in text.splitlines()) <= width
    for i in range(rows):
        for whole in (
            f"dpmsolver++ {i}",
            f"{1.5 + i:.4g} [1.25, 1.75]",
            "matches",
            "unresolved"[: 10 if i % 2 else 0],
        ):
            assert whole in text, (whole, text)
    assert "…" not in text
    assert {
        "table": "margin_classifier_fid" in text.splitlines()[1],
        "side": "#2" in text,
        "rows": "samplers #2" in text,
    }[shape]


def test_compare_puts_metrics_in_rows_with_each_run_minus_the_baseline(store, cli, tmp_path):
    """Two runs with 95 % intervals half 0.02 and 0.015 wide: the difference 0.05 gets half-width
    sqrt(0.02^2 + 0.015^2) = 0.025 (independent runs), so [0.025, 0.075]; a number without an interval
    gets a bare difference; text gets none; the spec field that differs is listed."""
    spec = write_spec(tmp_path, "kind: sleep\nsweep:\n  seed: [1, 2]\n")
    a, b = json.loads(cli("submit", spec, "--no-worker", "--json")[1])["run_ids"]
    for rid, (top1, low, high) in ((a, (0.90, 0.88, 0.92)), (b, (0.95, 0.935, 0.965))):
        queue.claim(store, "w", "cpu")
        RunContext(store, rid).summary(
            top1=top1, top1_ci=[low, high], top1_n=400, nfe=10 * rid, sampler="ddim"
        )
        queue.finish(store, rid, "w", "succeeded")
    code, out, _ = cli("compare", a, b, "--json")
    got = json.loads(out)
    rows = {r["metric"]: r for r in got["metrics"]}
    assert code == 0 and got["baseline"] == a and list(rows) == ["top1", "nfe", "sampler"]
    assert rows["top1"][f"run {b} - run {a}"] == "0.05 [0.025, 0.075]"
    assert rows["top1"][f"run {a}"] == "0.9 [0.88, 0.92] n=400"
    assert rows["nfe"][f"run {b} - run {a}"] == 10 * (b - a) and rows["sampler"][f"run {b} - run {a}"] is None
    assert got["spec_differences"] == [{"field": "seed", f"run {a}": "1", f"run {b}": "2"}]
    code, out, _ = cli("compare", a, b, "--baseline", b, "--json")
    assert json.loads(out)["metrics"][0][f"run {a} - run {b}"] == "-0.05 [-0.075, -0.025]"
    assert cli("compare", a)[0] == 2 and cli("compare", a, b, "--baseline", 99)[0] == 2
    code, out, _ = cli("compare", a, b)
    assert code == 0 and "metrics (each run minus run" in out and "spec fields that differ" in out


def test_tags_notes_names_and_the_archive(finished_runs, store, cli):
    """Catches labels that change results, an archived run still listed (or deleted), a bad tag half
    applied, and a running run archived out of sight."""
    a, b = finished_runs
    before = show(store, a).summary
    assert cli("tag", a, b, "--add", "best", "--add", "v2")[0] == 0
    assert cli("tag", b, "--remove", "v2")[0] == 0
    assert cli("note", a, "lr too high?")[0] == 0 and cli("rename", b, "baseline")[0] == 0
    code, _, err = cli("tag", a, "--add", "ok", "--add", "not ok")
    assert code == 2 and "tag 'not ok'" in err and show(store, a).tags == ("best", "v2")  # none applied
    rec = show(store, a)
    assert (rec.tags, rec.note, rec.summary) == (("best", "v2"), "lr too high?", before)
    assert show(store, b).name == "baseline" and show(store, b).tags == ("best",)
    assert "lr too high?" in cli("show", a)[1]
    assert cli("archive", a)[0] == 0
    ids = [r["id"] for r in json.loads(cli("runs", "--json")[1])]
    assert ids == [b] and show(store, a).archived  # hidden, kept
    got = json.loads(cli("runs", "--json", "--archived", "--where", "tags~v2")[1])
    assert [(r["id"], r["tags"], r["archived"]) for r in got] == [(a, ["best", "v2"], True)]
    assert cli("archive", a, "--undo")[0] == 0 and len(json.loads(cli("runs", "--json")[1])) == 2
    spec = write_spec(tmp_path_of(store), "kind: sleep\n")
    (queued,) = json.loads(cli("submit", spec, "--no-worker", "--json")[1])["run_ids"]
    code, _, err = cli("archive", queued)
    assert code == 2 and "not finished" in err and not show(store, queued).archived


def tmp_path_of(store):
    return store.home.parent


def test_logs_follow_prints_what_comes_until_the_run_ends(store, cli, tmp_path):
    """`logs -f` of a running run: new events and new output lines as they come, then it returns when
    the run ends (a follower that never returned, or that missed the last lines, fails here)."""
    import threading
    import time

    from workbench.store.artifacts import run_dir

    (rid,) = json.loads(cli("submit", write_spec(tmp_path, "kind: sleep\n"), "--no-worker", "--json")[1])[
        "run_ids"
    ]
    queue.claim(store, "w", "cpu")
    log = run_dir(store.home, rid) / "output.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("step 1\n")

    def the_run_goes_on() -> None:
        time.sleep(1.0)
        ctx = RunContext(store, rid)
        ctx.phase("sampling and scoring", 2)
        with log.open("a") as f:
            f.write("step 2\nhalf a li")
        time.sleep(0.8)
        with log.open("a") as f:
            f.write("ne\n")
        queue.finish(store, rid, "w", "succeeded")

    writer = threading.Thread(target=the_run_goes_on)
    writer.start()
    code, out, _ = cli("logs", rid, "-f")
    writer.join()
    lines = out.splitlines()
    assert code == 0 and lines.index("step 1") < lines.index("step 2") < lines.index("half a line")
    assert any("phase   sampling and scoring" in line for line in lines)
    assert any(line.endswith("info    succeeded") for line in lines)

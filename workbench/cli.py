"""The command line. Bare `workbench` opens the TUI; subcommands work headless.

Exit codes: 0 ok, 1 the work failed, 2 bad input (unreadable or invalid spec, unknown run, ...).
Bad input is checked before the store is touched, so it never changes what is stored.
"""

from __future__ import annotations

import difflib
import inspect
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from workbench.store.db import StoreError
from workbench.store.models import RunStatus
from workbench.styles import STATUS_STYLE
from workbench.text import printable

if TYPE_CHECKING:
    from workbench.jobs.context import FinishedRun

app = typer.Typer(
    add_completion=False,
    no_args_is_help=False,
    rich_markup_mode=None,
    help="A terminal lab workbench for diffusion-model research.",
)
# Piped output (CI logs, `make demo | tee`, a file) is never cut: tables print at their full width.
PIPED_WIDTH = 100_000
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else PIPED_WIDTH)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def shown(text, keep: str = "") -> str:
    """Outside text for a Rich console: control and format characters escaped (workbench.text) but
    those in `keep`, and brackets never read as markup."""
    return escape(printable(str(text), keep=keep))


def bad_input(message: str) -> NoReturn:
    err.print(f"[red]error:[/red] {shown(message, keep=chr(10))}")  # a message may list problems by line
    raise typer.Exit(2)


def open_store():
    from workbench.factory import open_store as open_default_store

    try:
        return open_default_store()
    except StoreError as e:
        bad_input(str(e))
    except Exception as e:  # noqa: BLE001 - e.g. an unreadable database file
        bad_input(f"cannot open the store: {str(e).splitlines()[0]}")


def load_job(path: Path):
    from workbench.jobs.jobfile import SpecError, load_job_file

    try:
        return load_job_file(path)
    except SpecError as e:
        bad_input("invalid spec\n  " + "\n  ".join(e.problems))


def print_json(data) -> None:
    """Strict JSON (a NaN or infinity stored by an older run prints as null); non-ASCII and control
    characters as \\u escapes, so nothing in the data reaches the terminal raw."""
    sys.stdout.write(json.dumps(finite(data), indent=2, default=str, allow_nan=False) + "\n")


def finite(data):
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [finite(v) for v in data]
    return data


# --- spec commands -------------------------------------------------------------------------------


@app.command()
def validate(
    spec: Annotated[Path, typer.Argument(help="job YAML")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Check a job spec and show the runs it expands into; stores nothing."""
    job = load_job(spec)
    if as_json:
        print_json(
            {
                "name": job.name,
                "kind": job.kind,
                "runs": [{"name": n, "spec": s.model_dump(mode="json")} for n, s in job.runs],
            }
        )
        return
    out.print(f"ok: {job.kind} experiment {shown(repr(job.name))}, {len(job.runs)} run(s)")
    for name, _ in job.runs:
        out.print(f"  - {shown(name)}")


@app.command()
def schema() -> None:
    """Print the JSON Schema of job specs."""
    from workbench.jobs.jobfile import json_schema

    print_json(json_schema())


@app.command()
def submit(
    spec: Annotated[Path, typer.Argument(help="job YAML")],
    wait: Annotated[bool, typer.Option("--wait", help="follow the runs; exit 0 only if all succeed")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="print ids (and with --wait, results) as JSON")
    ] = False,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="do not start a local worker")] = False,
    priority: Annotated[int, typer.Option("--priority", min=-1000, max=1000)] = 0,
) -> None:
    """Queue a job (a sweep queues one run per combination)."""
    from workbench.jobs.runner import ensure_worker
    from workbench.store import queue

    job = load_job(spec)
    store = open_store()
    exp_id, run_ids = queue.submit(
        store,
        name=job.name,
        kind=job.kind,
        spec_text=job.text,
        sweep=job.sweep,
        priority=priority,
        runs=[queue.NewRun(name, s.model_dump(mode="json")) for name, s in job.runs],
    )
    started = False if no_worker else ensure_worker(store)
    if not as_json:
        out.print(
            f"experiment {exp_id} {shown(repr(job.name))}: queued run(s) {', '.join(map(str, run_ids))}"
            + (" (started a local worker)" if started else "")
        )
    if not wait:
        if as_json:
            print_json({"experiment_id": exp_id, "run_ids": run_ids})
        return
    try:
        statuses = follow(store, run_ids, quiet=as_json, keep_worker=not no_worker)
    except KeyboardInterrupt:  # the runs are the worker's: they go on
        err.print(
            f"stopped following; run(s) {', '.join(map(str, run_ids))} go on in the worker "
            f"(`workbench runs`, `workbench cancel {' '.join(map(str, run_ids))}`)"
        )
        raise typer.Exit(130) from None
    from workbench.report import collect
    from workbench.store.queries import show as show_run

    records = [show_run(store, r) for r in run_ids]
    if as_json:
        print_json(
            {
                "experiment_id": exp_id,
                "run_ids": run_ids,
                "runs": [
                    {k: v for k, v in rec.as_json().items() if k not in ("spec", "traceback")}
                    for rec in records
                ],
            }
        )
    else:
        for name, rows in collect(records).items():
            out.print(rows_table(name, rows), soft_wrap=False)  # a folded cell wraps, never cut
    raise typer.Exit(0 if all(s == RunStatus.SUCCEEDED for s in statuses.values()) else 1)


def follow(store, run_ids: list[int], quiet: bool = False, keep_worker: bool = False) -> dict[int, RunStatus]:
    """Show a progress bar per run with its latest loss until every run has ended.

    With keep_worker, a worker is started again when the one running them died (it would reap a stale
    run and go on with the queue); following itself never changes a run."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from workbench.report import shown_status, status_line
    from workbench.store import queue
    from workbench.store.models import FINAL_STATES
    from workbench.store.queries import get_run, latest_metrics, phases

    statuses: dict[int, RunStatus] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        console=err,
        disable=quiet,
    ) as bar:
        tasks = {r: bar.add_task(f"run {r}", total=None, info=RunStatus.QUEUED.value) for r in run_ids}
        last_check = time.monotonic()
        while True:
            losses = latest_metrics(store, run_ids, "loss")
            steps = phases(store, run_ids)
            waiting = None
            if any(s == RunStatus.QUEUED for s in statuses.values()) or not statuses:
                waiting = queue.queued_because(queue.live_workers(store))
            for r in run_ids:
                run = get_run(store, r)
                statuses[r] = run.status
                info = f"[{STATUS_STYLE.get(run.status, 'white')}]{shown(shown_status(run, waiting))}[/]"
                if run.status == RunStatus.RUNNING and r in steps:
                    info += f"  {shown(status_line(run.progress, steps[r], store.now()))}"
                if r in losses and losses[r][1] is not None:
                    info += f"  loss {losses[r][1]:.4g} @ {losses[r][0]}"
                if run.error:
                    info += f"  [red]{shown(run.error)}[/]"
                bar.update(
                    tasks[r],
                    description=f"run {r} {shown(run.name)}",
                    info=info,
                    completed=run.progress[0],
                    total=run.progress[1] or None,
                )
            if all(s in FINAL_STATES for s in statuses.values()):
                return statuses
            if keep_worker and time.monotonic() - last_check >= 5.0:
                last_check = time.monotonic()
                from workbench.jobs.runner import ensure_worker

                ensure_worker(store)
            time.sleep(0.5)


# --- queue commands ------------------------------------------------------------------------------


def _worker_flags(
    devices: Annotated[
        str,
        typer.Option(help="local: cpu, cpu:N, GPU indices like 0,1, or auto (a cluster places runs itself)"),
    ] = "auto",
    once: Annotated[bool, typer.Option("--once", help="exit when the queue is empty")] = False,
    max_jobs: Annotated[int | None, typer.Option("--max-jobs", min=1, help="exit after N runs")] = None,
    idle_exit: Annotated[
        float | None, typer.Option("--idle-exit", min=0, help="exit after S idle seconds")
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            min=1,
            max=4096,
            help="torch CPU threads per run (default: the cores split "
            "between this worker's CPU slots; a spec's threads wins)",
        ),
    ] = None,
    stop_grace: Annotated[
        float,
        typer.Option(
            "--stop-grace",
            min=0,
            max=86400,
            help="seconds a stopped run gets to checkpoint, plus two of its steps, before it is killed",
        ),
    ] = 10.0,
    backend: Annotated[
        str, typer.Option(help="where runs execute: local (child processes), ray, or slurm (via submitit)")
    ] = "local",
    exclusive: Annotated[bool, typer.Option("--exclusive", hidden=True)] = False,
) -> None:
    """The worker's own flags; each backend's (jobs.backends.BACKENDS) are added after them."""


def _backend_flags() -> list[inspect.Parameter]:
    """One optional flag per backend option (a flag two backends share is one flag, its help naming
    each): a new backend adds its flags by declaring them, not by editing this file."""
    from workbench.jobs.backends import BACKENDS

    declared: dict[str, list] = {}
    for name, info in BACKENDS.items():
        for o in info.options:
            declared.setdefault(o.name, []).append((name, o))
    params = []
    for key, uses in declared.items():
        o = uses[0][1]
        assert all(
            (u.type, u.cli_flag, u.low, u.high) == (o.type, o.cli_flag, o.low, o.high) for _, u in uses
        ), key
        flag = typer.Option(
            o.cli_flag,
            min=o.low,
            max=o.high,
            help="; ".join(f"{backend}: {u.help}" for backend, u in uses),
            hidden=all(u.hidden for _, u in uses),
        )
        params.append(
            inspect.Parameter(
                key, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[o.type | None, flag]
            )
        )
    return params


def worker(**given) -> None:
    """Run queued runs, one per device slot. Ctrl-C: runs checkpoint and end interrupted; twice: at once."""
    from workbench.jobs.backends import BACKENDS, BackendUnavailable, make_backend
    from workbench.jobs.devices import parse_devices
    from workbench.jobs.runner import Worker, hold_exclusive_lock, install_signal_handlers

    backend, devices = given["backend"], given["devices"]
    if backend not in BACKENDS:
        bad_input(f"--backend: {backend!r} is not one of {', '.join(BACKENDS)}")
    options = {}
    takes = {o.name: o for o in BACKENDS[backend].options}
    for key in {o.name for info in BACKENDS.values() for o in info.options}:
        o = takes.get(key)
        if o is None and given[key] is not None:
            owners = [n for n, info in BACKENDS.items() if any(u.name == key for u in info.options)]
            flag = next(u.cli_flag for u in BACKENDS[owners[0]].options if u.name == key)
            bad_input(f"{flag} is for --backend {' or '.join(owners)}")
        if o is not None and given[key] is None and o.required:
            bad_input(f"--backend {backend} needs {o.cli_flag} ({o.help})")
        if o is not None and given[key] is not None:
            options[key] = given[key] * 60 if o.minutes else given[key]
    if backend != "local" and devices != "auto":
        bad_input(f"--devices is for --backend local; the {backend} cluster places runs on its own devices")
    try:
        device_slots = parse_devices(devices) if backend == "local" else []
    except ValueError as e:
        bad_input(str(e))
    if backend == "local":
        options["devices"] = device_slots
    store = open_store()
    if backend != "local" and store.dialect == "sqlite":
        err.print(
            "note: the store is SQLite on this host; runs on other hosts need $WORKBENCH_DB_URL "
            "(postgresql+psycopg://...) and $WORKBENCH_HOME on a shared path"
        )
    # The worker, its fork server and cluster drivers work in the home: nothing they start resolves or
    # imports against the folder the worker was typed in.
    os.chdir(store.home)
    lock = None
    if given["exclusive"] and (lock := hold_exclusive_lock(store.home)) is None:
        out.print("another auto-started worker is running; exiting")
        return
    try:
        chosen = make_backend(backend, store, **options)
    except (BackendUnavailable, ImportError) as e:
        bad_input(str(e))
    w = Worker(
        store,
        device_slots,
        backend=chosen,
        once=given["once"],
        max_jobs=given["max_jobs"],
        idle_exit=given["idle_exit"],
        threads=given["threads"],
        stop_grace=given["stop_grace"],
        log=lambda m: print(time.strftime("%H:%M:%S"), printable(m), flush=True),  # errors quote outside text
    )
    install_signal_handlers(w)
    code = w.run()
    del lock
    raise typer.Exit(code)


_params = [*inspect.signature(_worker_flags, eval_str=True).parameters.values(), *_backend_flags()]
worker.__signature__ = inspect.Signature(_params)  # typer reads the flags from here
worker.__annotations__ = {p.name: p.annotation for p in _params}
app.command()(worker)


@app.command()
def workers(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The live workers on every host: backend, devices (slots), the runs each holds, last heartbeat."""
    from collections import Counter

    from workbench.store.queue import live_workers

    store = open_store()
    now = store.now()
    records = [
        {
            "id": w.id,
            "host": w.hostname,
            "pid": w.pid,
            "backend": w.backend,
            "address": w.address,
            "devices": w.devices,
            "running": list(w.running),
            "heartbeat_age_s": round(now - w.heartbeat_at, 1),
            "up_s": round(now - w.started_at, 1),
        }
        for w in live_workers(store)
    ]
    if as_json:
        print_json(records)
        return
    table = Table(box=None, header_style="bold")
    for col in ("host", "pid", "backend", "where", "devices", "running", "heartbeat", "up"):
        table.add_column(col)
    for r in records:
        table.add_row(
            shown(r["host"]),
            str(r["pid"]),
            r["backend"],
            shown(r["address"] or "this host"),
            shown(
                ", ".join(f"{d} x {n}" if n > 1 else d for d, n in Counter(map(str, r["devices"])).items())
            ),
            ", ".join(map(str, r["running"])) or "idle",
            f"{r['heartbeat_age_s']:.0f} s ago",
            f"{r['up_s'] / 60:.0f} min",
        )
    out.print(table if records else "no live workers: `workbench worker` starts one")


@app.command()
def logs(
    run_id: Annotated[int, typer.Argument(help="run id")],
    tail: Annotated[int, typer.Option(min=1, help="the last N lines of each part")] = 200,
    with_events: Annotated[
        bool, typer.Option("--events/--no-events", help="the run's events (start, phases, results) first")
    ] = True,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="go on printing what comes, until the run ends")
    ] = False,
) -> None:
    """A run's events, then its output log (stdout and stderr of its process, on whichever host or
    backend it ran). With -f, new events and output as they come, until the run ends."""
    from datetime import datetime

    from workbench.store.artifacts import run_dir
    from workbench.store.models import FINAL_STATES
    from workbench.store.queries import events, get_run, show

    def say(e) -> None:
        stamp = datetime.fromtimestamp(e.time).strftime("%Y-%m-%d %H:%M:%S")
        sys.stdout.write(f"{stamp} {e.level:<7} {printable(e.message)}\n")

    store = open_store()
    _run_ids_exist(store, [run_id])
    rec = show(store, run_id)
    path = run_dir(store.home, run_id) / "output.log"
    seen = events(store, run_id)
    if with_events:
        for e in seen[-tail:]:
            say(e)
        sys.stdout.write(f"--- output of the run's process ({path}) ---\n" if path.exists() else "")
    elif not path.exists() and not follow:
        bad_input(f"run {run_id} has no output log yet ({path})")
    offset = 0
    if path.exists():
        with path.open("rb") as f:  # the end only: a log may be gigabytes
            offset = f.seek(0, 2)
            f.seek(max(0, offset - MAX_LOG_READ))
            lines = f.read().decode("utf-8", errors="replace").splitlines()
        sys.stdout.write("".join(printable(line, keep="\t") + "\n" for line in lines[-tail:]))
    last_event = seen[-1].id if seen else 0
    try:
        while follow:
            sys.stdout.flush()
            ended = get_run(store, run_id).status in FINAL_STATES  # read first: nothing after it is lost
            for e in events(store, run_id, last_event) if with_events else []:
                say(e)
                last_event = e.id
            if path.exists() and path.stat().st_size > offset:
                with path.open("rb") as f:
                    f.seek(offset)
                    chunk = f.read(MAX_LOG_READ)
                complete = (
                    chunk[: chunk.rfind(b"\n") + 1] if not ended else chunk
                )  # whole lines while it runs
                offset += len(complete)
                text = complete.decode("utf-8", errors="replace")
                sys.stdout.write("".join(printable(line, keep="\t") + "\n" for line in text.splitlines()))
            if ended:
                break
            time.sleep(0.5)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    scheduler = store.home / "slurm" / str(rec.job_id)
    if rec.job_id and scheduler.is_dir():  # submitit's own files: the job's life before the run began
        err.print(f"submitit's files for job {rec.job_id}: {shown(scheduler)}")


MAX_LOG_READ = 8 << 20


def written(write, *args, **kwargs):
    """A store write's result; exit 2 naming what it refused (a run's state, a bad tag, a locked store)."""
    try:
        return write(*args, **kwargs)
    except (StoreError, ValueError) as e:
        bad_input(str(e))


def _run_ids_exist(store, run_ids: list[int]) -> None:
    from workbench.store.queries import get_run
    from workbench.store.queue import UnknownRun

    for r in run_ids:
        try:
            get_run(store, r)
        except UnknownRun as e:
            bad_input(str(e))


@app.command()
def cancel(run_ids: Annotated[list[int], typer.Argument(help="run ids")]) -> None:
    """Cancel queued runs at once; ask running runs to stop (they checkpoint first)."""
    from workbench.store import queue

    store = open_store()
    _run_ids_exist(store, run_ids)
    for r in run_ids:
        status = written(queue.request_cancel, store, r)
        out.print(f"run {r}: {'cancelled' if status == RunStatus.CANCELLED else 'cancel requested'}")


@app.command()
def retry(
    run_ids: Annotated[list[int], typer.Argument(help="run ids")],
    no_worker: Annotated[bool, typer.Option("--no-worker")] = False,
) -> None:
    """Queue failed, cancelled or interrupted runs again; they resume from their last checkpoint."""
    from workbench.jobs.runner import ensure_worker
    from workbench.store import queue

    store = open_store()
    _run_ids_exist(store, run_ids)
    written(queue.retry, store, run_ids)  # all or none
    for r in run_ids:
        out.print(f"run {r}: queued again")
    if not no_worker:
        ensure_worker(store)


# --- the user's labels ----------------------------------------------------------------------------


def _annotate(run_ids: list[int], done: str, **changes) -> None:
    from workbench.store import queue

    store = open_store()
    _run_ids_exist(store, run_ids)
    written(queue.annotate, store, run_ids, **changes)
    out.print(f"run(s) {', '.join(map(str, run_ids))}: {done}")


@app.command()
def tag(
    run_ids: Annotated[list[int], typer.Argument(help="run ids")],
    add: Annotated[list[str] | None, typer.Option("--add", "-a", help="a tag to add (repeatable)")] = None,
    remove: Annotated[
        list[str] | None, typer.Option("--remove", "-r", help="a tag to remove (repeatable)")
    ] = None,
) -> None:
    """Add or remove tags (`runs --where tags~best` finds them)."""
    if not add and not remove:
        bad_input("give --add TAG or --remove TAG")
    _annotate(run_ids, "tags changed", add=add or [], remove=remove or [])


@app.command()
def note(
    run_id: Annotated[int, typer.Argument(help="run id")],
    text: Annotated[str, typer.Argument(help='the note; "" clears it')],
) -> None:
    """Keep a note on a run (`show` prints it)."""
    _annotate([run_id], "note set" if text else "note cleared", note=text)


@app.command()
def rename(
    run_id: Annotated[int, typer.Argument(help="run id")],
    name: Annotated[str, typer.Argument(help="its new name")],
) -> None:
    """Give a run a new name (its results and files stay as they are)."""
    _annotate([run_id], f"renamed to {shown(name)!r}", name=name)


@app.command()
def archive(
    run_ids: Annotated[list[int], typer.Argument(help="run ids")],
    undo: Annotated[bool, typer.Option("--undo", help="bring them back")] = False,
) -> None:
    """Hide finished runs from `runs` and the TUI (`runs --archived` lists them); nothing is deleted."""
    from workbench.store.models import FINAL_STATES
    from workbench.store.queries import get_run

    store = open_store()
    _run_ids_exist(store, run_ids)
    if busy := [r for r in run_ids if get_run(store, r).status not in FINAL_STATES]:
        bad_input(f"run(s) {', '.join(map(str, busy))} not finished: cancel them first")
    _annotate(run_ids, "restored" if undo else "archived (`runs --archived` lists them)", archived=not undo)


# --- browsing ------------------------------------------------------------------------------------


def rows_table(title: str, rows: list[dict]):
    """A result table that fits the terminal without cutting a cell: as it is when it fits; turned on
    its side (a row per column) when a few rows fit that way; else one row at a time, field by field.
    Every estimate reads `mean [low, high]`, n in the header when the rows share it."""
    from rich.console import Group
    from rich.measure import Measurement

    from workbench.report import cell, readable_rows

    rows = readable_rows(rows)
    cols = [c for c in dict.fromkeys(k for r in rows for k in r) if c != "run_name"]
    names = [shown(c) for c in cols]  # user text: "[x]" is a column name, not markup
    cells = [[shown(cell(r.get(c))) for c in cols] for r in rows]
    width, unbounded = out.width, out.options.update_width(PIPED_WIDTH)  # measured whole, not clamped

    def table(header: list[str], body: list[list[str]]) -> Table:
        t = Table(
            title=title,
            header_style="bold",
            title_justify="left",
            title_style="bold",
            box=None,
            min_width=len(title),
        )  # as wide as its title at least: a title never wraps above a narrow table
        for c in header:
            t.add_column(c, no_wrap=True)
        for r in body:
            t.add_row(*r)
        return t

    def fits(t: Table) -> bool:
        return Measurement.get(out, unbounded, t).maximum <= width

    if fits(plain := table(names, cells)):
        return plain
    if 0 < len(rows) <= 8:
        turned = [[name, *values] for name, values in zip(names, zip(*cells, strict=True), strict=True)]
        if fits(side := table(["", *(f"#{i + 1}" for i in range(len(rows)))], turned)):
            return side
    blocks = []  # one row at a time, field by field: the value column folds, nothing is cut
    for i, row in enumerate(cells):
        block = Table(
            title=f"{title} #{i + 1}", title_justify="left", title_style="bold", box=None, show_header=False
        )
        block.add_column(no_wrap=True, style="dim")
        block.add_column(overflow="fold")
        for name, value in zip(names, row, strict=True):
            block.add_row(name, value)
        blocks.append(block)
    return Group(*blocks)


@app.command()
def runs(
    status: Annotated[str | None, typer.Option(help="only runs in this state")] = None,
    kind: Annotated[str | None, typer.Option(help="only runs of this kind")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="only the newest N (of those that match)")] = None,
    archived: Annotated[bool, typer.Option("--archived", help="archived runs too")] = False,
    columns: Annotated[
        str | None,
        typer.Option(
            help="comma-separated summary keys or spec fields to show instead of the headline, "
            "e.g. top1,data.source,train.steps (an estimate shows as mean [low, high])"
        ),
    ] = None,
    where: Annotated[
        str | None,
        typer.Option(
            help="only runs where every term holds: 'top1>0.9 kind=attribution dataset=moons name~seed' "
            "(= != > < >= <=, ~ contains; any summary key, spec field or id, name, kind, status)"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List runs."""
    from workbench.jobs.kinds import headline_keys, kind_names
    from workbench.report import (
        cell,
        field_cell,
        headline,
        parse_where,
        run_fields,
        shown_status,
        status_line,
    )
    from workbench.store import queue
    from workbench.store.models import RUN_STATES
    from workbench.store.queries import list_runs, phases, run_specs

    if status is not None and status not in RUN_STATES:
        bad_input(f"--status: unknown state {status!r}; one of {', '.join(RUN_STATES)}")
    try:
        conditions = parse_where(where or "")
    except ValueError as e:
        bad_input(f"--where: {shown(str(e))}")
    wanted = [c.strip() for c in (columns or "").split(",") if c.strip()]
    store = open_store()
    rows = list_runs(store, status=status, kind=kind, archived=archived)
    if kind is not None and not rows and kind not in kind_names():  # a retired kind's runs still list
        bad_input(f"--kind: unknown kind {shown(kind)!r}; one of {', '.join(kind_names())}")
    specs = run_specs(store, [r.id for r in rows]) if wanted or conditions else {}
    fields = {r.id: run_fields(r, specs.get(r.id)) for r in rows} if specs else {}
    for name in wanted + [c.field for c in conditions]:
        if rows and not any(name in f for f in fields.values()):
            known = sorted({k for f in fields.values() for k in f if not k.startswith("spec.")})
            close = difflib.get_close_matches(name, known, n=3)
            bad_input(
                f"no run here has a field {shown(name)!r}"
                + (f"; did you mean {', '.join(map(repr, close))}?" if close else "")
                + " (`workbench show RUN --json` lists a run's summary and spec)"
            )
    rows = [r for r in rows if all(c.holds(fields[r.id]) for c in conditions)]
    if limit:
        rows = rows[-limit:]

    if as_json:
        records = [
            r.as_json() | ({"columns": {c: fields[r.id].get(c) for c in wanted}} if wanted else {})
            for r in rows
        ]
        print_json(records)
        return
    table = Table(box=None, header_style="bold")
    shown_cols = ["id", "name", "kind", "status", *wanted] if wanted else [
        "id", "experiment", "name", "kind", "status", "progress", "started", "headline"
    ]  # fmt: skip
    for col in shown_cols:
        table.add_column(shown(col))
    steps = phases(store, [r.id for r in rows if r.status == RunStatus.RUNNING])
    waiting = (
        queue.queued_because(queue.live_workers(store))
        if any(r.status == RunStatus.QUEUED for r in rows)
        else None
    )
    for r in rows:
        rec = r.as_json()
        done, total = r.progress
        cells = {
            "id": str(r.id),
            "experiment": shown(r.experiment),
            "name": shown(r.name),
            "kind": r.kind,
            "status": f"[{STATUS_STYLE[r.status]}]{shown(shown_status(r, waiting))}[/]",
            "progress": shown(status_line(r.progress, steps.get(r.id), store.now()))
            if r.id in steps
            else (f"{done}/{total}" if total else ""),
            "started": (rec["started_at"] or "")[5:16].replace("T", " "),
            "headline": shown(headline(r.summary, headline_keys(r.kind))),
        }
        table.add_row(
            *(shown(cell(field_cell(fields[r.id], c))) if c in wanted else cells[c] for c in shown_cols)
        )
    if rows:
        out.print(table)
    elif status or kind or conditions:
        out.print("no runs match")
    else:
        out.print("no runs yet: `workbench submit examples/quickstart.yaml`")


@app.command()
def show(
    run_id: Annotated[int, typer.Argument(help="run id")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
    max_rows: Annotated[
        int,
        typer.Option("--rows", min=0, help="rows shown per table (0: all; --json and export: always all)"),
    ] = 100,
) -> None:
    """Show one run: spec, status, summary, result tables, artifacts."""
    from workbench.jobs.resources import RESOURCES
    from workbench.report import resources_line, shown_status
    from workbench.store import queue
    from workbench.store.queries import latest_metrics
    from workbench.store.queries import show as show_run
    from workbench.store.queue import UnknownRun

    store = open_store()
    try:
        rec = show_run(store, run_id)
    except UnknownRun as e:
        bad_input(str(e))
    if as_json:
        print_json(rec.as_json())
        return
    shown_json = rec.as_json()  # ISO times
    waiting = queue.queued_because(queue.live_workers(store)) if rec.status == RunStatus.QUEUED else None
    out.print(f"[bold]run {rec.id}[/] {shown(rec.name)}  ({rec.kind}, experiment {shown(rec.experiment)})")
    out.print(
        f"status: [{STATUS_STYLE[rec.status]}]{shown(shown_status(rec, waiting))}[/]  attempt {rec.attempt}  "
        f"device {rec.device or '-'}  "
        f"started {shown_json['started_at'] or '-'}  finished {shown_json['finished_at'] or '-'}"
    )
    if rec.status == RunStatus.RUNNING:
        newest = {k: latest_metrics(store, [rec.id], k).get(rec.id, (0, None))[1] for k in RESOURCES}
        if use := resources_line({k: v for k, v in newest.items() if v is not None}):
            out.print(f"uses: {shown(use)}")
    if rec.error:
        out.print(f"[red]error:[/] {shown(rec.error)}")
    if rec.tags or rec.archived:
        out.print(f"tags: {shown(' '.join(rec.tags)) or '-'}" + ("  (archived)" if rec.archived else ""))
    if rec.note:
        out.print(f"[bold]note[/]\n  {shown(rec.note)}")
    if rec.spec:
        import yaml

        out.print("[bold]spec[/]")
        for line in yaml.safe_dump(rec.spec, sort_keys=False, allow_unicode=True).splitlines():
            out.print(f"  {shown(line)}", soft_wrap=True)
    if rec.summary:
        out.print("[bold]summary[/]")
        from workbench.report import cell, flatten, readable

        for k, v in readable(flatten(rec.summary)).items():
            out.print(f"  {shown(k)}: {shown(cell(v))}")
    for name, rows in rec.tables.items():
        out.print(rows_table(name, rows[:max_rows] if max_rows else rows), soft_wrap=False)
        if (
            max_rows and len(rows) > max_rows
        ):  # a terminal is no place for 50 000 rows (and Rich takes minutes)
            more = len(rows) - max_rows
            out.print(
                f"[dim]... {more:,} more rows: --rows 0, or workbench export {run_id} --table {shown(name)}[/]"
            )
    if rec.artifacts:
        out.print("[bold]artifacts[/]")
        for a in rec.artifacts:
            out.print(
                shown(
                    f"  {a.kind:<10} {a.name}"
                    + (f" @ {a.step}" if a.step is not None else "")
                    + f"  {a.path}"
                )
            )


@app.command()
def export(
    run_ids: Annotated[list[int], typer.Argument(help="run ids")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="csv, md, latex or json")] = "csv",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="file (default: stdout)")] = None,
    table: Annotated[str | None, typer.Option(help="only this table (e.g. summary, samplers)")] = None,
    curves: Annotated[
        bool,
        typer.Option(
            "--curves",
            help="also each metric's curves as PNG, runs overlaid (<output stem>-curve-<metric>.png)",
        ),
    ] = False,
    samples: Annotated[
        bool, typer.Option("--samples", help="also the newest of each image artifact (<output stem>-images/)")
    ] = False,
) -> None:
    """Export runs' result tables (and a summary table) to CSV, Markdown, LaTeX or JSON; curves and sample
    images as PNG files next to them."""
    from workbench import report
    from workbench.store.queries import show as show_run
    from workbench.store.queue import UnknownRun

    if fmt not in report.FORMATS:
        bad_input(f"--format: unknown format {fmt!r}; one of {', '.join(report.FORMATS)}")
    if (curves or samples) and output is None:
        bad_input("--curves and --samples write PNG files next to --output: give --output (-o) a file name")
    store = open_store()
    try:
        records = [show_run(store, r) for r in run_ids]
    except UnknownRun as e:
        bad_input(str(e))
    tables = report.collect(records, table)
    if not tables:
        bad_input(f"--table: no table named {table!r} in run(s) {', '.join(map(str, run_ids))}")
    if output is None:
        sys.stdout.write(report.render(tables, fmt))
        return
    try:
        written = report.export_runs(store, run_ids, fmt, output, curves=curves, samples=samples, table=table)
    except OSError as e:
        bad_input(f"cannot write {output}: {e.strerror}")
    err.print("wrote " + shown(", ".join(map(str, written))))


@app.command()
def compare(
    run_ids: Annotated[list[int], typer.Argument(help="two or more run ids")],
    baseline: Annotated[
        int | None, typer.Option(help="the run the others are compared with (default: the first)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Which is better: every summary metric as a row, a column per run, and each run minus the
    baseline (with an interval where both have one); then the spec fields that differ."""
    from workbench.report import metric_comparison, spec_differences
    from workbench.store.queries import show as show_run

    if len(set(run_ids)) < 2:
        bad_input("give two or more different run ids")
    if baseline is not None and baseline not in run_ids:
        bad_input(f"--baseline {baseline} is not one of the runs compared ({', '.join(map(str, run_ids))})")
    store = open_store()
    _run_ids_exist(store, run_ids)
    records = [show_run(store, r) for r in dict.fromkeys(run_ids)]
    base = 0 if baseline is None else [r.id for r in records].index(baseline)
    metrics, spec = metric_comparison(records, base), spec_differences(records)
    if as_json:
        print_json({"baseline": records[base].id, "metrics": metrics, "spec_differences": spec})
        return
    out.print(rows_table(f"metrics (each run minus run {records[base].id})", metrics), soft_wrap=False)
    if spec:
        out.print(rows_table("spec fields that differ", spec), soft_wrap=False)


@app.command("report")
def report_page(
    targets: Annotated[list[str], typer.Argument(help="run ids, or experiment names (all their runs)")],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="the file to write: page.html (one file), or page.md (pictures in page_files/)",
        ),
    ],
    force: Annotated[bool, typer.Option("--force", help="replace an existing report")] = False,
) -> None:
    """A report of runs to copy to a laptop (spec, summary, tables with intervals, curves, images): one
    self-contained HTML page (no scripts, nothing fetched), or Markdown with its pictures beside it."""
    import shutil

    from workbench.report import html_report, markdown_report
    from workbench.store.queries import list_runs

    output = output.expanduser()
    fmt = {".html": "html", ".htm": "html", ".md": "md", ".markdown": "md"}.get(output.suffix.lower())
    if fmt is None:
        bad_input(f"--output: {shown(output.name)!r}: name a .html or .md file")
    store = open_store()
    run_ids: list[int] = []
    for target in targets:
        if target.isdigit():
            _run_ids_exist(store, [int(target)])
            run_ids.append(int(target))
        else:
            found = [r.id for r in list_runs(store) if r.experiment == target]
            if not found:
                bad_input(
                    f"{shown(target)!r} is neither a run id nor an experiment with runs (`workbench runs`)"
                )
            run_ids += found
    run_ids = list(dict.fromkeys(run_ids))
    folder = output.with_name(f"{output.stem}_files")  # Markdown's pictures
    if not output.parent.is_dir():
        bad_input(f"no folder {shown(str(output.parent))} to write {shown(output.name)} in")
    for path in [output] + ([folder] if fmt == "md" else []):
        if path.exists() and not force:
            bad_input(f"{shown(str(path))} exists; --force replaces it")
    if (
        fmt == "md"
        and folder.exists()
        and not (folder.is_dir() and all(f.is_file() and f.suffix == ".png" for f in folder.iterdir()))
    ):
        bad_input(f"{shown(str(folder))} holds more than a report's pictures; not replacing it")
    title = f"workbench: {', '.join(targets)}"
    if fmt == "html":
        page, files = html_report(store, run_ids, title), {}
    else:
        page, files = markdown_report(store, run_ids, title, folder.name)
    if files:  # the pictures first, in a folder of their own, swapped in whole
        staging = output.with_name(f".{folder.name}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        for name, data in files.items():
            (staging / name).write_bytes(data)
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    temporary = output.with_name(f".{output.name}.tmp")
    temporary.write_text(page, encoding="utf-8")
    temporary.replace(output)  # a reader never sees half a page
    extra = f" and {len(files)} picture(s) in {shown(str(folder))}" if files else ""
    err.print(f"wrote {shown(str(output))} ({len(page) >> 10} KiB, {len(run_ids)} run(s)){extra}")


IMAGE_MODES = ("auto", "halfcell", "unicode")


# --- attribution models --------------------------------------------------------------------------


def attribution_model(run_id: int) -> tuple[Path, Path, Path | None, FinishedRun]:
    """The weights, config and familiarity files of a succeeded attribution run (familiarity: None for a
    run from before it), and the run: found as a kind finds a run it builds on (jobs.context.finished_run)."""
    from workbench.jobs.attributor import CONFIG, FAMILIARITY, WEIGHTS
    from workbench.jobs.context import UnusableRun, finished_run

    try:
        run = finished_run(open_store(), run_id, ("attribution",))
        familiarity = run.artifacts.get(FAMILIARITY)
        familiarity = familiarity if familiarity is not None and familiarity.is_file() else None
        return run.artifact(WEIGHTS), run.artifact(CONFIG), familiarity, run
    except UnusableRun as e:
        bad_input(str(e))


@app.command()
def attribute(
    model: Annotated[str, typer.Argument(help="an attribution run id, or a published model folder")],
    images: Annotated[list[Path], typer.Argument(help="image files")],
    top: Annotated[int, typer.Option(min=1, help="how many generators to list per image")] = 5,
    batch_size: Annotated[int, typer.Option(min=1, help="images per batch")] = 16,
    device: Annotated[str, typer.Option(help="auto (cuda when there is one), cpu or cuda")] = "auto",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Say which generator made each image, with the most probable generators. An image that cannot be
    read (or is too large) is refused alone, named on stderr; the rest are answered; exit 2 then."""
    from workbench.jobs.attributor import Attributor, ModelFilesError

    try:
        if model.isdigit():
            weights, config, familiarity, _ = attribution_model(int(model))
            attributor = Attributor.load(weights, config, device, familiarity)
        elif Path(model).is_dir():
            attributor = Attributor.from_folder(Path(model), device)
        else:
            bad_input(f"{model!r} is neither a run id nor a model folder")
        results = attributor.attribute(images, top=top, batch_size=batch_size)
    except ModelFilesError as e:
        bad_input(str(e))
    refused = [r for r in results if r.error is not None]
    for r in refused:  # the others are still answered; the exit code says not all were
        err.print(f"error: refused {shown(r.error)}")
    unfamiliar = [r for r in results if r.unfamiliar]
    if attributor.familiarity is None:
        err.print(
            "note: this model has no familiarity.safetensors (made before it existed): images unlike its "
            "training set are not flagged; retrain to have them flagged"
        )
    elif unfamiliar:
        err.print(
            f"[yellow]warning:[/] {len(unfamiliar)} of {len(results)} image(s) are further from the model's "
            f"training images than 99 % of its held-out images: their labels are unreliable (marked `unlike`)"
        )
    if as_json:
        print_json([r.as_dict() for r in results])
    else:
        table = Table("image", "generator", "probability", f"top {top}", "familiar", box=None)
        for r in results:
            if r.error is None:
                table.add_row(
                    shown(r.image),
                    shown(r.generator),
                    f"{r.probability:.3f}",
                    shown(", ".join(f"{g} {p:.3f}" for g, p in r.top)),
                    "-"
                    if r.familiar is None
                    else (f"[yellow]unlike ({r.familiar:.1%})[/]" if r.unfamiliar else f"{r.familiar:.0%}"),
                )
            else:
                table.add_row(shown(r.image), "[red]refused[/]", "", "", "")
        out.print(table)
    if refused:
        raise typer.Exit(2)


@app.command()
def publish(
    run_id: Annotated[int, typer.Argument(help="a succeeded attribution or images run")],
    repo: Annotated[
        str | None, typer.Option(help="Hugging Face model repository, e.g. you/dragon-attribution")
    ] = None,
    to_folder: Annotated[
        Path | None, typer.Option(help="write the files here (without --repo: only here)")
    ] = None,
    public: Annotated[
        bool, typer.Option("--public", help="create the repository public (default: private)")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="write into a --to-folder that is not empty (our files only)")
    ] = False,
    token: Annotated[
        str | None, typer.Option(envvar="HF_TOKEN", help="Hub token (default: the saved login)")
    ] = None,
) -> None:
    """Publish a run's model, exactly its files: an attribution run's model.safetensors, config.json,
    familiarity.safetensors (where the run made one) and model card README.md; an images run's UNet in
    diffusers' layout (config.json, diffusion_pytorch_model.safetensors, scheduler/scheduler_config.json,
    README.md), which `model: {pretrained: ...}` and diffusers read. A new Hub repository is private
    unless --public."""
    import tempfile

    from workbench.jobs.attributor import PublishError, PublishRefused, upload

    if repo is None and to_folder is None:
        bad_input("give --repo NAME (upload to the Hub), --to-folder DIR (write the files), or both")
    if repo is not None and (repo.count("/") != 1 or not all(repo.split("/"))):
        bad_input(f"--repo {repo!r}: give owner/name")
    write, files = publication(run_id)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            if to_folder is not None:
                write(to_folder, force)
                out.print(f"wrote {shown(str(to_folder))} ({', '.join(files)})")
            if repo is not None:  # from a folder of its own: nothing else the user has can go along
                url = upload(write(Path(tmp) / "model", False), repo, token, public, files=files)
                out.print(
                    f"published run {run_id} to {shown(repo)} ({'public' if public else 'private'}): {shown(url)}"
                )
        except PublishRefused as e:  # nothing was written or sent
            bad_input(str(e))
        except PublishError as e:
            err.print(f"[red]error:[/red] {shown(str(e))}")
            raise typer.Exit(1) from None


def publication(run_id: int):
    """(write(folder, force) -> folder, the files it writes) for a succeeded attribution or images run."""
    from workbench.jobs.context import UnusableRun, finished_run

    try:
        found = finished_run(open_store(), run_id, ("attribution", "images"))
    except UnusableRun as e:
        bad_input(str(e))
    if found.kind == "images":
        from workbench.jobs.diffusion import image_model, pretrained
        from workbench.jobs.diffusion.schedules import make_schedule

        try:
            weights = found.artifact(image_model.MODEL_FILE)
        except UnusableRun as e:
            bad_input(str(e))
        spec = image_model.ImageModelSpec.model_validate(found.spec)
        data = image_model.load_data(spec)  # its shape and class names, as the run had them
        model = image_model.load_model(weights, spec, data, "cpu")
        schedule = make_schedule(spec.schedule, spec.timesteps, clip_sample=True)
        classes = data.class_names if model.num_classes else []
        card = pretrained.diffusers_card(found.id, found.name, found.spec, found.summary, classes)
        return (
            lambda folder, force: pretrained.write_published_folder(folder, model, schedule, card, force),
            pretrained.DIFFUSERS_FILES,
        )
    from workbench.jobs.attributor import CARD, CONFIG, FAMILIARITY, WEIGHTS, model_card, write_folder

    weights, config_path, familiarity, found = attribution_model(run_id)
    config = json.loads(config_path.read_text())
    card = model_card(config, found.id, found.name)
    return (
        lambda folder, force: write_folder(
            folder, weights, config, card, force=force, familiarity=familiarity
        ),
        (WEIGHTS, CONFIG, *([FAMILIARITY] if familiarity else []), CARD),
    )


@app.callback(invoke_without_command=True)
def _default(
    ctx: typer.Context,
    images: Annotated[
        str,
        typer.Option(
            envvar="WORKBENCH_IMAGES",
            help="image rendering: auto (Kitty/Sixel where the terminal supports them), halfcell or unicode",
        ),
    ] = "auto",
) -> None:
    """Bare `workbench` opens the TUI (the runs list when not on a terminal)."""
    if ctx.invoked_subcommand is not None:
        return
    if images not in IMAGE_MODES:
        bad_input(f"--images: unknown mode {images!r}; one of {', '.join(IMAGE_MODES)}")
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        runs(status=None, kind=None, limit=None, as_json=False)
        return
    from workbench.tui.app import run_tui

    run_tui(open_store(), image_mode=images)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

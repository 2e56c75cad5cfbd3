"""Text from outside (class names from folders and shards, spec values, run names, errors) never reaches a
terminal or a spreadsheet as control: it is refused on intake where it can be, and shown escaped by every
face (CLI, TUI, exports) where it got into the store anyway (an older store, a kind's own strings)."""

from __future__ import annotations

import csv
import io
import json

import pytest

from workbench.jobs.context import RunContext
from workbench.store import queue
from workbench.text import printable, spreadsheet_cell

TITLE = "\x1b]0;pwned\x07"  # sets the terminal's title
RED = "\x1b[31m"
RLO = "\u202e"  # right-to-left override: "gpj.exe" shows as "exe.jpg"
HOSTILE = f"sd{TITLE}{RED}x{RLO}gpj.exe"
RAW = ("\x1b", "\x07", "\u202e")


def raw_in(text: str) -> list[str]:
    return [repr(c) for c in RAW if c in text]


def screens_doc():
    import importlib.util

    from tests.conftest import ROOT

    spec = importlib.util.spec_from_file_location("screens_doc", ROOT / "docs" / "screens.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_printable_escapes_what_a_terminal_would_obey_and_nothing_else():
    assert printable("plain text, ünïcode, 漢字 and [brackets]") == "plain text, ünïcode, 漢字 and [brackets]"
    assert printable(HOSTILE) == "sd\\x1b]0;pwned\\x07\\x1b[31mx\\u202egpj.exe"
    assert printable("a\tb\nc", keep="\t") == "a\tb\\x0ac"
    assert printable("\U000e0001 \x00") == "\\U000e0001 \\x00"


def test_spreadsheet_cells_never_start_a_formula():
    assert [spreadsheet_cell(v) for v in ("=1+1", "+1", "-2+3", "@SUM(A1)", "ok", "a=b")] == [
        "'=1+1",
        "'+1",
        "'-2+3",
        "'@SUM(A1)",
        "ok",
        "a=b",
    ]
    assert spreadsheet_cell(-2.5) == -2.5 and spreadsheet_cell(3) == 3 and spreadsheet_cell(None) is None


@pytest.fixture
def hostile_run(store):
    """A run whose name, class names, table column, error and events carry escapes, stored as an older
    version or a careless kind could have (past the intake checks)."""
    _, (rid,) = queue.submit(
        store,
        name=f"exp{RED}",
        kind="sleep",
        spec_text="kind: sleep\n",
        sweep={},
        runs=[queue.NewRun(f"run {HOSTILE} [/x]", {"kind": "sleep", "note": HOSTILE})],
    )
    queue.claim(store, "w", "cpu")
    ctx = RunContext(store, rid)
    ctx.table(
        "per_class",
        [{"class": HOSTILE, f"col{RLO}": 1}, {"class": '=HYPERLINK("http://x")', f"col{RLO}": 2}],
    )
    ctx.summary(best={HOSTILE: 0.5})
    for step in (1, 2):
        ctx.log(step, **{f"loss/{HOSTILE}": 1.0 / step})
    ctx.flush()
    ctx.event(f"saw {HOSTILE}")
    queue.finish(store, rid, "w", "failed", f"ValueError: {HOSTILE}")
    return rid


def test_the_cli_shows_hostile_text_escaped(hostile_run, cli, tmp_path):
    for args in (("show", hostile_run), ("runs",), ("export", hostile_run, "--format", "md")):
        code, out, err = cli(*args)
        assert code == 0, err
        assert not raw_in(out + err), (args, raw_in(out + err))
        assert "\\x1b" in out, args  # shown, visibly
    code, out, _ = cli("export", hostile_run, "--format", "latex")
    assert code == 0 and not raw_in(out)
    code, out, _ = cli("show", hostile_run, "--json")
    assert code == 0 and not raw_in(out)
    assert json.loads(out)["tables"]["per_class"][0]["class"] == HOSTILE  # the data itself is kept exact


def test_csv_export_is_safe_to_open_in_a_spreadsheet(hostile_run, cli, tmp_path):
    code, out, err = cli("export", hostile_run, "--format", "csv", "--table", "per_class")
    assert code == 0, err
    assert not raw_in(out)
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["run", "run_name", "class", "col\\u202e"]
    assert [r[2] for r in rows[1:]] == [printable(HOSTILE), '\'=HYPERLINK("http://x")']
    assert all(not c.startswith(("=", "+", "@")) for r in rows for c in r)


async def test_the_tui_shows_hostile_text_escaped(hostile_run, store):
    from tests.test_tui import make_app, wait_until

    as_text = screens_doc().as_text

    app = make_app(store)
    async with app.run_test(size=(160, 40)) as pilot:
        await wait_until(pilot, lambda: "gpj.exe" in as_text(app))
        text = as_text(app)
        assert not raw_in(text) and "\\x1b" in text and "[/x]" in text, text
        await pilot.press("enter")  # the run's page: the overview with its error, then the log's events
        await wait_until(pilot, lambda: "ValueError: sd" in as_text(app))
        assert not raw_in(as_text(app))
        app.screen.action_tab("log")
        await wait_until(pilot, lambda: "saw sd" in as_text(app))
        assert not raw_in(as_text(app))
        app.screen.action_tab("tables")
        await wait_until(pilot, lambda: "per_class" in as_text(app) or "col" in as_text(app))
        assert not raw_in(as_text(app))
        app.screen.action_tab("curves")  # a metric named after a class: picker and plot title
        await wait_until(pilot, lambda: "loss/sd" in as_text(app))
        assert not raw_in(as_text(app)), as_text(app)


# --- refused on intake -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, line",
    [
        ('kind: sleep\nname: "exp\\e[31m"\n', 2),  # YAML's own escape for ESC
        ('kind: sleep\nsweep:\n  seed: [1, 2]\n  steps: [5, "\\u202e"]\n', 4),
        ('kind: sleep\nname: "a\\x07"\n', 2),
    ],
)
def test_escapes_written_as_yaml_escapes_are_refused(text, line):
    from workbench.jobs.jobfile import SpecError, load_job

    with pytest.raises(SpecError, match=rf"<spec>:{line}: control or format character U\+"):
        load_job(text)


def test_a_run_name_is_checked_whole_and_kept_to_its_column():
    """The review's case: an experiment name of 190 characters and a sweep value with ESC past the 200th
    character of the run name (only the first 200 were checked) is refused; a long clean sweep label is
    cut to the store's column with an ellipsis."""
    from workbench.jobs.jobfile import SpecError, _shortened, load_job
    from workbench.jobs.spec import MAX_RUN_NAME_LENGTH

    with pytest.raises(SpecError, match=r"U\+001B"):
        load_job(f'kind: sleep\nname: {"x" * 190}\nsweep:\n  device: ["cpu\\e[31m"]\n')
    sweep = {
        "seconds": [0.12345678901234566],
        "fail_at_step": [12345678901234567890],
        "hang_at_step": [12345678901234567890],
        "seed": [2147483647, 2147483646],
        "checkpoint_every": [999999],
    }
    lines = "".join(f"  {k}: {v}\n" for k, v in sweep.items())
    job = load_job(f"kind: sleep\nname: {'x' * 190}\nsweep:\n{lines}")
    names = [name for name, _ in job.runs]
    assert len(names) == 2 and all(len(n) == MAX_RUN_NAME_LENGTH for n in names)
    assert names[0].startswith("x" * 20) and "… seconds=" in names[0]  # the experiment's name gave way
    assert names[0].endswith("seed=2147483647 checkpoint_every=999999") and names[0] != names[1]
    label = " ".join(f"f{i}={i:08d}" for i in range(40))  # 519 characters: its middle gives way
    short = _shortened(f"e {label}", "e", label)
    assert (
        len(short) == MAX_RUN_NAME_LENGTH
        and short.startswith("f0=00000000 f1=")
        and short.endswith("f39=00000039")
    )


def test_generator_names_from_folders_and_shards_are_refused_unless_printable(tmp_path):
    from PIL import Image

    from workbench.jobs.data.attribution import folder_rows, webdataset_rows
    from workbench.jobs.data.images import DataError

    for name in ("real", f"sd{TITLE}"):
        (tmp_path / name).mkdir()
        for i in range(2):
            Image.new("RGB", (8, 8)).save(tmp_path / name / f"{i}.png")
    with pytest.raises(DataError, match=r"the generator name 'sd\\x1b\]0;pwned\\x07' is not printable"):
        folder_rows(tmp_path, 0.5, 0)
    rows = [{"__key__": "k0", "__url__": "a.tar", "png": b"", "model.txt": f"gen{RLO}"}]
    with pytest.raises(DataError, match=r"sample 'k0' of a.tar: the generator name 'gen\\u202e'"):
        list(webdataset_rows(rows, None, None))
    rows[0]["model.txt"] = "g" * 201
    with pytest.raises(DataError, match=r"at most 200 characters"):
        list(webdataset_rows(rows, None, None))


def test_spec_files_are_read_no_further_than_their_bound_and_values_are_not_markup(cli, tmp_path):
    """Catches: `validate /dev/zero` reading until memory runs out (the 1 MiB check came after the read);
    a value like `[/x]` in an error rendered as Rich markup (MarkupError traceback, exit 1)."""
    code, _, err = cli("validate", "/dev/zero")
    assert code == 2 and "larger than 1048576 bytes" in err
    spec = tmp_path / "job.yaml"
    spec.write_text('kind: sleep\nsteps: "[/x] [bold]"\n')
    code, _, err = cli("validate", spec)
    assert code == 2 and "[/x] [bold]" in err, err
    spec.write_text("kind: sleep\nname: a [/x] b\n")
    code, out, err = cli("validate", spec)
    assert code == 0 and "a [/x] b" in out, err


def test_mount_points_with_escaped_characters_are_recognised():
    """/proc/self/mountinfo writes a space as \\040, a tab as \\011, a backslash as \\134: a store under
    such a network mount is refused like any other."""
    from workbench.store.db import mount_type

    info = (
        "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
        "40 22 0:35 / /mnt/lab\\011share\\134x rw - nfs4 srv:/x rw\n"
        "41 22 0:36 / /mnt/my\\040data rw - cifs //srv/d rw\n"
    )
    assert mount_type("/mnt/lab\tshare\\x/wb", info) == "nfs4"
    assert mount_type("/mnt/my data/wb", info) == "cifs"
    assert mount_type("/home/wb", info) == "ext4"


def test_logs_show_a_runs_output_escaped(hostile_run, store, cli):
    """A run's output.log holds whatever its process printed (a class name, a library's colours)."""
    from workbench.store.artifacts import run_dir

    log = run_dir(store.home, hostile_run) / "output.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"epoch 1\tloss 0.5\nclass {HOSTILE}\r\nprogress 50%\rprogress 100%\n")
    code, out, err = cli("logs", hostile_run, "--no-events")
    assert code == 0, err
    assert not raw_in(out) and "\r" not in out
    assert out.splitlines() == [
        "epoch 1\tloss 0.5",
        f"class {printable(HOSTILE)}",
        "progress 50%",
        "progress 100%",
    ]

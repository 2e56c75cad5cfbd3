"""Bad input: every case exits 2 with a message naming the problem, and nothing stored changes."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from tests.conftest import write_spec
from workbench.store.models import Base

BAD_SPECS = [
    (
        "malformed yaml",
        "kind: ddpm\ntrain: [1, 2\nseed: 3\n",
        "job.yaml:2: malformed YAML: while parsing a flow",
    ),
    ("tab indentation", "kind: ddpm\ntrain:\n\tsteps: 3\n", "malformed YAML"),
    ("not a mapping", "- kind\n- ddpm\n", "mapping"),
    ("empty file", "", "mapping"),
    ("scalar document", "ddpm\n", "mapping"),
    ("missing kind", "seed: 1\n", "kind: missing"),
    ("unknown kind", "kind: gan\n", "unknown kind 'gan'"),
    ("kind not a string", "kind: [ddpm]\n", "unknown kind"),
    ("wrong type steps", "kind: ddpm\ntrain:\n  steps: many\n", "job.yaml:3: train.steps"),
    ("negative steps", "kind: ddpm\ntrain:\n  steps: -5\n", "job.yaml:3: train.steps"),
    ("absurd steps", "kind: ddpm\ntrain:\n  steps: 1000000000000\n", "train.steps"),
    ("zero batch", "kind: ddpm\ntrain: {batch_size: 0}\n", "train.batch_size"),
    ("absurd batch", "kind: ddpm\ntrain: {batch_size: 1000000000}\n", "train.batch_size"),
    ("negative lr", "kind: ddpm\ntrain: {lr: -0.1}\n", "train.lr"),
    ("lr string", "kind: ddpm\ntrain: {lr: fast}\n", "train.lr"),
    ("unknown dataset", "kind: ddpm\ndataset: imagenet\n", "job.yaml:2: dataset"),
    ("unknown field", "kind: ddpm\nepochs: 3\n", "epochs"),
    (
        "unknown nested field",
        "kind: ddpm\ntrain:\n  stepz: 3\n",
        "train.stepz: Extra inputs are not permitted (got 3); did you mean 'steps'?",
    ),
    ("unknown preset", "kind: ddpm\npreset: huge\n", "preset"),
    (
        "unknown sampler",
        "kind: ddpm\nsample:\n  samplers:\n    - {name: plms, steps: 10}\n",
        "sample.samplers.0.name",
    ),
    (
        "zero sampler steps",
        "kind: ddpm\nsample:\n  samplers: [{name: ddim, steps: 0}]\n",
        "sample.samplers.0.steps",
    ),
    ("label dropout > 1", "kind: ddpm\ntrain: {label_dropout: 1.5}\n", "train.label_dropout"),
    ("empty guidance list", "kind: ddpm\nsample: {guidance_scales: []}\n", "sample.guidance_scales"),
    ("guidance not a list", "kind: ddpm\nsample: {guidance_scales: 3}\n", "sample.guidance_scales"),
    ("negative n_samples", "kind: ddpm\nsample: {n_samples: -10}\n", "sample.n_samples"),
    ("one timestep", "kind: ddpm\ntimesteps: 1\n", "timesteps"),
    ("unknown schedule", "kind: ddpm\nschedule: sigmoid\n", "schedule"),
    ("bogus device", "kind: ddpm\ndevice: tpu\n", "device"),
    ("negative seed", "kind: ddpm\nseed: -1\n", "seed"),
    ("zero width", "kind: ddpm\nmodel: {width: 0}\n", "model.width"),
    ("odd time_dim", "kind: ddpm\nmodel: {time_dim: 33}\n", "model.time_dim"),
    ("sweep missing nested field", "kind: ddpm\nsweep:\n  train.lrr: [0.1]\n", "job.yaml:3: sweep.train.lrr"),
    ("sweep missing top field", "kind: ddpm\nsweep:\n  epochs: [1, 2]\n", "'epochs' is not a field"),
    ("sweep through a leaf", "kind: ddpm\nsweep:\n  seed.value: [1]\n", "seed.value"),
    ("sweep not a list", "kind: ddpm\nsweep:\n  seed: 3\n", "non-empty list"),
    ("sweep empty list", "kind: ddpm\nsweep:\n  seed: []\n", "non-empty list"),
    ("sweep invalid value", "kind: ddpm\nsweep:\n  train.steps: [10, -1]\n", "job.yaml:3: train.steps"),
    ("sweep over kind", "kind: ddpm\nsweep:\n  kind: [sleep]\n", "cannot be swept"),
    ("sweep not a mapping", "kind: ddpm\nsweep: [1, 2]\n", "sweep"),
    (
        "sweep too large",
        "kind: sleep\nsweep:\n  seed: [" + ",".join(map(str, range(101))) + "]\n"
        "  steps: [" + ",".join(map(str, range(1, 102))) + "]\n",
        "combinations",
    ),
    ("sleep negative seconds", "kind: sleep\nseconds: -1\n", "seconds"),
    ("sleep absurd seconds", "kind: sleep\nseconds: 1e12\n", "seconds"),
    ("name too long", "kind: sleep\nname: " + "x" * 300 + "\n", "name"),
    # The class of hostile or broken documents: structure, size, characters, numbers.
    ("deeply nested flow", "kind: sleep\nx: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    (
        "deeply nested block",
        "kind: sleep\n" + "".join("  " * i + f"a{i}:\n" for i in range(40)) + "  " * 40 + "b: 1\n",
        "job.yaml:34: nested more than 32 levels",
    ),
    (
        "billion laughs",
        "a: &a [x,x,x,x,x,x,x,x,x,x]\n"
        + "".join(
            f"{n}: &{n} [" + ",".join([f"*{p}"] * 10) + "]\n" for p, n in zip("abcd", "bcde", strict=True)
        )
        + "kind: sleep\n",
        "more than 100000 values",
    ),
    ("NUL in name", 'kind: sleep\nname: "a\\0b"\n', "job.yaml:2: control or format character U+0000"),
    ("escape sequence in name", 'kind: sleep\nname: "x\\e[2J"\n', "U+001B"),
    ("bidi override in name", 'kind: sleep\nname: "a\\u202eb"\n', "U+202E"),
    ("blank name", "kind: sleep\nname: '  '\n", "is blank"),
    ("escape sequence swept into a name", 'kind: sleep\nsweep:\n  name: ["a\\e[2J"]\n', "U+001B"),
    (
        "duplicate key",
        "kind: sleep\nsteps: 3\nsteps: 4\n",
        "job.yaml:3: duplicate key 'steps' (first on line 2)",
    ),
    (
        "duplicate nested key",
        "kind: images\ntrain:\n  lr: 0.1\n  lr: 0.2\n",
        "job.yaml:4: duplicate key 'lr'",
    ),
    ("a 5000-digit integer", "kind: sleep\nseed: " + "9" * 5000 + "\n", "cannot be read"),
    ("a float past double range", "kind: sleep\nseconds: 1e400\n", "seconds"),
    ("a 2 MB document", "kind: sleep\nname: " + "x" * 2_000_000 + "\n", "larger than 1048576 bytes"),
    ("raw control character", "kind: sleep\x07\n", "job.yaml:1: control character U+0007"),
    ("threads zero", "kind: sleep\nthreads: 0\n", "threads"),
    ("no_progress_minutes too small", "kind: sleep\nno_progress_minutes: 0\n", "no_progress_minutes"),
]


def snapshot(store) -> dict[str, int]:
    with store.read() as s:
        return {t.name: s.scalar(select(func.count()).select_from(t)) for t in Base.metadata.sorted_tables}


@pytest.fixture
def seeded(store, cli, tmp_path):
    """A store that already holds one experiment, so 'unchanged' means something."""
    code, _, _ = cli("submit", write_spec(tmp_path, "kind: sleep\n", "ok.yaml"), "--no-worker")
    assert code == 0
    return snapshot(store)


@pytest.mark.parametrize(("label", "text", "expected"), BAD_SPECS, ids=[c[0] for c in BAD_SPECS])
def test_bad_spec_exits_2_and_changes_nothing(label, text, expected, seeded, store, cli, tmp_path):
    spec = write_spec(tmp_path, text)
    for command in (["validate", spec], ["submit", spec, "--no-worker"]):
        code, out, err = cli(*command)
        assert code == 2, (label, out, err)
        assert expected in err, (label, err)
    assert snapshot(store) == seeded


@pytest.mark.parametrize(
    ("label", "args", "expected"),
    [
        ("missing file", ["submit", "nope.yaml", "--no-worker"], "cannot read nope.yaml"),
        ("directory", ["validate", "."], "cannot read"),
        ("unknown run show", ["show", "999"], "no run with id 999"),
        ("unknown run cancel", ["cancel", "999"], "no run with id 999"),
        ("unknown run retry", ["retry", "999", "--no-worker"], "no run with id 999"),
        ("unknown run export", ["export", "999"], "no run with id 999"),
        ("bad export format", ["export", "1", "--format", "xlsx"], "unknown format"),
        ("unknown table", ["export", "1", "--table", "nope"], "no table named"),
        ("bad status filter", ["runs", "--status", "done"], "unknown state"),
        ("bad devices", ["worker", "--devices", "tpu"], "--devices"),
        ("retry a queued run", ["retry", "1", "--no-worker"], "only failed, cancelled, interrupted"),
        ("run id not a number", ["show", "abc"], "run_id"),
    ],
)
def test_bad_command_input_exits_2(label, args, expected, seeded, store, cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(*args)
    assert code == 2, (label, out, err)
    assert expected in err, (label, err)
    assert snapshot(store) == seeded


def test_binary_file_is_rejected(seeded, store, cli, tmp_path):
    p = tmp_path / "bin.yaml"
    p.write_bytes(b"\xff\xfe\x00garbage")
    code, _, err = cli("submit", p, "--no-worker")
    assert code == 2 and "cannot read" in err
    assert snapshot(store) == seeded


def test_cancel_finished_run_exits_2(store, cli, tmp_path):
    cli("submit", write_spec(tmp_path, "kind: sleep\n"), "--no-worker")
    assert cli("cancel", "1")[0] == 0  # queued -> cancelled at once
    code, _, err = cli("cancel", "1")
    assert code == 2 and "cancelled" in err


def test_a_file_name_with_an_escape_sequence_is_not_an_experiment_name(seeded, store, cli, tmp_path):
    """The experiment is named after the file when the spec names none: that name is checked too."""
    code, _, err = cli("submit", write_spec(tmp_path, "kind: sleep\n", "evil\x1b[2J.yaml"), "--no-worker")
    assert code == 2 and "U+001B" in err
    assert snapshot(store) == seeded

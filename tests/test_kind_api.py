"""The kind API: the README's example kind runs through a real worker, and kinds declare their headline.
(The import rules, kinds never importing kinds among them, are in test_layering.py.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from tests.conftest import ROOT, subprocess_env, wb_command, write_spec


def readme_kind() -> str:
    """The python block under the README's "Writing a new kind"."""
    section = (ROOT / "README.md").read_text().split("## Writing a new kind", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_kind_runs_through_a_worker(home, tmp_path):
    """Written as the README says, outside the package: submitted, run by a worker, listed by its headline."""
    kinds = tmp_path / "my_kinds"
    kinds.mkdir()
    (kinds / "darts.py").write_text(readme_kind())
    env = subprocess_env(home, WORKBENCH_KINDS_PATH=str(kinds))
    spec = write_spec(tmp_path, "kind: darts\nrounds: 4\ndarts: 500\n")
    out = subprocess.run(
        wb_command("submit", spec, "--no-worker", "--json"), env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    (rid,) = json.loads(out.stdout)["run_ids"]
    subprocess.run(
        wb_command("worker", "--devices", "cpu", "--once"),
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    rec = json.loads(
        subprocess.run(
            wb_command("show", rid, "--json"), env=env, check=True, capture_output=True, text=True
        ).stdout
    )
    assert rec["status"] == "succeeded", rec["error"]
    rows = rec["tables"]["rounds"]
    assert [r["round"] for r in rows] == [0, 1, 2, 3]
    assert all(abs(r["pi"] * 500 / 4 - round(r["pi"] * 500 / 4)) < 1e-9 for r in rows)  # 4 * hits / 500
    s = rec["summary"]
    assert s["pi_n"] == 4 and abs(s["pi"] - sum(r["pi"] for r in rows) / 4) < 1e-12
    assert s["pi_ci"][0] < s["pi"] < s["pi_ci"][1] and 2.9 < s["pi"] < 3.4
    listed = subprocess.run(wb_command("runs"), env=env, check=True, capture_output=True, text=True).stdout
    assert f"pi={s['pi']:.4g} [" in listed  # its HEADLINE, with the interval
    bad = write_spec(tmp_path, "kind: darts\nrounds: 1\n", "bad.yaml")
    out = subprocess.run(wb_command("submit", bad, "--no-worker"), env=env, capture_output=True, text=True)
    assert out.returncode == 2 and "rounds" in out.stderr and "bad.yaml:2" in out.stderr


def test_each_kind_names_headline_keys_its_summary_has():
    from workbench.jobs.kinds import headline_keys, kind_names

    declared = {k: headline_keys(k) for k in kind_names()}
    assert declared["images"] == ("classifier_fid",) and declared["sampling"] == ("reference_classifier_fid",)
    assert declared["ddpm"][0] == "energy_distance_ratio" and declared["sleep"] == ()
    assert headline_keys("no_such_kind") == ()


def test_headline_keys_are_read_without_importing_the_kind(tmp_path):
    """The runs list asks for them before its first page shows: importing a kind (pydantic, its Spec)
    there cost ~0.1 s of the TUI's start. A HEADLINE that is not a literal still works, by import."""
    (tmp_path / "literal.py").write_text('import sys\nHEADLINE = ("acc", "loss")\n')
    (tmp_path / "computed.py").write_text('HEADLINE = tuple(["acc"] + ["f1"])\n')
    code = (
        "import sys; from workbench.jobs.kinds import headline_keys as h; "
        "print(h('ddpm'), h('literal'), 'workbench.jobs.kinds.ddpm' in sys.modules, 'workbench.jobs.kinds.literal' in sys.modules, "
        "'pydantic' in sys.modules, h('computed'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "WORKBENCH_KINDS_PATH": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    )
    expected = "('energy_distance_ratio', 'energy_distance') ('acc', 'loss') False False False ('acc', 'f1')"
    assert out.stdout.strip() == expected


def test_headline_prefers_the_kind_keys_then_the_first_number():
    from workbench.report import headline

    summary = {"nfe": 20, "classifier_fid": 3.25, "classifier_fid_ci": [2.5, 4.0]}
    assert headline(summary, ("classifier_fid",)) == "classifier_fid=3.25 [2.5, 4]"
    assert headline(summary) == "nfe=20"
    assert headline({"flag": True}) == ""

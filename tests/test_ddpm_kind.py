"""The ddpm kind end to end through the CLI and a worker, at test size and at quickstart size."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import ROOT, subprocess_env, wb_command, write_spec

TINY = """
kind: ddpm
dataset: gaussians
n_train: 4000
n_test: 400
model: {width: 32, depth: 2}
train: {steps: 400, batch_size: 256, lr: 0.003, checkpoint_every: 200}
sample:
  n_samples: 100
  eval_sets: 4
  guidance_scales: [0.0, 1.0, 3.0]
  samplers: [{name: ddpm, steps: 200}, {name: ddim, steps: 20}]
"""


def run_spec(home: Path, *specs: Path, **env_extra: str) -> list[dict]:
    """Submit each spec, in order, run one worker until the queue is empty, and return each run's
    `show --json` (a later spec may name an earlier one's run by its experiment)."""
    env = subprocess_env(home, **env_extra)
    ids = [
        rid
        for spec in specs
        for rid in json.loads(
            subprocess.run(
                wb_command("submit", spec, "--no-worker", "--json"),
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )["run_ids"]
    ]
    subprocess.run(
        wb_command("worker", "--devices", "cpu", "--once"),
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    return [
        json.loads(
            subprocess.run(
                wb_command("show", r, "--json"), env=env, check=True, capture_output=True, text=True
            ).stdout
        )
        for r in ids
    ]


def test_tiny_ddpm_run_reports_everything(home, tmp_path):
    (rec,) = run_spec(home, write_spec(tmp_path, TINY))
    assert rec["status"] == "succeeded", rec["error"]
    s = rec["summary"]
    for key in (
        "energy_distance",
        "energy_distance_floor",
        "energy_distance_excess",
        "energy_distance_ratio",
    ):
        low, high = s[f"{key}_ci"]
        assert s[f"{key}_n"] == 4 and low < s[key] < high, key  # 4 sets of 100: a mean with its interval
    acc = s["guided_accuracy"]
    assert list(acc) == ["0.0", "1.0", "3.0"]
    assert acc["3.0"] > acc["0.0"] + 0.3  # guidance works even on a tiny model
    # Each accuracy is a share of the 4 x 100 samples, with its interval: a count over 400, inside its interval.
    assert s["guided_accuracy_n"] == 400 and list(s["guided_accuracy_ci"]) == list(acc)
    for w, (low, high) in s["guided_accuracy_ci"].items():
        assert float(acc[w] * 400).is_integer() and low <= acc[w] <= high
        assert 0 < high - low < 0.2  # n = 400: at most about +- 0.05 around a share near one half
    rows = rec["tables"]["samplers"]
    assert [(r["sampler"], r["guidance_scale"], r["nfe"]) for r in rows] == [
        ("ddpm", 0.0, 200),
        ("ddpm", 1.0, 200),
        ("ddpm", 3.0, 400),
        ("ddim", 0.0, 20),
        ("ddim", 1.0, 20),
        ("ddim", 3.0, 40),
    ]
    assert all(r["seconds"] > 0 for r in rows)
    # Strong guidance narrows each class well past the data: a distance real samples do not reach
    w3 = [r for r in rows if r["guidance_scale"] == 3.0]
    assert all(
        r["energy_distance_excess_ci_low"] > 0 and r["energy_distance_ratio_ci_low"] > 1 for r in w3
    ), w3
    names = {a["name"] for a in rec["artifacts"]}
    assert {"forward_process", "checkpoint", "samples/ddpm_200_w3", "samples/ddim_20_w0"} <= names
    for a in rec["artifacts"]:
        assert (home / a["path"]).stat().st_size > 0


def test_quickstart_meets_its_bars(home):
    """The bars, on the shipped quickstart spec itself, by the ends of intervals, not single draws:
    SwissRoll's samples score at most 1.5x a real sample of the same size (the ratio's upper end), and
    on the Gaussian mixture the guided accuracy at w = 3 is at least 0.95 (its interval's lower end) and
    guidance raises it (w = 1 above w = 0, w = 3 above w = 1, each interval clear of the other)."""
    swiss, gauss = run_spec(home, ROOT / "examples" / "quickstart.yaml")
    assert swiss["status"] == gauss["status"] == "succeeded"
    s = swiss["summary"]
    assert s["energy_distance_ratio_n"] == 20 and s["energy_distance_ratio_ci"][1] <= 1.5, s
    ci = gauss["summary"]["guided_accuracy_ci"]
    assert ci["3.0"][0] >= 0.95, ci
    assert ci["0.0"][1] < ci["1.0"][0] and ci["1.0"][1] < ci["3.0"][0], ci

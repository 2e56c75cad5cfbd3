"""Every README figure can be rebuilt: bench/figures.py names its committed specs, and the README names
the command beside each results block."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import yaml

from workbench.jobs.jobfile import SpecError, load_job_file

ROOT = Path(__file__).resolve().parent.parent


def figures_module():
    spec = importlib.util.spec_from_file_location("bench_figures", ROOT / "bench" / "figures.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_figures"] = module
    spec.loader.exec_module(module)
    return module


figures = figures_module()


def test_every_results_block_of_the_readme_names_a_figure_that_rebuilds_it():
    blocks = figures.rebuild_commands((ROOT / "README.md").read_text())
    assert len(blocks) >= 12  # the result tables and printed results the README holds today
    missing = [first for first, _, name in blocks if name is None]
    assert not missing, f"README results blocks at lines {missing} name no `python bench/figures.py NAME`"
    unknown = {name for _, _, name in blocks} - set(figures.FIGURES)
    assert not unknown, f"the README names figures bench/figures.py does not know: {unknown}"
    assert {name for _, _, name in blocks} == set(figures.FIGURES), "a figure the README no longer shows"


def test_a_results_block_without_its_command_is_found():
    """Catches: a detector that misses a new table or a block of printed results, or that takes a YAML
    list (`[0.0, 1.0, 3.0]`) for an estimate."""
    text = "\n".join(
        [
            "Some prose (rebuild: `python bench/figures.py quickstart`):",
            "",
            "| a | b |",
            "|---|---|",
            "| x | 0.91 [0.88, 0.94] |",
            "",
            "```yaml",
            "guidance_scales: [0.0, 1.0, 3.0]",
            "```",
            "",
            "```",
            "sampler  fid (n=5)",
            "ddim     0.224 [0.216, 0.232]",
            "```",
        ]
    )
    assert figures.rebuild_commands(text) == [(3, 5, "quickstart"), (11, 14, "quickstart")]
    far = "\n".join(["(rebuild: `python bench/figures.py quickstart`)"] + ["prose"] * 30 + ["| 1 [0, 2] |"])
    assert figures.rebuild_commands(far) == [(32, 32, None)]  # too far above to belong to it


def experiments(node):
    """Every {experiment: NAME} a spec document names another run by."""
    if isinstance(node, dict):
        if isinstance(node.get("experiment"), str):
            yield node["experiment"]
        for value in node.values():
            yield from experiments(value)
    elif isinstance(node, list):
        for value in node:
            yield from experiments(value)


@pytest.mark.parametrize("name", sorted(figures.FIGURES))
def test_a_figure_chain_is_committed_specs_that_name_each_other_by_experiment(name):
    """Catches: a spec that names its model by a run id (valid in one store only), a machine path, or a
    chain whose later spec names an experiment no earlier spec makes."""
    figure = figures.FIGURES[name]
    assert figure.specs or figure.command
    made: list[str] = []
    for path in figure.specs:
        text = (ROOT / path).read_text()
        doc = yaml.safe_load(text)
        assert not re.search(r"(^|\s)(/tmp|/work|/home|~)/|\.\./\.\./", text), f"{path} names a machine path"
        refs = list(experiments(doc))
        assert set(refs) <= set(made), f"{path} names {refs}; the chain makes {made} before it"
        assert not isinstance(doc.get("model_run"), int), f"{path}: model_run by id"
        if not figure.prepare:  # shards a prepare step writes are not there until it runs
            try:
                load_job_file(ROOT / path)
            except SpecError as e:
                pytest.fail(f"{path} does not validate: {e}")
        made.append(doc.get("name") or Path(path).stem)


@pytest.mark.slow
def test_the_gpu_campaign_runs_end_to_end_at_toy_size_on_the_cpu(tmp_path):
    """Catches: a campaign spec that no longer validates or chains (the sampling run finds the images run
    by experiment), a step whose table does not print, a throughput bench that fails."""
    import subprocess

    from tests.conftest import subprocess_env

    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_campaign.py"), "--tiny", "--home", str(tmp_path / "home")],
        env=subprocess_env(tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for experiment in ("gpu-images-mnist", "gpu-sampling-mnist", "gpu-feature-sweep-mnist"):
        assert f"=== {experiment} (run" in done.stdout
    assert "every step succeeded" in done.stdout and "samplers" in done.stdout

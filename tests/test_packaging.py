"""environment.yml (for conda users) must ask for what pyproject.toml asks for."""

from __future__ import annotations

import tomllib

import yaml

from tests.conftest import ROOT


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    conda_pkgs = [d for d in env["dependencies"] if isinstance(d, str)]
    assert f"python>={project['requires-python'].removeprefix('>=')}" in conda_pkgs
    assert sorted(p for p in pip if not p.startswith("-e")) == sorted(project["dependencies"])
    assert "-e .[dev]" in pip


def test_console_script_and_packages():
    """The installed `workbench` script runs the CLI, and every package in the source tree (each folder
    with an __init__.py, tests and benchmarks aside) is one setuptools puts in the distribution."""
    import subprocess
    import sys
    from importlib.metadata import entry_points
    from pathlib import Path

    from setuptools import find_packages

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "workbench"]
    out = subprocess.run(
        [Path(sys.executable).with_name("workbench"), "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "submit" in out.stdout and callable(script.load())
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    shipped = set(find_packages(ROOT, include=data["tool"]["setuptools"]["packages"]["find"]["include"]))
    tracked = subprocess.run(
        ["git", "ls-files", "*__init__.py"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    in_tree = {".".join(Path(p).parent.parts) for p in tracked.split()}
    assert {p for p in in_tree if p.split(".")[0] not in ("tests", "bench")} == shipped


def test_ci_runs_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_validating_specs_does_not_import_torch():
    """The CLI and the TUI import every kind to validate specs: that must not pay torch's import."""
    import importlib.util
    import subprocess
    import sys

    code = (
        "import sys; from workbench.jobs.kinds import kind_names, load_kind; [load_kind(k) for k in kind_names()]; "
        "print(sorted(m for m in ('torch', 'diffusers', 'matplotlib', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    from workbench.jobs.kinds import preload_modules

    assert all(importlib.util.find_spec(m) is not None for m in preload_modules())

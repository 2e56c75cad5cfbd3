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
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert data["project"]["scripts"]["workbench"] == "workbench.cli:main"
    assert set(data["tool"]["setuptools"]["packages"]["find"]["include"]) == {"workbench*", "jobs*", "store*"}


def test_ci_runs_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()

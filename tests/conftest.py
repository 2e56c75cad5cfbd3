from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh, empty $WORKBENCH_HOME for one test."""
    h = tmp_path / "wbhome"
    monkeypatch.setenv("WORKBENCH_HOME", str(h))
    monkeypatch.delenv("WORKBENCH_DB_URL", raising=False)
    return h


@pytest.fixture
def store(home):
    from store.db import Store

    s = Store()
    yield s
    s.dispose()


@pytest.fixture
def cli(home):
    """Run the CLI in-process: cli("runs", "--json") -> (exit code, stdout, stderr)."""
    from typer.testing import CliRunner

    from workbench.cli import app

    runner = CliRunner()

    def invoke(*args: str):
        result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr

    return invoke


def wb_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "workbench", *map(str, args)]


def subprocess_env(home: Path, **extra: str) -> dict[str, str]:
    # Device locks are host-wide: each test's workers get their own lock folder, never a real worker's.
    extra.setdefault("WORKBENCH_LOCK_DIR", str(Path(home).parent / "locks"))
    env = dict(os.environ, WORKBENCH_HOME=str(home), PYTHONUNBUFFERED="1", **extra)
    env.pop("WORKBENCH_DB_URL", None)
    return env


def write_spec(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p

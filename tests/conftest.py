from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
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
    from workbench.store.db import Store

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


def subprocess_env(home: Path, db_url: str | None = None, **extra: str) -> dict[str, str]:
    # Device locks are host-wide: each test's workers get their own lock folder, never a real worker's.
    extra.setdefault("WORKBENCH_LOCK_DIR", str(Path(home).parent / "locks"))
    env = dict(os.environ, WORKBENCH_HOME=str(home), PYTHONUNBUFFERED="1", **extra)
    env.pop("WORKBENCH_DB_URL", None)
    if db_url:
        env["WORKBENCH_DB_URL"] = db_url
    return env


def write_spec(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# --- PostgreSQL: a real server for the test session ------------------------------------------------


def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server programs (Debian keeps them off PATH), or None."""
    found = shutil.which("pg_ctl")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    return next((d for d in candidates if (d / "initdb").exists() and (d / "postgres").exists()), None)


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL cluster of our own on 127.0.0.1 (Debian's `postgresql` package, installed by .ci/run),
    started once per session; yields a server URL without a database name."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL's server programs are not installed (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="wb-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        shutil.chown(root, "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    data = root / "data"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    def pg(*args) -> None:
        subprocess.run([*run_as, *map(str, args)], check=True, capture_output=True, timeout=120)

    pg(bin_dir / "initdb", "-D", data, "-U", "wb", "--auth=trust", "-E", "UTF8", "--no-sync")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300"
    pg(bin_dir / "pg_ctl", "-D", data, "-l", root / "server.log", "-w", "-o", options, "start")
    try:
        yield f"postgresql+psycopg://wb@127.0.0.1:{port}"
    finally:
        subprocess.run(
            [*run_as, bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(postgres_server):
    """A new, empty database on the session's server for one test."""
    import psycopg

    name = f"t{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{postgres_server.replace('+psycopg', '')}/postgres", autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}")
    yield f"{postgres_server}/{name}"
    with psycopg.connect(f"{postgres_server.replace('+psycopg', '')}/postgres", autocommit=True) as con:
        con.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, home, monkeypatch) -> str | None:
    """Each test that takes it runs twice: on SQLite (the default store) and on PostgreSQL
    ($WORKBENCH_DB_URL, as a lab's machines would share it). None for SQLite."""
    if request.param == "sqlite":
        return None
    url = request.getfixturevalue("pg_url")
    monkeypatch.setenv("WORKBENCH_DB_URL", url)
    return url

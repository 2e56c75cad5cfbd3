"""The schema's version, and the steps that upgrade a database written by an older workbench.

A new database gets the current tables from workbench.store.models and the current version. An older one is
upgraded step by step, each step in `UPGRADES` taking a database from the version before it to its
own, all in the one transaction that opening the store runs: a step that fails leaves the database as
it was, and every row stays. A database newer than this workbench is refused, never downgraded.

Steps are written in plain SQL that SQLite and PostgreSQL both read, not through the models: a step
must keep doing what it did when store.models has moved on. A new version adds a step here, a fixture
written by the version before it (tests/fixtures/), and a test that upgrades that fixture.

Where the version is kept: SQLite's `PRAGMA user_version` up to version 1; from version 2 on, the
`store_meta` table (key `schema_version`), which any database has.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, inspect, text

from workbench.store.models import Base

SCHEMA_VERSION = 5
META_TABLE = "store_meta"


def _v2(conn: Connection) -> None:
    """The version in a table (PostgreSQL has no user_version); artifacts found by name (finished_run)."""
    conn.execute(
        text(f"CREATE TABLE {META_TABLE} (key VARCHAR(64) NOT NULL PRIMARY KEY, value TEXT NOT NULL)")
    )
    conn.execute(text("CREATE INDEX ix_artifacts_run_name ON artifacts (run_id, name)"))


def _v3(conn: Connection) -> None:
    """Execution backends: a worker says which it dispatches to and where; a run keeps its backend job's
    id (Ray task, Slurm job) and can be asked to stop (checkpoint and end interrupted) through the store."""
    conn.execute(text("ALTER TABLE workers ADD COLUMN backend VARCHAR(16) NOT NULL DEFAULT 'local'"))
    conn.execute(text("ALTER TABLE workers ADD COLUMN address VARCHAR(300)"))
    conn.execute(text("ALTER TABLE runs ADD COLUMN stop_requested BOOLEAN NOT NULL DEFAULT FALSE"))
    conn.execute(text("ALTER TABLE runs ADD COLUMN job_id VARCHAR(100)"))


def _v4(conn: Connection) -> None:
    """Run management: the user's tags and note on a run, and archiving (hidden, kept)."""
    conn.execute(text("ALTER TABLE runs ADD COLUMN tags JSON NOT NULL DEFAULT '[]'"))
    conn.execute(text("ALTER TABLE runs ADD COLUMN note TEXT"))
    conn.execute(text("ALTER TABLE runs ADD COLUMN archived BOOLEAN NOT NULL DEFAULT FALSE"))


def _v5(conn: Connection) -> None:
    """A worker says why its free slots start nothing (another worker holds the device), so a queued run
    can say what it waits for."""
    conn.execute(text("ALTER TABLE workers ADD COLUMN waiting TEXT"))


UPGRADES: dict[int, Callable[[Connection], None]] = {2: _v2, 3: _v3, 4: _v4, 5: _v5}


class NewerSchema(Exception):
    """The database was written by a newer workbench."""

    def __init__(self, version: int):
        self.version = version
        super().__init__(f"schema version {version}, newer than this workbench's ({SCHEMA_VERSION})")


def stored_version(conn: Connection) -> int:
    """The database's schema version; 0 for an empty database."""
    tables = set(inspect(conn).get_table_names())
    if META_TABLE in tables:
        value = conn.execute(text(f"SELECT value FROM {META_TABLE} WHERE key = 'schema_version'")).scalar()
        return int(value)
    if conn.dialect.name == "sqlite":
        version = int(conn.exec_driver_sql("PRAGMA user_version").scalar() or 0)
        if version or "runs" not in tables:
            return version
    return 1 if "runs" in tables else 0


def _set_version(conn: Connection, version: int) -> None:
    conn.execute(text(f"DELETE FROM {META_TABLE} WHERE key = 'schema_version'"))
    conn.execute(
        text(f"INSERT INTO {META_TABLE} (key, value) VALUES ('schema_version', :v)"), {"v": str(version)}
    )


def upgrade(conn: Connection) -> list[int]:
    """Bring the database on `conn` (inside a transaction) to SCHEMA_VERSION; returns the versions it
    stepped through ([] when it was current, [SCHEMA_VERSION] for a new database). NewerSchema when
    the database is ahead of this code."""
    version = stored_version(conn)
    if version > SCHEMA_VERSION:
        raise NewerSchema(version)
    if version == SCHEMA_VERSION:
        return []
    if version == 0:
        Base.metadata.create_all(conn)
        steps = [SCHEMA_VERSION]
    else:
        steps = list(range(version + 1, SCHEMA_VERSION + 1))
        for v in steps:
            UPGRADES[v](conn)
    _set_version(conn, SCHEMA_VERSION)
    return steps

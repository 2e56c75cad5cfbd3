"""Engine, SQLite pragmas, transactions and the schema version.

Every write runs in `BEGIN IMMEDIATE`, so a writer takes the lock up front and two writers never
deadlock upgrading read locks; reads run in deferred transactions and never block writers (WAL).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from platformdirs import user_data_dir
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session

from store.models import Base

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 30_000


class StoreError(Exception):
    """A problem with the store the user can act on (exit code 2 in the CLI)."""


def workbench_home() -> Path:
    home = Path(os.environ.get("WORKBENCH_HOME") or user_data_dir("workbench", appauthor=False))
    home.mkdir(parents=True, exist_ok=True)
    return home


def database_url(home: Path | None = None) -> str:
    return os.environ.get("WORKBENCH_DB_URL") or f"sqlite:///{(home or workbench_home()) / 'workbench.db'}"


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # let SQLAlchemy's begin event choose the BEGIN mode
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")  # durable against process crashes in WAL mode
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")


class Store:
    """A handle on one database and its artifact directory."""

    def __init__(self, url: str | None = None, home: Path | None = None):
        self.home = Path(home) if home else workbench_home()
        self.home.mkdir(parents=True, exist_ok=True)
        self.url = url or database_url(self.home)
        self.engine = create_engine(self.url)
        if self.engine.dialect.name == "sqlite":
            _configure_sqlite(self.engine)
        self._reader = self.engine.execution_options(sqlite_begin="DEFERRED")
        self._migrate()

    def _migrate(self) -> None:
        with self.engine.connect() as conn:
            version = conn.exec_driver_sql("PRAGMA user_version").scalar() or 0
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"database {self.url} has schema version {version}, newer than this workbench "
                f"({SCHEMA_VERSION}); upgrade workbench"
            )
        if version < SCHEMA_VERSION:
            with self.engine.begin() as conn:
                Base.metadata.create_all(conn)
                conn.exec_driver_sql(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session in one BEGIN IMMEDIATE transaction, committed on success."""
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self._reader, expire_on_commit=False) as session, session.begin():
            yield session

    def integrity_check(self) -> str:
        with self.engine.connect() as conn:
            return str(conn.execute(text("PRAGMA integrity_check")).scalar())

    def dispose(self) -> None:
        self.engine.dispose()

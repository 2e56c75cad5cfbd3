"""Engine, SQLite pragmas, transactions, and opening (upgrading) the schema (see store.schema).

Every write runs in `BEGIN IMMEDIATE`, so a writer takes the lock up front and two writers never
deadlock upgrading read locks; reads run in deferred transactions and never block writers (WAL).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from platformdirs import user_data_dir
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.orm import Session

from workbench.store.schema import SCHEMA_VERSION, NewerSchema, stored_version, upgrade

MOUNTINFO = Path("/proc/self/mountinfo")
# SQLite's locking needs POSIX locks and shared memory that these file systems do not give reliably.
NETWORK_FS = (
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "afs",
    "9p",
    "ceph",
    "glusterfs",
    "lustre",
    "gpfs",
    "beegfs",
    "davfs",
    "ncpfs",
)


def busy_timeout_ms() -> int:
    """How long a write waits for the database lock before it fails (a store fault the worker survives)."""
    return int(os.environ.get("WORKBENCH_BUSY_TIMEOUT_MS", "30000"))


class StoreError(Exception):
    """A problem with the store the user can act on (exit code 2 in the CLI)."""


# Any error the database driver raised (locked, disk full, gone), for code outside store/, which never
# imports SQLAlchemy itself.
DatabaseError = DBAPIError


def workbench_home() -> Path:
    home = Path(os.environ.get("WORKBENCH_HOME") or user_data_dir("workbench", appauthor=False))
    home.mkdir(parents=True, exist_ok=True)
    return home


def redacted(url: str) -> str:
    """`url` fit to print: its password (if any) as ***, whether or not it parses."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return re.sub(r"^((?:[^:/@]*://)?[^:/@]*:)[^/]*@", r"\1***@", url)


def database_url(home: Path | None = None) -> str:
    return os.environ.get("WORKBENCH_DB_URL") or f"sqlite:///{(home or workbench_home()) / 'workbench.db'}"


def _configure_sqlite(engine: Engine, lock_wait_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # let SQLAlchemy's begin event choose the BEGIN mode
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {lock_wait_ms}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute(
            "PRAGMA synchronous = FULL"
        )  # WAL synced at every commit: a committed write survives an OS crash, a power cut, or a disk turned read-only
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")


def mount_type(path: Path, mountinfo: str | None = None) -> str | None:
    """The file-system type of the mount that holds `path` (Linux; None where it cannot be told)."""
    if mountinfo is None:
        try:
            mountinfo = MOUNTINFO.read_text()
        except OSError:
            return None
    target = os.path.realpath(path)
    best, best_type = "", None
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4])  # \040 space, \011 tab, ...
        fstype = line.split(" - ", 1)[1].split()[0]
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, best_type = point, fstype
    return best_type


def refuse_network_fs(db_file: Path) -> None:
    """SQLite with WAL corrupts or deadlocks on network and FUSE file systems: refuse them by name."""
    fstype = mount_type(db_file.parent)
    if fstype and (fstype in NETWORK_FS or fstype.startswith(("fuse.", "nfs"))) and fstype != "fuse.lxcfs":
        raise StoreError(
            f"{db_file} is on a {fstype} file system, where SQLite's locking is unsafe (runs and metrics can be "
            f"lost or corrupted). Put $WORKBENCH_HOME on a local disk, or point $WORKBENCH_DB_URL at a database "
            f"server (postgresql+psycopg://...) and keep only artifacts on the shared mount."
        )


def db_now_sql(dialect: str) -> str:
    """The database's clock in Unix seconds: leases are measured on one clock, not each host's."""
    if dialect == "sqlite":
        return "((julianday('now') - 2440587.5) * 86400.0)"
    return "extract(epoch from clock_timestamp())"


def engine_options(url: str, lock_wait_ms: int) -> dict:
    """PostgreSQL: connections checked before use (a server restart or idle cut is survived), and a
    statement that waits for a lock gives up after lock_wait_ms, like SQLite's busy timeout."""
    if url.startswith("postgresql"):
        return {
            "pool_pre_ping": True,
            "connect_args": {"options": f"-c lock_timeout={lock_wait_ms}", "connect_timeout": 10},
        }
    return {}


# A lease renewal waits this long for the lock, then tries again a second later: it never queues for the
# whole busy timeout behind a long write, and each renewal that fails is logged.
QUICK_LOCK_WAIT_MS = 2000


class Store:
    """A handle on one database and its artifact directory."""

    def __init__(self, url: str | None = None, home: Path | None = None):
        self.home = Path(home) if home else workbench_home()
        self.home.mkdir(parents=True, exist_ok=True)
        self.url = url or database_url(self.home)
        self._quick_engine: Engine | None = None
        try:
            self.engine = self._engine(busy_timeout_ms())
        except (ArgumentError, ImportError) as e:
            hint = " (pip install 'workbench[cluster]' for PostgreSQL)" if isinstance(e, ImportError) else ""
            why = str(e).replace(self.url, redacted(self.url))
            raise StoreError(f"cannot use database URL {redacted(self.url)!r}: {why}{hint}") from None
        if self.engine.dialect.name == "sqlite":
            if (db_file := self.engine.url.database) and db_file != ":memory:":
                refuse_network_fs(Path(db_file).resolve())
        self.now_sql = db_now_sql(self.engine.dialect.name)
        self._reader = self.engine.execution_options(sqlite_begin="DEFERRED")
        try:
            self._migrate()
        except DBAPIError as e:  # SQLite in WAL mode cannot even open a database on a read-only disk
            if os.statvfs(self.home).f_flag & os.ST_RDONLY:
                raise StoreError(
                    f"cannot open the store: {self.home} is on a read-only file system (remount it "
                    "read-write, or set $WORKBENCH_HOME to a writable folder)"
                ) from e
            raise

    def _engine(self, lock_wait_ms: int) -> Engine:
        engine = create_engine(self.url, **engine_options(self.url, lock_wait_ms))
        if engine.dialect.name == "sqlite":
            _configure_sqlite(engine, lock_wait_ms)
        return engine

    def _migrate(self) -> None:
        """Create or upgrade the schema. The version is read without the write lock (a store that is
        current, the usual case, never waits for a busy writer) and read again under it, so two
        processes opening an old database upgrade it once."""
        with self.engine.connect() as conn:
            current = stored_version(conn) == SCHEMA_VERSION
        if current:
            return
        try:
            with self.engine.begin() as conn:
                if self.dialect == "postgresql":  # SQLite's BEGIN IMMEDIATE does this: one upgrader at a time
                    conn.execute(text("SELECT pg_advisory_xact_lock(4242424242)"))
                if upgrade(conn) and self.engine.dialect.name == "sqlite":
                    # older workbenches read only this: they refuse a database they cannot read
                    conn.exec_driver_sql(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except NewerSchema as e:
            raise StoreError(f"database {self.safe_url} has {e}; upgrade workbench") from None

    @contextmanager
    def write(self, quick: bool = False) -> Iterator[Session]:
        """A session in one BEGIN IMMEDIATE transaction, committed on success. `quick`: wait at most
        QUICK_LOCK_WAIT_MS for the lock (its own small pool), for writes that would rather fail and retry."""
        engine = self.engine
        if quick:
            if self._quick_engine is None:
                self._quick_engine = self._engine(min(QUICK_LOCK_WAIT_MS, busy_timeout_ms()))
            engine = self._quick_engine
        with Session(engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self._reader, expire_on_commit=False) as session, session.begin():
            yield session

    def now(self) -> float:
        """The database's time (Unix seconds)."""
        with self.engine.connect() as conn:
            return float(conn.exec_driver_sql(f"SELECT {self.now_sql}").scalar())

    @property
    def has_password(self) -> bool:
        """Whether the URL itself carries a password (rather than ~/.pgpass or $PGPASSFILE)."""
        return self.engine.url.password is not None

    @property
    def safe_url(self) -> str:
        """The URL for logs and screens: a password in it shows as ***."""
        return self.engine.url.render_as_string(hide_password=True)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def driver_sql(self, sql: str) -> str:
        """Raw SQL written with `?` placeholders, in the driver's own style (psycopg takes `%s`)."""
        return sql.replace("?", "%s") if self.engine.dialect.paramstyle in ("format", "pyformat") else sql

    def integrity_check(self) -> str:
        """SQLite's page-level check; "ok" on a server database once it answers (it checks itself)."""
        with self.engine.connect() as conn:
            if self.dialect != "sqlite":
                conn.execute(text("SELECT 1"))
                return "ok"
            return str(conn.execute(text("PRAGMA integrity_check")).scalar())

    def dispose(self) -> None:
        self.engine.dispose()
        if self._quick_engine is not None:
            self._quick_engine.dispose()

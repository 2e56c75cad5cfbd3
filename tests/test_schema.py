"""Upgrading a database written by an older workbench: every row kept, the same schema as a new one."""

from __future__ import annotations

import shutil
import sqlite3

import pytest
from sqlalchemy import inspect

from tests.conftest import ROOT
from workbench.store import queue, schema
from workbench.store.db import Store
from workbench.store.models import Run, RunStatus
from workbench.store.queries import metric_series, show, tables

V1 = ROOT / "tests" / "fixtures" / "store_v1.db"  # written by the v1 code: tests/fixtures/make_store_v1.py
V1_TABLES = ("experiments", "runs", "metric_points", "artifacts", "result_tables", "run_events", "workers")


def rows(db, columns: dict[str, list[str]] | None = None) -> dict[str, list[tuple]]:
    """Every row of the v1 tables; with `columns`, only those columns (an upgrade adds new ones)."""
    with sqlite3.connect(db) as con:
        return {
            t: con.execute(
                f"SELECT {', '.join(columns[t]) if columns else '*'} FROM {t} ORDER BY 1"
            ).fetchall()
            for t in V1_TABLES
        }


def columns(db) -> dict[str, list[str]]:
    with sqlite3.connect(db) as con:
        return {t: [r[1] for r in con.execute(f"PRAGMA table_info({t})")] for t in V1_TABLES}


def shape(store: Store) -> dict:
    """Tables, their columns (name, type, nullable, primary key) and their indexes."""
    with store.engine.connect() as conn:
        i = inspect(conn)
        return {
            t: (
                {
                    (c["name"], str(c["type"]), c["nullable"], c.get("primary_key", 0))
                    for c in i.get_columns(t)
                },
                {(x["name"], tuple(x["column_names"]), bool(x["unique"])) for x in i.get_indexes(t)},
                {tuple(u["column_names"]) for u in i.get_unique_constraints(t)},
            )
            for t in i.get_table_names()
        }


@pytest.fixture
def old_home(tmp_path):
    home = tmp_path / "old"
    home.mkdir()
    shutil.copy(V1, home / "workbench.db")
    return home


def test_a_v1_database_upgrades_with_every_row_intact(old_home):
    before, v1_columns = rows(old_home / "workbench.db"), columns(old_home / "workbench.db")
    assert all(before.values()), "the fixture has rows in every table"
    s = Store(home=old_home)
    with s.engine.connect() as conn:
        assert schema.stored_version(conn) == schema.SCHEMA_VERSION
        assert conn.exec_driver_sql("PRAGMA user_version").scalar() == schema.SCHEMA_VERSION
    s.dispose()
    assert rows(old_home / "workbench.db", v1_columns) == before
    with sqlite3.connect(old_home / "workbench.db") as con:  # v3's columns, filled for the old rows
        assert set(con.execute("SELECT backend FROM workers").fetchall()) == {("local",)}
        assert set(con.execute("SELECT stop_requested, job_id FROM runs").fetchall()) == {(0, None)}
    s = Store(home=old_home)  # opened again: nothing left to do
    rec = show(s, 1).as_json()
    assert rec["status"] == "succeeded" and rec["summary"]["loss_ci"] == [0.2, 0.5]
    with s.read() as session:  # the v1 strings read back as the enum (the column's type is unchanged)
        assert session.get(Run, 1).status is RunStatus.SUCCEEDED
    assert tables(s, 1) == {"steps": [{"first": 1, "last": 3, "note": "é ✓"}]}
    assert [step for step, _ in metric_series(s, 1, "loss")] == [1, 2, 3]
    wid = queue.register_worker(s, ["cpu"])
    assert queue.claim(s, wid, "cpu").id == 2  # the queued run of the old store runs on the new one
    s.dispose()


def test_an_upgraded_database_has_the_schema_of_a_new_one(old_home, tmp_path):
    upgraded, new = Store(home=old_home), Store(home=tmp_path / "new")
    assert shape(upgraded) == shape(new)
    assert "ix_artifacts_run_name" in {x[0] for x in shape(new)["artifacts"][1]}
    upgraded.dispose()
    new.dispose()


def test_a_failing_step_leaves_the_database_as_it_was(old_home, monkeypatch):
    def broken(conn):
        schema._v2(conn)
        raise RuntimeError("disk full halfway")

    monkeypatch.setitem(schema.UPGRADES, 2, broken)
    before = rows(old_home / "workbench.db")
    with pytest.raises(RuntimeError, match="halfway"):
        Store(home=old_home)
    with sqlite3.connect(old_home / "workbench.db") as con:
        assert con.execute("PRAGMA user_version").fetchone() == (1,)
        assert not con.execute(
            "SELECT name FROM sqlite_master WHERE name LIKE '%store_meta%' OR name = 'ix_artifacts_run_name'"
        ).fetchall()
    assert rows(old_home / "workbench.db") == before

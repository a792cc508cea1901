"""lib/sqlite_keepalive.py: the instance's SQLite files stay open while kept, on a real Dagster instance."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from dagster import AssetKey, AssetMaterialization, DagsterInstance
from sqlalchemy.pool import NullPool

from lib.sqlite_keepalive import kept_open


def _write(path: Path, value: int) -> None:
    """What Dagster's SQLite storage does per event: a new engine, one transaction, closed (NullPool)."""
    engine = sa.create_engine(f"sqlite:///{path}", poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text("PRAGMA journal_mode=WAL"))
        conn.execute(sa.text("CREATE TABLE IF NOT EXISTS t (v INTEGER)"))
        conn.execute(sa.text("INSERT INTO t VALUES (:v)"), {"v": value})
    engine.dispose()


def _wal(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def test_a_kept_file_keeps_its_wal_between_writes_and_checkpoints_at_the_end(tmp_path):
    db = tmp_path / "storage" / "index.db"
    db.parent.mkdir()
    _write(db, 0)
    assert not _wal(db).exists()  # the last close checkpointed and deleted it
    with kept_open(tmp_path / "storage"):
        for v in range(1, 4):
            _write(db, v)
            assert _wal(db).exists()  # not the last connection any more: no checkpoint per write
        # Another process's view: every committed row is there, and it can write (no lock held).
        other = sa.create_engine(f"sqlite:///{db}", poolclass=NullPool)
        with other.begin() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM t")).scalar() == 4
            conn.execute(sa.text("INSERT INTO t VALUES (4)"))
        other.dispose()
    assert not _wal(db).exists()  # the keeper's close was the last: checkpointed
    with sa.create_engine(f"sqlite:///{db}").connect() as conn:
        assert sorted(conn.execute(sa.text("SELECT v FROM t")).scalars()) == [0, 1, 2, 3, 4]


def test_files_outside_the_root_are_left_alone(tmp_path):
    inside, outside = tmp_path / "home" / "a.db", tmp_path / "lake" / "cases.sqlite"
    inside.parent.mkdir()
    outside.parent.mkdir()
    with kept_open(tmp_path / "home"):
        _write(inside, 1)
        _write(inside, 2)
        _write(outside, 1)
        assert _wal(inside).exists()
        assert not _wal(outside).exists()


def test_a_dagster_instance_stores_and_reads_events_while_kept(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    with DagsterInstance.local_temp(str(home)) as instance, kept_open(home):
        for partition in ("a", "b", "c"):
            instance.report_runless_asset_event(AssetMaterialization("x", partition=partition))
        assert instance.get_materialized_partitions(AssetKey("x")) == {"a", "b", "c"}
        assert any(p.name.endswith("-wal") for p in home.rglob("*"))
    # After the block every file is checkpointed and closed; a new instance sees the same.
    assert not any(p.name.endswith("-wal") for p in home.rglob("*"))
    with DagsterInstance.local_temp(str(home)) as instance:
        assert instance.get_materialized_partitions(AssetKey("x")) == {"a", "b", "c"}

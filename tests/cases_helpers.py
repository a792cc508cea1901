"""Shared by the cases tests: a fresh case store on SQLite or PostgreSQL, and points of a series."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from iot_lake.cases.model import Deviation

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request, tmp_path):
    """An empty case store: a SQLite file, or a new database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cases.sqlite'}"
    server = request.getfixturevalue("postgres_url")
    name = f"cases_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return server.rsplit("/", 1)[0] + "/" + name


def point(
    minute: float,
    anomalous: bool = True,
    score: float = 4.0,
    device: str = "dev-001",
    metric: str = "temperature",
    actual: float | None = None,
    site: str | None = "site-1",
) -> Deviation:
    """A point ``minute`` minutes after T0; anomalous ones are above the band [10, 20]."""
    return Deviation(
        device_id=device,
        metric=metric,
        site_id=site,
        ts=T0 + timedelta(minutes=minute),
        actual=actual if actual is not None else (30.0 if anomalous else 15.0),
        expected_lo=10.0,
        expected_hi=20.0,
        score=score if anomalous else 0.5,
        is_anomalous=anomalous,
    )

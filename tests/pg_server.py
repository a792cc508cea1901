"""A real PostgreSQL server for the test session: initdb + pg_ctl on a free port in a temp dir."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa


def _find_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_binaries() -> tuple[str, str]:
    """initdb and pg_ctl; without them a visible skip, or a failure under CI."""
    initdb, pg_ctl = _find_bin("initdb"), _find_bin("pg_ctl")
    if not (initdb and pg_ctl):
        message = "PostgreSQL server binary (initdb/pg_ctl) not found: install Debian's postgresql (scripts/setup.sh --test)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI must run the Postgres tests, never pass without them
        pytest.skip(message)
    return initdb, pg_ctl


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    initdb, pg_ctl = server_binaries()
    # initdb refuses to run as root: run the server as the postgres user then.
    user = None
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("running as root and there is no 'postgres' user to run the server as")
    base = tempfile.mkdtemp(prefix="iot-lake-pg-")
    os.chmod(base, 0o755)
    data, sockets = os.path.join(base, "data"), os.path.join(base, "sock")
    os.makedirs(sockets)
    if user:
        for path in (base, sockets):
            os.chown(path, user.pw_uid, user.pw_gid)
    run_as = {"user": user.pw_uid, "group": user.pw_gid} if user else {}
    port = _free_port()
    subprocess.run([initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
                   check=True, capture_output=True, **run_as)
    options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={sockets} -c fsync=off"
    subprocess.run([pg_ctl, "-D", data, "-o", options, "-l", os.path.join(base, "server.log"), "-w", "start"],
                   check=True, capture_output=True, **run_as)
    admin = sa.create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", isolation_level="AUTOCOMMIT")
    try:
        deadline = time.time() + 30
        while True:
            try:
                with admin.connect() as conn:
                    conn.execute(sa.text("CREATE DATABASE iot_lake_test"))
                break
            except sa.exc.OperationalError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        yield f"postgresql://postgres@127.0.0.1:{port}/iot_lake_test"
    finally:
        admin.dispose()
        subprocess.run([pg_ctl, "-D", data, "-m", "fast", "-w", "stop"], capture_output=True, **run_as)
        shutil.rmtree(base, ignore_errors=True)

"""A real PostgreSQL server for the test session, started by the suite itself (initdb + pg_ctl).

tests/conftest.py shares the fixture with every test: mark the tests ``pytest.mark.postgres``.
Without a server binary the tests are skipped with a visible reason, except under CI (``CI`` set),
where that is a failure: CI must never pass without having run them.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
import sqlalchemy as sa

from benchmarks.dagster_dev import free_port
from tests.unavailable import unavailable

DATABASE = "iot_lake_test"
SUPERUSER = "postgres"
_TOOLS = ("initdb", "pg_ctl")


def _version_key(bindir: str) -> tuple[int, ...]:
    """/usr/lib/postgresql/15/bin -> (15,); numeric, so 15 sorts after 9.6."""
    return tuple(int(n) for n in re.findall(r"\d+", Path(bindir).parent.name)) or (0,)


def find_server_bindir() -> str | None:
    """A directory holding both initdb and pg_ctl: PATH first, then /usr/lib/postgresql/<newest>/bin.

    Both tools come from one directory, so initdb and pg_ctl are always the same major version.
    """
    on_path = shutil.which("initdb")
    if on_path:
        bindir = os.path.dirname(os.path.realpath(on_path))  # Debian links /usr/local/bin/initdb etc.
        if all(os.access(os.path.join(bindir, t), os.X_OK) for t in _TOOLS):
            return bindir
    for bindir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True):
        if all(os.access(os.path.join(bindir, t), os.X_OK) for t in _TOOLS):
            return bindir
    return None


def _unavailable(reason: str) -> NoReturn:
    unavailable(reason, "the PostgreSQL tests")


def server_bindir() -> str:
    bindir = find_server_bindir()
    if bindir is None:
        _unavailable(
            "PostgreSQL server binary not found: no initdb/pg_ctl on PATH or under /usr/lib/postgresql/*/bin "
            "(install the Debian 'postgresql' package)"
        )
    return bindir


def _server_user() -> pwd.struct_passwd | None:
    """initdb refuses to run as root: then the server runs as the 'postgres' OS user."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        _unavailable("running as root, and there is no 'postgres' OS user to run the PostgreSQL server as")


def self_signed_certificate(cert: str, key: str) -> None:
    """A certificate for 127.0.0.1 that is its own root, and its key (openssl)."""
    subject = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            *subject,
            "-keyout",
            key,
            "-out",
            cert,
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )


class _Server:
    def __init__(self, bindir: str, user: pwd.struct_passwd | None):
        self.bindir, self.user = bindir, user
        # Under /tmp (world-traversable) rather than $TMPDIR, which the postgres user may not reach.
        self.base = tempfile.mkdtemp(prefix="iot-lake-pg-", dir="/tmp" if user else None)
        os.chmod(self.base, 0o755)
        self.data = os.path.join(self.base, "data")
        self.sockets = os.path.join(self.base, "sock")
        self.log = os.path.join(self.base, "server.log")
        os.mkdir(self.sockets, 0o755)
        if user:
            for path in (self.base, self.sockets):
                os.chown(path, user.pw_uid, user.pw_gid)
        self.port: int | None = None
        self.running = False
        self.root_cert = os.path.join(self.base, "server.crt")  # self-signed: its own root

    def certificate(self) -> None:
        """A self-signed certificate for 127.0.0.1, so clients can connect with sslmode=verify-full
        (production's setting) given it as their root (PGSSLROOTCERT)."""
        key = os.path.join(self.base, "server.key")
        self_signed_certificate(self.root_cert, key)
        os.chmod(key, 0o600)  # the server refuses a key others can read
        if self.user:
            os.chown(key, self.user.pw_uid, self.user.pw_gid)

    def run(self, tool: str, *args: str) -> subprocess.CompletedProcess:
        kwargs = {}
        if self.user:
            kwargs = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        if self.user:
            env.update(HOME=self.base, USER=self.user.pw_name, LOGNAME=self.user.pw_name)
        return subprocess.run(
            [os.path.join(self.bindir, tool), *args],
            cwd=self.base,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            **kwargs,
        )

    def _check(self, proc: subprocess.CompletedProcess, what: str) -> None:
        if proc.returncode != 0:
            log = Path(self.log).read_text(errors="replace")[-4000:] if os.path.exists(self.log) else ""
            raise RuntimeError(f"{what} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\nserver log:\n{log}")

    def initdb(self) -> None:
        self._check(
            self.run(
                "initdb", "-D", self.data, "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"
            ),
            "initdb",
        )

    def start(self, attempts: int = 3) -> None:
        for attempt in range(attempts):
            self.port = free_port()
            options = " ".join(
                [
                    f"-p {self.port}",
                    "-c listen_addresses=127.0.0.1",
                    f"-c unix_socket_directories={self.sockets}",
                    "-c fsync=off",
                    "-c synchronous_commit=off",
                    "-c full_page_writes=off",
                    "-c ssl=on",
                    f"-c ssl_cert_file={self.root_cert}",
                    f"-c ssl_key_file={os.path.join(self.base, 'server.key')}",
                ]
            )
            proc = self.run("pg_ctl", "-D", self.data, "-o", options, "-l", self.log, "-w", "-t", "60", "start")
            if proc.returncode == 0:
                self.running = True
                return
            if attempt == attempts - 1:  # the free port may have been taken meanwhile: try another
                self._check(proc, "pg_ctl start")

    def wait_and_create_database(self, timeout: float = 30.0) -> None:
        admin = sa.create_engine(
            f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/postgres", isolation_level="AUTOCOMMIT"
        )
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    with admin.connect() as conn:
                        conn.execute(sa.text(f'CREATE DATABASE "{DATABASE}"'))
                    return
                except sa.exc.OperationalError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        finally:
            admin.dispose()

    def stop(self) -> None:
        if self.running:
            self.run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")
            self.running = False

    def cleanup(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[_Server]:
    """A server this session started, with TLS on (see ``_Server.certificate``)."""
    bindir = server_bindir()
    server = _Server(bindir, _server_user())
    try:
        server.initdb()
        server.certificate()
        server.start()
        server.wait_and_create_database()
        yield server
    finally:
        server.stop()
        server.cleanup()


@pytest.fixture(scope="session")
def postgres_url(postgres_server) -> str:
    """``postgresql://postgres@127.0.0.1:PORT/iot_lake_test`` on the session's server."""
    return f"postgresql://{SUPERUSER}@127.0.0.1:{postgres_server.port}/{DATABASE}"


@pytest.fixture(scope="session")
def postgres_root_cert(postgres_server) -> str:
    """The root certificate that verifies the session server's (for sslmode=verify-full)."""
    return postgres_server.root_cert

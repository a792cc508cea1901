"""`iot-lake dashboards`: Apache Superset over the warehouse, its dashboards kept as code in dashboards/.

Superset lives in .venv-superset (its pins clash with the platform's, scripts/superset-requirements.txt)
and is driven through its CLI (the first start: `superset db upgrade`, the admin user, `superset init`)
and its REST API (importing and exporting the dashboards), so this module imports no Superset code.

The repo's definitions name the warehouse by two marks, filled from the environment when they are
imported and put back when they are exported: the same files work on the local DuckDB file and on
Redshift.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import socket
import subprocess
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import requests

from iot_lake.settings import Settings, local_warehouse_path

REPO = Path(__file__).resolve().parent.parent
DASHBOARDS_DIR = REPO / "dashboards"
SUPERSET_VENV = REPO / ".venv-superset"
HOME_VAR = "IOT_LAKE_SUPERSET_HOME"
DEFAULT_PORT = 8088
ADMIN = "admin"
DATABASE_FILE = "databases/warehouse.yaml"
BUNDLE_DIRS = ("databases", "datasets", "charts", "dashboards")
URI_MARK = "'{{ warehouse_uri }}'"
SCHEMA_MARK = "'{{ marts_schema }}'"
# The assets import overwrites what it finds (the dashboard import keeps existing charts and datasets).
METADATA = "version: 1.0.0\ntype: assets\n"
READY_TIMEOUT_S = 300  # a first start on two busy cores: the migrations alone take ~20 s


class DashboardsError(RuntimeError):
    """Superset is not installed, did not start, or refused a request: the message says which."""


@dataclass(frozen=True)
class Warehouse:
    """Where the dashboards read: a SQLAlchemy URI without its password, the password, the marts' schema."""

    uri: str
    schema: str
    password: str | None = None
    path: Path | None = None  # the local DuckDB file


def warehouse_for(settings: Settings, env: Mapping[str, str] | None = None) -> Warehouse:
    """The warehouse dbt builds for these settings, as Superset connects to it."""
    env = os.environ if env is None else env
    if not settings.is_prod:
        path = Path(env.get("IOT_LAKE_WAREHOUSE_PATH") or local_warehouse_path(settings.lake_root)).resolve()
        # Read-only, and Superset opens a connection per query (its default NullPool): a dbt run,
        # which needs DuckDB's one writer lock, is refused only while a chart's query runs.
        return Warehouse(f"duckdb:///{path}?access_mode=read_only", "marts", path=path)
    # A read-only Redshift user may be given for the dashboards; dbt's own is the fallback.
    user = env.get("IOT_LAKE_DASHBOARDS_REDSHIFT_USER") or env["IOT_LAKE_REDSHIFT_USER"]
    password = env.get("IOT_LAKE_DASHBOARDS_REDSHIFT_PASSWORD") or env["IOT_LAKE_REDSHIFT_PASSWORD"]
    host, port = env["IOT_LAKE_REDSHIFT_HOST"], env.get("IOT_LAKE_REDSHIFT_PORT") or "5439"
    database = env["IOT_LAKE_REDSHIFT_DATABASE"]
    # Redshift's certificate chains to Amazon's public roots, in the system's trust store (libpq 16+),
    # not to the RDS bundle PGSSLROOTCERT names for the run storage.
    tls = "sslmode=verify-full&sslrootcert=system"
    uri = f"redshift+psycopg2://{quote(user, safe='')}@{host}:{port}/{database}?{tls}"
    schema = f"{env.get('IOT_LAKE_REDSHIFT_SCHEMA') or 'analytics'}_marts"  # dbt_project/macros/schema.sql
    return Warehouse(uri, schema, password=password)


def superset_home(settings: Settings, env: Mapping[str, str] | None = None) -> Path:
    """Superset's state (metadata database, secrets, log): beside the local lake, else in ~/.config."""
    env = os.environ if env is None else env
    if env.get(HOME_VAR):
        return Path(env[HOME_VAR]).expanduser().resolve()
    if not settings.is_prod:
        return Path(settings.lake_root) / "_superset"
    return Path.home() / ".config" / "iot-lake" / "superset"


def _yaml_quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def fill(name: str, text: str, warehouse: Warehouse) -> str:
    """A definition from the repo with the warehouse's URI and schema in place of the marks."""
    if name.startswith("databases/"):
        return text.replace(URI_MARK, _yaml_quoted(warehouse.uri))
    if name.startswith("datasets/"):
        return text.replace(SCHEMA_MARK, _yaml_quoted(warehouse.schema))
    return text


def unfill(name: str, text: str) -> str:
    """An exported definition with the marks back in place of this instance's warehouse."""
    if name.startswith("databases/"):
        return re.sub(r"(?m)^sqlalchemy_uri: .*$", f"sqlalchemy_uri: {URI_MARK}", text)
    if name.startswith("datasets/"):
        text = re.sub(r"(?m)^schema: .*$", f"schema: {SCHEMA_MARK}", text)
        return re.sub(r"(?m)^catalog: .*$", "catalog: null", text)  # DuckDB names it for the file
    return text


def bundle(source: Path, warehouse: Warehouse) -> bytes:
    """The definitions under source as the ZIP Superset's assets import takes, marks filled."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("iot_lake/metadata.yaml", METADATA)
        for path in sorted(source.rglob("*.yaml")):
            name = path.relative_to(source).as_posix()
            if name.split("/")[0] in BUNDLE_DIRS:
                zf.writestr(f"iot_lake/{name}", fill(name, path.read_text(), warehouse))
    return out.getvalue()


def _stable_name(name: str) -> str:
    """charts/Cases_12.yaml -> charts/Cases.yaml: the ids differ between Superset instances."""
    if name.startswith(("charts/", "dashboards/", "datasets/")):
        return re.sub(r"_\d+\.yaml$", ".yaml", name)
    return name


def _file_names(members: list[str]) -> dict[str, str]:
    """Export member -> file name under dashboards/: without the root folder, and stable where two
    charts do not share a name (then both keep Superset's id)."""
    names = {m: m.split("/", 1)[1] for m in members if "/" in m}
    names = {m: n for m, n in names.items() if n.split("/")[0] in BUNDLE_DIRS}
    stable = [_stable_name(n) for n in names.values()]
    return {m: _stable_name(n) if stable.count(_stable_name(n)) == 1 else n for m, n in names.items()}


def unbundle(data: bytes, target: Path) -> list[str]:
    """Write an export's definitions under target, replacing the ones there; the names written."""
    for folder in BUNDLE_DIRS:
        for old in (target / folder).rglob("*.yaml"):
            old.unlink()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = _file_names(zf.namelist())
        for member, name in names.items():
            path = target / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(unfill(name, zf.read(member).decode()).rstrip("\n") + "\n")
    (target / "metadata.yaml").write_text(METADATA)
    return sorted(names.values())


def _secret(path: Path, nbytes: int) -> str:
    """A generated secret in a file only its owner may read, made on first use."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(nbytes))
    os.chmod(path, 0o600)  # a copy made with a wider mode is narrowed again
    return path.read_text().strip()


CONFIG = """\
# Written by `iot-lake dashboards up` on each start. The secrets are in files beside it, mode 0600.
import importlib.util
import sys
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import QueuePool

_HOME = Path({home!r})
SECRET_KEY = (_HOME / "secret-key").read_text().strip()
SQLALCHEMY_DATABASE_URI = "sqlite:///" + str(_HOME / "superset.db")
# One process, one user: the login rate limit may count in memory.
RATELIMIT_STORAGE_URI = "memory://"
# Superset's DuckDB dialect has no 5-minute grain (Redshift's has): the drill-down's time series use it.
TIME_GRAIN_ADDON_EXPRESSIONS = {{"duckdb": {{"PT5M": "TIME_BUCKET(INTERVAL '5 minutes', {{col}})"}}}}

# What a dashboard's load costs (docs/dashboards.md): Superset's own requests, not the warehouse.
_spec = importlib.util.spec_from_file_location("iot_lake_superset_addons", {addons!r})
_addons = sys.modules["iot_lake_superset_addons"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_addons)
# The action log in the metadata database cost most of a chart request: gunicorn's access log stays.
EVENT_LOGGER = _addons.AccessOnlyEventLogger()
# Superset's own cache (each page's bootstrap data, memoized a minute per user; the databases' schema
# lists): none by default, so every page rebuilt it from the metadata database.
CACHE_CONFIG = {{"CACHE_TYPE": "FileSystemCache", "CACHE_DIR": str(_HOME / "cache" / "superset")}}
# A dashboard's filter state (posted on every view) in files, not in the metadata database.
FILTER_STATE_CACHE_CONFIG = {{
    "CACHE_TYPE": "FileSystemCache",
    "CACHE_DIR": str(_HOME / "cache" / "filter-state"),
    "CACHE_DEFAULT_TIMEOUT": 90 * 86400,
    "REFRESH_TIMEOUT_ON_RETRIEVAL": True,
}}
EXPLORE_FORM_DATA_CACHE_CONFIG = {{
    "CACHE_TYPE": "FileSystemCache",
    "CACHE_DIR": str(_HOME / "cache" / "explore-form-data"),
    "CACHE_DEFAULT_TIMEOUT": 7 * 86400,
    "REFRESH_TIMEOUT_ON_RETRIEVAL": True,
}}
# Chart data: locally cached under the warehouse file's version, so a dbt run that writes it makes
# every cached answer unreachable (never stale). Without a file to version by (Redshift), none.
_WAREHOUSE_FILE = {warehouse_file!r}
DATA_CACHE_CONFIG = {{"CACHE_TYPE": "NullCache"}}
if _WAREHOUSE_FILE:
    DATA_CACHE_CONFIG = {{
        "CACHE_TYPE": "iot_lake_superset_addons.WarehouseCache",
        "CACHE_DIR": str(_HOME / "cache" / "chart-data"),
        "CACHE_DEFAULT_TIMEOUT": 7 * 86400,
        "CACHE_THRESHOLD": 2000,
        "CACHE_OPTIONS": {{"warehouse_path": _WAREHOUSE_FILE}},
    }}

# The deployment's overrides (deploy/superset/superset_config.py in prod), read last so they win.
_EXTRA = {extra!r}
if _EXTRA:
    exec(compile(Path(_EXTRA).read_text(), _EXTRA, "exec"))

if SQLALCHEMY_DATABASE_URI.startswith("sqlite:"):
    # SQLAlchemy 1.4 opens a new SQLite connection per session (NullPool): keep them, in WAL mode.
    SQLALCHEMY_ENGINE_OPTIONS = {{
        "poolclass": QueuePool,
        "pool_size": 10,
        "max_overflow": 10,
        "connect_args": {{"check_same_thread": False, "timeout": 30}},
    }}
    event.listen(Engine, "connect", _addons.tune_sqlite)
"""
PROD_CONFIG = REPO / "deploy" / "superset" / "superset_config.py"
EXTRA_CONFIG_VAR = "IOT_LAKE_SUPERSET_CONFIG"


def extra_config(settings: Settings, env: Mapping[str, str] | None = None) -> Path | None:
    """The overrides Superset reads after its generated config: $IOT_LAKE_SUPERSET_CONFIG, else the
    production recipe's in prod, else none."""
    env = os.environ if env is None else env
    if env.get(EXTRA_CONFIG_VAR):
        return Path(env[EXTRA_CONFIG_VAR]).expanduser().resolve()
    return PROD_CONFIG if settings.is_prod else None


ADDONS = Path(__file__).resolve().parent / "superset_addons.py"


def superset_config(home: Path, extra: Path | None = None, warehouse_file: Path | None = None) -> str:
    """The superset_config.py `up` writes into the home on each start."""
    return CONFIG.format(
        home=os.fspath(home),
        extra=os.fspath(extra) if extra else "",
        addons=os.fspath(ADDONS),
        warehouse_file=os.fspath(warehouse_file) if warehouse_file else "",
    )


class Superset:
    """One Superset instance: its home (state and secrets), its venv, and the port it serves on."""

    def __init__(
        self,
        home: Path,
        port: int = DEFAULT_PORT,
        venv: Path = SUPERSET_VENV,
        extra_config: Path | None = None,
        warehouse_file: Path | None = None,  # the local DuckDB file: chart data is cached by its version
    ):
        self.home, self.port, self.venv, self.extra_config = home, port, venv, extra_config
        self.warehouse_file = warehouse_file
        self.url = f"http://127.0.0.1:{port}"
        self.password_file = home / "admin-password"
        self.log_file = home / "superset.log"

    def _bin(self, name: str) -> str:
        path = self.venv / "bin" / name
        if not path.exists():
            raise DashboardsError(f"{path} not found: run scripts/setup.sh, which installs Superset there")
        return os.fspath(path)

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "SUPERSET_CONFIG_PATH": os.fspath(self.home / "superset_config.py"),
            "SUPERSET_HOME": os.fspath(self.home),
            "FLASK_APP": "superset",
        }

    def _cli(self, *args: str, stdin: str | None = None) -> None:
        done = subprocess.run(
            [self._bin("superset"), *args], env=self._env(), input=stdin, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise DashboardsError(f"superset {' '.join(args[:2])} failed:\n{(done.stdout + done.stderr)[-3000:]}")

    def _version(self) -> str:
        found = sorted(self.venv.glob("lib/python*/site-packages/apache_superset-*.dist-info"))
        if not found:
            raise DashboardsError(f"no apache-superset in {self.venv}: run scripts/setup.sh")
        return found[-1].name

    def prepare(self) -> bool:
        """Config and secrets, then the metadata database once per Superset version; True if it ran."""
        self.home.mkdir(parents=True, exist_ok=True)
        os.chmod(self.home, 0o700)  # the metadata database holds the admin's hash and the connections
        _secret(self.home / "secret-key", 42)
        password = _secret(self.password_file, 18)
        (self.home / "superset_config.py").write_text(
            superset_config(self.home, self.extra_config, self.warehouse_file)
        )
        marker, version = self.home / "initialized", self._version()
        if marker.exists() and marker.read_text() == version:
            return False
        self._cli("db", "upgrade")
        if not marker.exists():
            # The password through the prompt (stdin), not argv, which any local user's `ps` shows.
            self._cli("fab", "create-admin", *_admin_names(), "--username", ADMIN, stdin=f"{password}\n" * 2)
        self._cli("init")
        marker.write_text(version)
        return True

    def start(self) -> subprocess.Popen:
        """gunicorn on 127.0.0.1 only, its log in the home; returns once Superset answers."""
        if _listening(self.port):
            # Else the readiness check would be answered by that server and the import sent to it.
            raise DashboardsError(f"{self.url} is taken (another `iot-lake dashboards up`?): choose another --port")
        log = open(self.log_file, "ab")  # noqa: SIM115 (the server's own, for its lifetime)
        server = subprocess.Popen(
            [self._bin("gunicorn"), "--bind", f"127.0.0.1:{self.port}", "--workers", "1", "--threads", "8"]
            + ["--timeout", "120", "--graceful-timeout", "10", "--access-logfile", "-"]
            + ["superset.app:create_app()"],
            env=self._env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches `up`, which stops the server in order
        )
        log.close()
        try:
            self._wait_ready(server)
        except BaseException:
            stop(server)
            raise
        return server

    def _wait_ready(self, server: subprocess.Popen) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise DashboardsError(f"Superset exited ({server.returncode}); its log: {self.log_file}")
            try:
                if requests.get(f"{self.url}/health", timeout=5).text == "OK":
                    return
            except (requests.ConnectionError, requests.Timeout):  # not listening yet, or still booting
                pass
            time.sleep(0.5)
        raise DashboardsError(f"Superset did not answer on {self.url} in {READY_TIMEOUT_S} s; its log: {self.log_file}")

    def session(self) -> requests.Session:
        """A session logged in as the admin, with the CSRF token the import's POST needs."""
        if not self.password_file.exists():
            raise DashboardsError(f"no {self.password_file}: start Superset with `iot-lake dashboards up` first")
        s = requests.Session()
        login = {"username": ADMIN, "password": self.password_file.read_text().strip(), "provider": "db"}
        token = _json(s.post(f"{self.url}/api/v1/security/login", json=login, timeout=60))["access_token"]
        s.headers["Authorization"] = f"Bearer {token}"
        s.headers["X-CSRFToken"] = _json(s.get(f"{self.url}/api/v1/security/csrf_token/", timeout=60))["result"]
        s.headers["Referer"] = self.url
        return s

    def import_dashboards(self, warehouse: Warehouse, source: Path = DASHBOARDS_DIR) -> None:
        form = {"overwrite": "true"}
        if warehouse.password:
            form["passwords"] = json.dumps({DATABASE_FILE: warehouse.password})
        files = {"bundle": ("dashboards.zip", bundle(source, warehouse), "application/zip")}
        _json(self.session().post(f"{self.url}/api/v1/assets/import/", files=files, data=form, timeout=300))

    def export_dashboards(self, target: Path = DASHBOARDS_DIR) -> list[str]:
        """Every dashboard with its charts, datasets and database, written under target."""
        s = self.session()
        listing = _json(s.get(f"{self.url}/api/v1/dashboard/", params={"q": "(page_size:100)"}, timeout=60))
        ids = ",".join(str(d["id"]) for d in listing["result"])
        if not ids:
            raise DashboardsError("Superset has no dashboard to export")
        answer = s.get(f"{self.url}/api/v1/dashboard/export/", params={"q": f"!({ids})"}, timeout=300)
        if answer.status_code != 200:
            raise DashboardsError(f"export refused ({answer.status_code}): {answer.text[:500]}")
        return unbundle(answer.content, target)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


def _admin_names() -> list[str]:
    return ["--firstname", "iot-lake", "--lastname", "admin", "--email", "admin@localhost"]


def _json(answer: requests.Response) -> dict:
    if answer.status_code >= 400:
        # Superset answers a server error with its HTML error page: the traceback is in its log.
        said = "see the log" if answer.text.lstrip().startswith("<") else answer.text[:1000]
        raise DashboardsError(f"{answer.request.method} {answer.url} -> {answer.status_code}: {said}")
    return answer.json()


def stop(server: subprocess.Popen, timeout: float = 30) -> None:
    """gunicorn stops its workers on SIGTERM; killed if it has not within the timeout."""
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

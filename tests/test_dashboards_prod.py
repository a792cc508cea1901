"""The self-hosted Superset recipe for production (deploy/superset/): its configuration over the
environment of dashboards.env.example, without a Redshift. The Superset venv resolves the Redshift
dialect the filled URI names (no connection is opened)."""

from __future__ import annotations

import io
import json
import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml

from iot_lake.dashboards import (
    DASHBOARDS_DIR,
    PROD_CONFIG,
    SUPERSET_VENV,
    bundle,
    extra_config,
    superset_config,
    warehouse_for,
)
from iot_lake.settings import Settings

REPO = Path(__file__).resolve().parent.parent
PROD = Settings(env="prod", lake_root="s3://iot-lake-prod", historian_url="x")
LOCAL = Settings(env="local", lake_root="/tmp/lake", historian_url="x")


def _env_file() -> dict[str, str]:
    text = (REPO / "deploy" / "superset" / "dashboards.env.example").read_text()
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {key: value for key, value in pairs}


# Runs the generated config in Superset's venv (it loads iot_lake/superset_addons.py, which imports
# Superset) and prints its plain settings.
_DUMP = """import json, sys
namespace = {}
exec(compile(open(sys.argv[1]).read(), "superset_config.py", "exec"), namespace)
plain = (str, bool, int, float, type(None), dict, list)
print(json.dumps({k: v for k, v in namespace.items() if k.isupper() and isinstance(v, plain)}, default=str))
"""


def _config(home: Path, extra: Path | None, monkeypatch, warehouse_file: Path | None = None, **env: str) -> dict:
    """The generated superset_config.py executed as Superset imports it (in its venv), under env."""
    if not (SUPERSET_VENV / "bin" / "python").exists():
        pytest.skip("no .venv-superset: scripts/setup.sh")
    home.mkdir(exist_ok=True)
    (home / "secret-key").write_text("k")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    (home / "superset_config.py").write_text(superset_config(home, extra, warehouse_file))
    done = subprocess.run(
        [SUPERSET_VENV / "bin" / "python", "-c", _DUMP, home / "superset_config.py"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_prod_imports_the_same_definitions_filled_with_redshift_from_the_environment():
    env = _env_file()
    warehouse = warehouse_for(PROD, env)
    with zipfile.ZipFile(io.BytesIO(bundle(DASHBOARDS_DIR, warehouse))) as zf:
        sent = {n.removeprefix("iot_lake/"): zf.read(n).decode() for n in zf.namelist()}
    in_repo = {p.relative_to(DASHBOARDS_DIR).as_posix() for p in DASHBOARDS_DIR.rglob("*.yaml")}
    assert set(sent) == in_repo  # every chart, dataset and dashboard of dashboards/, no other
    database = yaml.safe_load(sent["databases/warehouse.yaml"])
    assert database["sqlalchemy_uri"] == (
        "redshift+psycopg2://iot_lake_dashboards@iot-lake.abc123xyz.eu-west-1.redshift.amazonaws.com:5439/iot"
        "?sslmode=verify-full&sslrootcert=system"
    )
    assert warehouse.password == env["IOT_LAKE_DASHBOARDS_REDSHIFT_PASSWORD"]  # handed apart, not in the URI
    schemas = {yaml.safe_load(text)["schema"] for name, text in sent.items() if name.startswith("datasets/")}
    assert schemas == {"analytics_marts"}
    assert not any("{{" in text for text in sent.values())


def test_prod_reads_the_recipe_config_last(tmp_path, monkeypatch):
    assert extra_config(PROD, {}) == PROD_CONFIG and PROD_CONFIG.exists()
    assert extra_config(LOCAL, {}) is None
    assert extra_config(LOCAL, {"IOT_LAKE_SUPERSET_CONFIG": str(tmp_path / "x.py")}) == tmp_path / "x.py"
    metadata = _env_file()["IOT_LAKE_SUPERSET_METADATA_URL"]
    prod = _config(tmp_path / "home", PROD_CONFIG, monkeypatch, IOT_LAKE_SUPERSET_METADATA_URL=metadata)
    assert prod["SQLALCHEMY_DATABASE_URI"] == metadata
    assert prod["PREVENT_UNSAFE_DB_CONNECTIONS"] is True and prod["PUBLIC_ROLE_LIKE"] is None
    assert prod["SECRET_KEY"] == "k"  # the generated one, never a default
    monkeypatch.delenv("IOT_LAKE_SUPERSET_METADATA_URL")
    without = _config(tmp_path / "home", PROD_CONFIG, monkeypatch)
    assert without["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'home' / 'superset.db'}"
    local = _config(tmp_path / "home", None, monkeypatch)
    assert "ENABLE_PROXY_FIX" not in local


def test_the_sqlite_tuning_and_the_chart_data_cache_apply_where_they_fit(tmp_path, monkeypatch):
    """SQLite's pool options never reach PostgreSQL's driver (it refuses check_same_thread), and chart
    data is cached only where a warehouse file versions it (locally), never over Redshift."""
    metadata = _env_file()["IOT_LAKE_SUPERSET_METADATA_URL"]
    prod = _config(tmp_path / "home", PROD_CONFIG, monkeypatch, IOT_LAKE_SUPERSET_METADATA_URL=metadata)
    assert "SQLALCHEMY_ENGINE_OPTIONS" not in prod
    assert prod["DATA_CACHE_CONFIG"] == {"CACHE_TYPE": "NullCache"}
    monkeypatch.delenv("IOT_LAKE_SUPERSET_METADATA_URL")
    local = _config(tmp_path / "home", None, monkeypatch, warehouse_file=tmp_path / "iot_lake.duckdb")
    assert local["SQLALCHEMY_ENGINE_OPTIONS"]["connect_args"]["check_same_thread"] is False
    assert local["DATA_CACHE_CONFIG"]["CACHE_TYPE"] == "iot_lake_superset_addons.WarehouseCache"
    assert local["DATA_CACHE_CONFIG"]["CACHE_OPTIONS"] == {"warehouse_path": str(tmp_path / "iot_lake.duckdb")}


@pytest.mark.skipif(not (SUPERSET_VENV / "bin" / "python").exists(), reason="no .venv-superset: scripts/setup.sh")
def test_the_superset_venv_has_the_dialect_the_redshift_uri_names():
    uri = warehouse_for(PROD, _env_file()).uri
    code = "import sys, sqlalchemy; e = sqlalchemy.create_engine(sys.argv[1]); print(e.dialect.name, e.driver)"
    done = subprocess.run([SUPERSET_VENV / "bin" / "python", "-c", code, uri], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["redshift", "psycopg2"]

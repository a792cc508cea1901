"""The dashboards (`iot-lake dashboards`, dashboards/): the definitions and their templating, then
Superset for real over a small warehouse (test_warehouse's): anonymous requests are refused, and a
headless Chromium logs in, opens each dashboard, finds every chart answered without an error, and its
main numbers equal the same queries run on the warehouse with DuckDB. Screenshots:
test-artifacts/dashboard-<slug>.png."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import socket
import stat
import subprocess
import sys
import time
import zipfile
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import duckdb
import pytest
import requests
import yaml
from click.testing import CliRunner
from dagster import AssetKey, materialize

from assets.warehouse.dbt import warehouse_models
from benchmarks.dagster_dev import free_port
from benchmarks.dashboards.browser import CHART, chart_counts, launch, log_in, open_dashboard
from iot_lake.cli import main
from iot_lake.dashboards import (
    DASHBOARDS_DIR,
    DATABASE_FILE,
    HOME_VAR,
    SCHEMA_MARK,
    SUPERSET_VENV,
    URI_MARK,
    DashboardsError,
    Superset,
    bundle,
    unbundle,
    warehouse_for,
)
from iot_lake.forecast import registry
from iot_lake.settings import Settings
from tests.test_end_to_end import chromium_binary
from tests.test_warehouse import built, lake  # noqa: F401  (fixtures: the warehouse, built by dbt)
from tests.unavailable import unavailable

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
# Each dashboard's main numbers: big-number chart title -> the warehouse query it must equal.
MAIN_NUMBERS = {
    "cases": {
        "Cases": "select count(*) from marts.fct_case",
        "Active cases": "select count(*) from marts.fct_case where is_active",
    },
    "fleet-overview": {
        "Devices": "select count(distinct device_id) from marts.dim_device where is_current",
        "Devices not healthy": "select count(*) from marts.mart_fleet_status where health <> 'healthy'",
        "Anomalous minutes, latest day": "select sum(anomalous_minutes) from marts.mart_fleet_status",
    },
    # The fixture lands faulty hours: quarantined lines are there to count, and the landing checks
    # failed on its truncated objects (copied to the lake by ops/check_results).
    "data-quality": {
        "Quarantined lines": "select count(*) from lake.quarantine_telemetry",
        "Curated rows": "select count(*) from lake.curated_telemetry",
        "Failed checks": "select count(*) from lake.ops_check_results where not passed",
    },
    # Opened on its filters' defaults: the simulator's first device and its power metric.
    "device-drill-down": {
        "Anomalous minutes": "select count(*) from marts.fct_deviation"
        " where is_anomalous and device_id = 'dev-0001' and metric = 'power'",
        "Cases of the device": "select count(*) from marts.fct_case where device_id = 'dev-0001' and metric = 'power'",
        # The weather of the device's site only: the device filter reaches the weather chart too.
        "Site weather hours": "select count(*) from marts.mart_device_weather where device_id = 'dev-0001'",
    },
    # The fixture's registry has a champion that is not the latest training: shown to 3 decimals (.3f).
    "models": {
        "Latest champion MASE": "select round(mase, 3) from marts.mart_model_history where is_champion",
    },
}
LOCAL = Settings(env="local", lake_root="/srv/lake", historian_url="sqlite://")
REDSHIFT_ENV = {
    "IOT_LAKE_REDSHIFT_HOST": "wh.example.internal",
    "IOT_LAKE_REDSHIFT_DATABASE": "iot",
    "IOT_LAKE_REDSHIFT_USER": "dbt",
    "IOT_LAKE_REDSHIFT_PASSWORD": "dbt-secret",
    "IOT_LAKE_DASHBOARDS_REDSHIFT_USER": "bi reader",
    "IOT_LAKE_DASHBOARDS_REDSHIFT_PASSWORD": "bi-secret",
    "IOT_LAKE_REDSHIFT_SCHEMA": "analytics",
}


def _definitions(folder: str) -> dict[str, dict]:
    return {
        p.relative_to(DASHBOARDS_DIR).as_posix(): yaml.safe_load(p.read_text())
        for p in (DASHBOARDS_DIR / folder).rglob("*.yaml")
    }


def _chart_uuids(dashboard: dict) -> set[str]:
    return {
        item["meta"]["uuid"]
        for item in dashboard["position"].values()
        if isinstance(item, dict) and item.get("type") == "CHART"
    }


def test_the_definitions_hang_together_over_dbt_marts():
    """Every chart is on a dashboard and reads a dataset of the repo; every dataset is a dbt mart."""
    charts, datasets, dashboards = _definitions("charts"), _definitions("datasets"), _definitions("dashboards")
    on_dashboards = set().union(*(_chart_uuids(d) for d in dashboards.values()))
    assert on_dashboards == {c["uuid"] for c in charts.values()}
    assert {c["dataset_uuid"] for c in charts.values()} <= {d["uuid"] for d in datasets.values()}
    marts = {p.stem for p in (REPO / "dbt_project" / "models" / "marts").glob("*.sql")}
    assert {d["table_name"] for d in datasets.values()} <= marts
    assert {d["slug"] for d in dashboards.values()} == set(MAIN_NUMBERS)


# The main job's window (jobs.main: --history-days 6 and --days 1): what the time series span.
MAIN_JOB_WINDOW = timedelta(days=7)
GRAINS = {
    "PT1M": timedelta(minutes=1),
    "PT5M": timedelta(minutes=5),
    "PT1H": timedelta(hours=1),
    "P1D": timedelta(days=1),
}
# Points a series may draw: a chart is under 1,600 px wide, and Chromium drew the drill-down's two
# per-minute series (10,080 points each, with markers) in seconds, the most of its load time.
MAX_POINTS = 2_500


def test_each_time_series_fits_its_row_limit_and_a_drawable_size_over_the_main_jobs_window():
    """Else the oldest points are cut silently (Superset's row limit), or the browser spends the
    dashboard's load time drawing more points than the chart has pixels."""
    for name, chart in _definitions("charts").items():
        params = chart["params"]
        if not chart["viz_type"].startswith("echarts_timeseries"):
            continue
        points = MAIN_JOB_WINDOW / GRAINS[params["time_grain_sqla"]]
        if not params.get("groupby"):  # one row per time bucket (a group-by multiplies them by its groups)
            assert points <= params["row_limit"], name
        assert points <= MAX_POINTS, (name, points)


def test_a_table_per_landing_hour_draws_a_landing_day_a_page():
    """A row per hour is 168 rows over the main job's window: drawn at once, the data quality
    dashboard's row accounting cost a third of its charts' time in the browser (docs/dashboards.md)."""
    hourly = [
        (name, chart["params"])
        for name, chart in _definitions("charts").items()
        if chart["viz_type"] == "table" and "landing_hour" in chart["params"].get("all_columns", [])
    ]
    assert hourly
    for name, params in hourly:
        assert params["row_limit"] >= MAIN_JOB_WINDOW / timedelta(hours=1), name  # every hour, paged
        assert 0 < params.get("page_length", 0) <= 24, name


def test_the_definitions_name_the_warehouse_by_marks_only():
    """No path, host or schema of one machine in the repo: the environment fills them on import."""
    assert yaml.safe_load((DASHBOARDS_DIR / DATABASE_FILE).read_text())["sqlalchemy_uri"] == yaml.safe_load(URI_MARK)
    for name, dataset in _definitions("datasets").items():
        assert dataset["schema"] == yaml.safe_load(SCHEMA_MARK) and dataset["catalog"] is None, name
    for path in DASHBOARDS_DIR.rglob("*.yaml"):
        assert not re.search(r"duckdb:|redshift|/tmp/|\.lake/", path.read_text()), path


def test_the_local_warehouse_is_opened_read_only_and_prod_reads_redshift_from_the_environment():
    local = warehouse_for(LOCAL, {})
    assert local.uri == "duckdb:////srv/lake/warehouse/iot_lake.duckdb?access_mode=read_only"
    assert (local.schema, local.password) == ("marts", None)
    prod = warehouse_for(Settings(env="prod", lake_root="s3://b", historian_url="x"), REDSHIFT_ENV)
    # The password travels apart from the URI (Superset's import takes it as a separate field).
    assert prod.uri == (
        "redshift+psycopg2://bi%20reader@wh.example.internal:5439/iot?sslmode=verify-full&sslrootcert=system"
    )
    assert (prod.schema, prod.password) == ("analytics_marts", "bi-secret")
    fallback = {k: v for k, v in REDSHIFT_ENV.items() if "DASHBOARDS" not in k}
    assert warehouse_for(Settings(env="prod", lake_root="s3://b", historian_url="x"), fallback).password == "dbt-secret"


def _as_exported(data: bytes) -> bytes:
    """A bundle as Superset's export names its files: a root folder, ids after the names."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for i, name in enumerate(src.namelist()):
            renamed = re.sub(r"^iot_lake/((?:charts|dashboards|datasets)/.*)\.yaml$", rf"export_1/\1_{i}.yaml", name)
            dst.writestr(renamed.replace("iot_lake/", "export_1/"), src.read(name))
    return out.getvalue()


def test_an_export_puts_the_marks_back_and_keeps_the_file_names(tmp_path):
    for warehouse in (warehouse_for(LOCAL, {}), warehouse_for(Settings("prod", "s3://b", "x"), REDSHIFT_ENV)):
        data = bundle(DASHBOARDS_DIR, warehouse)
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            assert warehouse.uri in zf.read(f"iot_lake/{DATABASE_FILE}").decode()
            assert "{{" not in "".join(zf.read(n).decode() for n in zf.namelist())
        target = tmp_path / warehouse.schema
        (target / "charts").mkdir(parents=True)
        (target / "charts" / "Deleted_in_the_UI.yaml").write_text("slice_name: gone\n")
        unbundle(_as_exported(data), target)
        for path in DASHBOARDS_DIR.rglob("*.yaml"):
            assert (target / path.relative_to(DASHBOARDS_DIR)).read_text() == path.read_text(), path
        assert not (target / "charts" / "Deleted_in_the_UI.yaml").exists()


def test_the_superset_venv_reads_the_warehouse_file_format_of_the_platform():
    """DuckDB's file format follows its version: Superset's must be the one dbt writes with."""
    lock = (REPO / "uv.lock").read_text()
    locked = re.search(r'\[\[package\]\]\nname = "duckdb"\nversion = "([^"]+)"', lock).group(1)
    pinned = re.search(r"(?m)^duckdb==(\S+)$", (REPO / "scripts" / "superset-requirements.txt").read_text()).group(1)
    assert pinned == locked


_CACHE_PROBE = """import importlib.util, sys
import duckdb
spec = importlib.util.spec_from_file_location("addons", sys.argv[1])
addons = importlib.util.module_from_spec(spec)
spec.loader.exec_module(addons)
path = sys.argv[2] + "/iot_lake.duckdb"
with duckdb.connect(path) as con:
    con.execute("create table t as select 1 as n")
cache = addons.WarehouseCache(sys.argv[2] + "/cache", threshold=10, warehouse_path=path)
cache.set("chart", {"n": 1})
seen = [cache.get("chart"), cache.has("chart")]
with duckdb.connect(path, read_only=True) as con:  # a reader changes nothing
    con.execute("select * from t").fetchall()
seen.append(cache.get("chart"))
with duckdb.connect(path) as con:  # a dbt run: the same file written
    con.execute("insert into t values (2)")
seen += [cache.get("chart"), cache.has("chart")]
print(seen)
"""


def test_the_chart_data_cache_forgets_everything_when_the_warehouse_is_written(tmp_path):
    """iot_lake/superset_addons.py's WarehouseCache, in Superset's venv over a DuckDB file: what was
    cached stays while the warehouse is only read, and is gone after a write."""
    if not (SUPERSET_VENV / "bin" / "python").exists():
        unavailable(f"no Superset in {SUPERSET_VENV} (scripts/setup.sh installs it)", "the cache test")
    addons = REPO / "iot_lake" / "superset_addons.py"
    args = [SUPERSET_VENV / "bin" / "python", "-c", _CACHE_PROBE, addons, tmp_path]
    done = subprocess.run(args, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == "[{'n': 1}, True, {'n': 1}, None, False]"


# ---- Superset for real -------------------------------------------------------------------------


class Running:
    def __init__(self, url: str, home: Path, warehouse: Path, ready_s: float):
        self.url, self.home, self.warehouse, self.ready_s = url, home, warehouse, ready_s

    def password(self) -> str:
        return (self.home / "admin-password").read_text().strip()


def _wait_for(process: subprocess.Popen, log: Path, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert process.poll() is None, (
            f"`iot-lake dashboards up` exited {process.returncode}:\n{log.read_text()[-3000:]}"
        )
        assert time.monotonic() < deadline, f"no {text!r} in {timeout} s:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def superset(lake, built, tmp_path_factory):  # noqa: F811  (the fixtures imported above)
    if not (SUPERSET_VENV / "bin" / "gunicorn").exists():
        unavailable(f"no Superset in {SUPERSET_VENV} (scripts/setup.sh installs it)", "the dashboard tests")
    assert all(r.success for r in built)
    home, port = tmp_path_factory.mktemp("superset"), free_port()
    warehouse = Path(lake.path("warehouse/iot_lake.duckdb"))
    env = {**os.environ, "IOT_LAKE_ROOT": lake.url, "IOT_LAKE_WAREHOUSE_PATH": str(warehouse)}
    env.update({"IOT_LAKE_SUPERSET_HOME": str(home / "state"), "COLUMNS": "400"})
    env.pop("IOT_LAKE_ENV", None)
    log = home / "up.log"
    t0 = time.monotonic()
    with open(log, "w") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "iot_lake.cli", "dashboards", "up", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for(up, log, "Superset ready", timeout=400)
        print(f"`iot-lake dashboards up`, first start: ready in {time.monotonic() - t0:.1f} s")
        yield Running(f"http://127.0.0.1:{port}", home / "state", warehouse, time.monotonic() - t0)
    finally:
        up.terminate()  # SIGTERM: `up` stops its server before it exits
        up.wait(60)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/health", timeout=5)


@pytest.mark.slow
def test_anonymous_requests_and_the_default_password_are_refused(superset):
    page = requests.get(f"{superset.url}/superset/dashboard/cases/", allow_redirects=False, timeout=30)
    assert page.status_code == 302 and "/login" in page.headers["Location"]
    assert requests.get(f"{superset.url}/api/v1/dashboard/", timeout=30).status_code == 401
    assert requests.post(f"{superset.url}/api/v1/chart/data", json={}, timeout=30).status_code == 401
    login = {"username": "admin", "password": "admin", "provider": "db"}
    assert requests.post(f"{superset.url}/api/v1/security/login", json=login, timeout=30).status_code == 401


@pytest.mark.slow
def test_the_secrets_are_generated_and_private(superset):
    assert len(superset.password()) >= 20 and superset.password() != "admin"
    for name in ("admin-password", "secret-key"):
        assert stat.S_IMODE((superset.home / name).stat().st_mode) == 0o600, name
    config = (superset.home / "superset_config.py").read_text()
    assert (superset.home / "secret-key").read_text().strip() not in config
    assert superset.password() not in (superset.home / "superset.log").read_text()


def _warehouse_number(path: Path, sql: str) -> float:
    with duckdb.connect(str(path), read_only=True) as con:
        return float(con.execute(sql).fetchall()[0][0] or 0)


@pytest.mark.slow
def test_each_dashboard_shows_its_charts_and_the_warehouse_numbers_in_a_browser(superset):
    from playwright.sync_api import sync_playwright

    binary = chromium_binary()
    ARTIFACTS.mkdir(exist_ok=True)
    charts = chart_counts()
    with sync_playwright() as p:
        browser = launch(p, binary)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1200})
            log_in(page, superset.url, superset.password())
            for slug, numbers in MAIN_NUMBERS.items():
                shown = _open_dashboard(page, superset.url, slug, charts[slug], set(numbers))
                for title, sql in numbers.items():
                    assert title in shown, (slug, title, shown)
                    assert shown[title] == _warehouse_number(superset.warehouse, sql), (slug, title)
        finally:
            browser.close()


@pytest.mark.slow
def test_a_warehouse_run_that_changes_the_numbers_shows_in_the_browser_at_once(superset, lake):  # noqa: F811
    """Chart data is cached (iot_lake/superset_addons.py): the next view after a dbt run must still
    show the warehouse's numbers, not the cached ones. A new champion is trained and warehouse_models
    runs, as the nightly training does; the models dashboard, viewed before, shows its MASE."""
    from playwright.sync_api import sync_playwright

    sql = MAIN_NUMBERS["models"]["Latest champion MASE"]
    before = _warehouse_number(superset.warehouse, sql)
    charts = chart_counts()
    with sync_playwright() as p:
        browser = launch(p, chromium_binary())
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1200})
            log_in(page, superset.url, superset.password())
            # twice: the second view is answered from the cache (so the cache is there to go stale)
            for _ in range(2):
                assert (
                    _open_dashboard(page, superset.url, "models", charts["models"], {"Latest champion MASE"})[
                        "Latest champion MASE"
                    ]
                    == before
                )
            _train_a_new_champion(lake, mase=0.612)
            shown = _open_dashboard(page, superset.url, "models", charts["models"], {"Latest champion MASE"})
        finally:
            browser.close()
    after = _warehouse_number(superset.warehouse, sql)
    assert after == 0.612 != before
    assert shown["Latest champion MASE"] == after


def _table_rows(page, title: str) -> list[list[str]]:
    """The rows a table chart draws (its current page), each cell's text, once it has drawn some: its
    data can have answered before the table is drawn (CI under load read one with no rows)."""
    rows = f'{CHART}[data-test-chart-name="{title}"] table tbody tr'
    page.wait_for_selector(rows, timeout=30_000)
    return page.eval_on_selector_all(rows, "rows => rows.map(r => [...r.cells].map(c => c.innerText.trim()))")


def _warehouse_rows(path: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql).fetchall()


@pytest.mark.slow
def test_the_data_quality_charts_show_the_warehouse_rows(superset):
    """The charts drawn cheaper (docs/dashboards.md, what a load costs) still show the warehouse's
    numbers: the quarantine rate of every landing hour and reason (the heatmap's data), the lines per
    reason counted from the lake, and a landing day of row accounting a page, the newest first."""
    from playwright.sync_api import sync_playwright

    charts, data = chart_counts(), {}
    with sync_playwright() as p:
        browser = launch(p, chromium_binary())
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1200})
            log_in(page, superset.url, superset.password())
            _open_dashboard(page, superset.url, "data-quality", charts["data-quality"], set(), data)
            by_reason, accounting = (
                _table_rows(page, t) for t in ("Quarantined lines by reason", "Row accounting per landing hour")
            )
        finally:
            browser.close()
    rates = _warehouse_rows(
        superset.warehouse,
        "select epoch_ms(landing_hour), reason, quarantine_rate from marts.mart_quarantine_hourly",
    )
    assert len(rates) > 1  # the fixture's faulty hours
    heatmap = data["Quarantine rate by reason and hour"]
    assert sorted((r["landing_hour"], r["reason"], round(r["rate"], 9)) for r in heatmap) == sorted(
        (ms, reason, round(rate, 9)) for ms, reason, rate in rates
    )
    lines = _warehouse_rows(superset.warehouse, "select reason, count(*) from lake.quarantine_telemetry group by 1")
    assert sorted((r[0], int(r[1].replace(",", ""))) for r in by_reason) == sorted(lines)
    hours = _warehouse_rows(
        superset.warehouse,
        "select strftime(landing_hour, '%Y-%m-%d %H:%M'), curated_rows, quarantined_lines"
        " from marts.mart_row_accounting order by landing_hour desc",
    )
    assert hours and [(r[0], int(r[1]), int(r[2])) for r in accounting] == hours[:24]  # the first page


def _train_a_new_champion(lake, mase: float) -> None:  # noqa: F811
    """A promoted version recorded through the registry, then warehouse_models (one dbt run)."""
    from tests.test_warehouse import _backtest, _resources

    backtest = _backtest(mase, 0.98, 0.97, 0.8, 0.95)
    version = registry.ModelVersion(
        "forecast-2026-11-14-f6", "k/f6", "lightgbm", mase, "a", "b", "2026-11-14", backtest, True, "better"
    )
    registry.record(lake, version)
    assert materialize([warehouse_models], resources=_resources(lake)).success


def _open_dashboard(
    page, url: str, slug: str, charts: int, numbers: set[str], data: dict[str, list[dict]] | None = None
) -> dict[str, int]:
    """Open a dashboard, wait for each chart, screenshot it; its big numbers by chart title. `data`, if
    given, receives each chart's data as Superset answered it (its rows), by chart title."""
    answers: list = []

    def chart_data(response) -> None:
        if "/api/v1/chart/data" in response.url:
            answers.append(response)

    page.on("response", chart_data)
    try:
        print(f"dashboard {slug}: {charts} charts in {open_dashboard(page, url, slug, charts):.1f} s")
        titles = dict(
            page.eval_on_selector_all(CHART, "els => els.map(e => [e.dataset.testChartId, e.dataset.testChartName])")
        )
        # A chart can be on the page before its data has answered (CI at load 5-7 once collected the
        # native filter's answer and seven charts'): wait for each chart's own answer.
        deadline = time.monotonic() + 30
        while data is not None and not titles.keys() <= _answered(answers) and time.monotonic() < deadline:
            page.wait_for_timeout(250)
    finally:
        page.remove_listener("response", chart_data)
    page.screenshot(path=ARTIFACTS / f"dashboard-{slug}.png", full_page=True)
    # One answer per chart, and one per native filter (its values come through the same endpoint).
    assert len(answers) >= charts and {a.status for a in answers} == {200}, [(a.url, a.status) for a in answers]
    if data is not None:
        for answer in answers:
            if _slice_id(answer) in titles:
                data[titles[_slice_id(answer)]] = answer.json()["result"][0]["data"]
    texts = page.eval_on_selector_all(CHART, "els => els.map(e => [e.dataset.testChartName, e.innerText])")
    for title, text in texts:
        # the title aside: the data quality dashboard's failed-checks charts are named so
        assert not re.search(r"error|unexpected|failed", text.replace(title, ""), re.IGNORECASE), (slug, title, text)
    # A big number can be drawn a moment after its chart data came (seen at load 9): wait for them.
    deadline = time.monotonic() + 15
    while not numbers <= (shown := _big_numbers(page)).keys() and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    return shown


def _slice_id(answer) -> str:
    form_data = json.loads(parse_qs(urlparse(answer.url).query).get("form_data", ["{}"])[0])
    return str(form_data.get("slice_id"))


def _answered(answers: list) -> set[str]:
    """The chart ids whose data request has answered."""
    return {_slice_id(a) for a in answers}


def _big_numbers(page) -> dict[str, float]:
    pairs = page.eval_on_selector_all(
        f'{CHART}[data-test-viz-type="big_number_total"]',
        "els => els.map(e => [e.dataset.testChartName, (e.querySelector('.header-line') || {}).innerText])",
    )
    # counts with thousands separators (1,234) and decimals as their format rounds them (0.840)
    return {
        title: float(text.replace(",", ""))
        for title, text in pairs
        if text and re.fullmatch(r"-?[\d,]*\.?\d+", text.strip())
    }


def _without_instance_ids(name: str, definition: dict) -> dict:
    """A chart or dashboard as any Superset instance exports it: the database ids it names dropped."""
    if name.startswith("charts/"):
        definition["params"].pop("datasource", None)
    if name.startswith("dashboards/"):
        definition["position"] = {k: v for k, v in definition["position"].items() if isinstance(v, dict)}
        for item in definition["position"].values():
            item.get("meta", {}).pop("chartId", None)
        definition.pop("metadata")
    return definition


@pytest.mark.slow
def test_export_writes_back_the_definitions_superset_holds(superset, tmp_path):
    env = {"IOT_LAKE_SUPERSET_HOME": str(superset.home), "COLUMNS": "400"}
    port = superset.url.rsplit(":", 1)[1]
    result = CliRunner().invoke(main, ["dashboards", "export", "--port", port, "--to", str(tmp_path)], env=env)
    assert result.exit_code == 0, result.output
    exported = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.yaml")}
    assert exported == {p.relative_to(DASHBOARDS_DIR).as_posix() for p in DASHBOARDS_DIR.rglob("*.yaml")}
    for name in sorted(exported):
        ours, theirs = (yaml.safe_load((root / name).read_text()) for root in (DASHBOARDS_DIR, tmp_path))
        assert _without_instance_ids(name, theirs) == _without_instance_ids(name, ours), name


def test_the_dashboards_hang_in_the_lineage_below_the_marts_they_read(defs):
    from assets.dashboards import dashboard_tables

    graph = defs.resolve_asset_graph()
    for slug, (_, tables) in dashboard_tables().items():
        node = graph.get(AssetKey(["dashboards", slug.replace("-", "_")]))
        assert not node.is_materializable  # external: a warehouse run invalidates Superset's cache itself
        assert node.parent_keys == {AssetKey(["warehouse", t]) for t in tables}
        assert all(graph.has(parent) for parent in node.parent_keys)
    assert dashboard_tables()["data-quality"][1] == [
        "mart_check_results",
        "mart_quarantine_hourly",
        "mart_row_accounting",
    ]
    assert dashboard_tables()["fleet-overview"][1] == ["dim_device", "fct_case", "mart_fleet_status", "mart_freshness"]


def test_the_production_unit_runs_up_with_its_state_in_a_private_directory():
    unit = (REPO / "deploy" / "systemd" / "iot-lake-dashboards.service").read_text()
    lines = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    assert shlex.split(lines["ExecStart"])[1:3] == ["dashboards", "up"]
    assert lines["Environment"] == f"{HOME_VAR}=/var/lib/{lines['StateDirectory']}"
    assert lines["StateDirectoryMode"] == "0700" and lines["EnvironmentFile"] == "/etc/iot-lake/env"


def test_up_refuses_a_port_another_server_holds(tmp_path):
    """Else the readiness check would be answered by that server and the dashboards imported into it."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(DashboardsError, match="is taken"):
            Superset(tmp_path, taken.getsockname()[1]).start()

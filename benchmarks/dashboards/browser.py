"""Superset in a headless Chromium (Debian's, driven by Playwright: never a downloaded browser),
shared by tests/test_dashboards.py and this benchmark: log in, open a dashboard, wait until every
chart is drawn."""

from __future__ import annotations

import os
import time
from pathlib import Path

import yaml

from iot_lake.dashboards import ADMIN, DASHBOARDS_DIR

CHART = '[data-test="chart-grid-component"]'  # a chart's box on a dashboard, titled by data-test-chart-name
# Every chart box is there, none is loading, and each holds a drawn chart or an error message.
SETTLED = """n => {
    const charts = [...document.querySelectorAll('[data-test="chart-grid-component"]')];
    return charts.length == n && charts.every(c => !c.querySelector('[data-test="loading-indicator"]')
        && c.querySelector('.slice_container, .ant-alert, [role="alert"]'));
}"""


# Charts drawn as an error (SETTLED counts them as settled: the benchmark must not time them as drawn).
FAILED = """() => [...document.querySelectorAll('[data-test="chart-grid-component"]')]
    .filter(c => c.querySelector('.ant-alert, [role="alert"]')).map(c => c.dataset.testChartName)"""


def chart_counts(source: Path = DASHBOARDS_DIR) -> dict[str, int]:
    """Dashboard slug -> how many charts its layout holds."""
    out = {}
    for path in sorted((source / "dashboards").glob("*.yaml")):
        dashboard = yaml.safe_load(path.read_text())
        items = dashboard["position"].values()
        out[dashboard["slug"]] = sum(1 for v in items if isinstance(v, dict) and v.get("type") == "CHART")
    return out


def launch(playwright, chromium: str):
    sandbox = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium's sandbox refuses to run as root
    return playwright.chromium.launch(executable_path=chromium, args=sandbox)


def log_in(page, url: str, password: str) -> None:
    page.goto(f"{url}/login/")
    page.fill('[data-test="username-input"]', ADMIN)
    page.fill('[data-test="password-input"]', password)
    page.click('[data-test="login-button"]')
    page.wait_for_url(lambda u: "/login" not in u, timeout=60_000)


def open_dashboard(page, url: str, slug: str, charts: int) -> float:
    """Seconds from navigating to the dashboard until every chart is drawn; returns once the network
    is quiet too (half a second without a request: Playwright's rule, outside the clock)."""
    t0 = time.perf_counter()
    page.goto(f"{url}/superset/dashboard/{slug}/")
    page.wait_for_function(SETTLED, arg=charts, timeout=120_000)
    drawn = time.perf_counter() - t0
    failed = page.evaluate(FAILED)
    if failed:
        raise RuntimeError(f"dashboard {slug}: these charts show an error: {', '.join(failed)}")
    page.wait_for_load_state("networkidle")
    return drawn

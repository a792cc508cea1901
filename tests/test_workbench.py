"""The operator workbench (GET /workbench) in headless Chromium, served by the app over real HTTP.

Playwright drives Debian's Chromium (/usr/bin/chromium): no browser is downloaded. Without it the
test skips locally and fails under CI (tests/unavailable.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import requests
import uvicorn

from benchmarks.dagster_dev import free_port
from iot_lake.cases.model import RESOLVED, Deviation
from iot_lake.cases.store import CaseStore
from tests.api_helpers import make_app
from tests.cases_helpers import T0
from tests.unavailable import assert_skipped_locally_and_failed_in_ci, chromium_binary


@pytest.fixture
def site(tmp_path) -> Iterator[tuple[str, str, list[str], dict]]:
    """The app served by uvicorn on loopback: its base URL, case store, case keys and keys."""
    app, url, keys, tokens = make_app(tmp_path)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    base = f"http://127.0.0.1:{server.config.port}"
    try:
        yield base, url, keys, tokens
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def page():
    binary = chromium_binary("the workbench tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=binary, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(15_000)  # a page that never shows what is waited for fails soon
            yield page
        finally:
            browser.close()


def test_the_page_and_its_files_are_served_locally_under_a_strict_policy(site):
    base, *_ = site
    page = requests.get(f"{base}/workbench", timeout=5)
    assert page.status_code == 200 and "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert "http" not in page.text.replace("http://www.w3.org", "")  # nothing fetched from elsewhere
    for asset in ("workbench.js", "workbench.css"):
        assert requests.get(f"{base}/workbench/static/{asset}", timeout=5).status_code == 200
    assert "/workbench" not in requests.get(f"{base}/openapi.json", timeout=5).json()["paths"]


def test_an_operator_signs_in_sees_the_cases_and_resolves_one(site, page):
    base, url, keys, tokens = site
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{base}/workbench")
    page.fill("#api-key", tokens["operator"])
    page.click("#sign-in")
    rows = page.locator("#cases tbody tr")
    rows.first.wait_for()
    assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.key)")) == sorted(keys)
    # The key stays in the tab only.
    assert page.evaluate("sessionStorage.getItem('iot-lake-api-key')") == tokens["operator"]
    assert page.evaluate("localStorage.length") == 0

    key = next(k for k in keys if k.startswith("dev-001|"))
    page.click(f"#cases tbody tr[data-key='{key}']")
    chart = page.locator("#evidence-chart")
    chart.wait_for()
    # dev-001 has aggregates with forecast bands and scores around its case, and two anomalous points.
    assert chart.locator("polyline.actual").count() == 1
    assert chart.locator("polygon.band").count() >= 1 and chart.locator("polyline.score").count() >= 1
    assert chart.locator("circle.evidence").count() == 2

    page.fill("#note", "sensor replaced")
    page.click("#resolve")
    page.wait_for_selector(f"#case-status[data-status='{RESOLVED}']")
    assert "resolved" in page.text_content("#message")
    page.wait_for_function(f"!document.querySelector(\"#cases tbody tr[data-key='{key}']\")")
    assert page.locator("#cases tbody tr").count() == len(keys) - 1
    assert "by api:operator-person: sensor replaced" in page.text_content("#history")
    with CaseStore(url) as store:
        assert store.get(key).status == RESOLVED
        assert store.history(key)[-1].actor == "api:operator-person"
        assert store.history(key)[-1].note == "sensor replaced"
    assert errors == []


def test_a_silent_sensors_case_shows_when_it_fell_silent_not_a_reading(site, page):
    base, url, keys, tokens = site
    silent = Deviation("dev-003", "power", "site-1", T0, None, None, None, 0.0, True)  # iot_lake.detect.silence
    with CaseStore(url) as store:
        store.observe(silent)
        key = next(c.case_key for c in store.list_cases() if c.device_id == "dev-003")
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{base}/workbench")
    page.fill("#api-key", tokens["read"])
    page.click("#sign-in")
    page.click(f"#cases tbody tr[data-key='{key}']")
    chart = page.locator("#evidence-chart")
    chart.wait_for()
    assert chart.locator("line.silence").count() == 1 and chart.locator("circle.evidence").count() == 0
    assert errors == []


def test_a_read_key_cannot_act_and_a_bad_key_is_asked_again(site, page):
    base, url, keys, tokens = site
    page.goto(f"{base}/workbench")
    page.fill("#api-key", tokens["read"])
    page.click("#sign-in")
    page.locator("#cases tbody tr").first.wait_for()
    key = sorted(keys)[0]
    page.click(f"#cases tbody tr[data-key='{key}']")
    page.locator("#case-status").wait_for()
    page.click("#ack")
    page.wait_for_selector("#message.error")
    assert "operator key" in page.text_content("#message")
    with CaseStore(url) as store:
        assert store.get(key).status == "open"

    page.click("#sign-out")
    page.fill("#api-key", "iotl_00000000_wrong")
    page.click("#sign-in")
    page.wait_for_selector("#key-form:not([hidden])")
    assert "not accepted" in page.text_content("#message")
    assert page.evaluate("sessionStorage.getItem('iot-lake-api-key')") is None


def test_without_chromium_it_skips_locally_and_fails_in_ci(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setattr("os.access", lambda path, mode: False)
    probe = lambda: chromium_binary("the workbench tests")  # noqa: E731
    assert_skipped_locally_and_failed_in_ci(monkeypatch, probe, "chromium not found", "workbench tests must run there")

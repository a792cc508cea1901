"""Outbox delivery: retries with backoff, order per case and sink, no repeats; the local sinks."""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sqlalchemy as sa

from iot_lake.cases.model import case_key
from iot_lake.cases.outbox import deliver_pending, retry_delay
from iot_lake.cases.schema import outbox
from iot_lake.cases.sinks import (
    SIGNATURE_HEADER,
    JsonLinesSink,
    LogSink,
    OutboxEvent,
    Sink,
    WebhookSink,
    webhook_signature,
)
from iot_lake.cases.store import CaseStore
from tests.cases_helpers import T0, point

KEY = case_key("dev-001", "temperature", T0)


class Recording(Sink):
    """Records what it delivers; fails its first ``failures`` calls."""

    def __init__(self, name: str, failures: int = 0):
        self.name, self.failures, self.delivered = name, failures, []

    def deliver(self, event: OutboxEvent) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError(f"{self.name} is down")
        self.delivered.append((event.event, event.case_key))


def rows(store) -> list[dict]:
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(outbox).order_by(outbox.c.id))]


def test_a_failing_sink_is_retried_with_backoff_and_delivered_once(store_url):
    flaky, steady = Recording("flaky", failures=2), Recording("steady")
    with CaseStore(store_url, sinks=[flaky, steady], clock=lambda: T0) as store:
        store.observe(point(0))
        now = T0
        report = deliver_pending(store, [flaky, steady], now)
        assert (report.delivered, report.failed) == (1, 1) and "flaky is down" in report.errors[0]
        row = rows(store)[0]
        assert (row["sink"], row["attempts"], row["next_attempt_at"], row["delivered_at"]) == (
            "flaky",
            1,
            now + timedelta(seconds=30),
            None,
        )
        assert row["last_error"] == "ConnectionError: flaky is down"

        assert deliver_pending(store, [flaky, steady], now + timedelta(seconds=29)).waiting == 1  # not due yet
        now += timedelta(seconds=30)
        assert deliver_pending(store, [flaky, steady], now).failed == 1
        assert (rows(store)[0]["attempts"], rows(store)[0]["next_attempt_at"]) == (2, now + timedelta(minutes=1))

        now += timedelta(minutes=1)
        assert deliver_pending(store, [flaky, steady], now).delivered == 1
        assert [(r["sink"], r["attempts"], r["delivered_at"]) for r in rows(store)] == [
            ("flaky", 3, now),
            ("steady", 1, T0),
        ]
        assert rows(store)[0]["last_error"] is None
        for later in (now, now + timedelta(days=1)):
            report = deliver_pending(store, [flaky, steady], later)
            assert (report.delivered, report.failed, report.waiting) == (0, 0, 0)
        assert flaky.delivered == steady.delivered == [("opened", KEY)]


def test_retry_delays_double_up_to_an_hour():
    assert [retry_delay(n).total_seconds() for n in (1, 2, 3, 4, 8, 20)] == [30, 60, 120, 240, 3600, 3600]


def test_a_case_events_wait_behind_an_undelivered_one_of_the_same_sink(store_url):
    down = Recording("down", failures=1)
    with CaseStore(store_url, sinks=[down], clock=lambda: T0) as store:
        store.observe(point(0))
        store.observe(point(0, device="dev-002", site="site-2"))  # another site: no site incident
        store.acknowledge(KEY, actor="ana")
        report = deliver_pending(store, [down], T0)
        # dev-001 "opened" failed, so its "acknowledged" waits; dev-002 goes out.
        assert (report.delivered, report.failed, report.waiting) == (1, 1, 1)
        assert down.delivered == [("opened", case_key("dev-002", "temperature", T0))]
        deliver_pending(store, [down], T0 + timedelta(seconds=30))
        assert down.delivered[1:] == [("opened", KEY), ("acknowledged", KEY)]


def test_rows_of_a_sink_no_longer_configured_stay_pending(store_url):
    with CaseStore(store_url, sinks=[Recording("gone"), Recording("here")], clock=lambda: T0) as store:
        store.observe(point(0))
        here = Recording("here")
        assert deliver_pending(store, [here], T0 + timedelta(hours=1)).delivered == 1
        assert [(r["sink"], r["delivered_at"] is None) for r in rows(store)] == [("gone", True), ("here", False)]


def test_a_claimed_row_is_not_delivered_by_a_second_deliverer(store_url):
    """A deliverer claims a row before calling the sink; another one running meanwhile skips it."""
    with CaseStore(store_url, sinks=[Recording("slow")], clock=lambda: T0) as store:
        store.observe(point(0))

        class Slow(Recording):
            def deliver(self, event):
                inner.append(deliver_pending(store, [Recording("slow")], T0 + timedelta(hours=1)))
                super().deliver(event)

        inner = []
        slow = Slow("slow")
        assert deliver_pending(store, [slow], T0 + timedelta(hours=1)).delivered == 1
        assert (inner[0].delivered, inner[0].waiting) == (0, 1)
        assert rows(store)[0]["attempts"] == 1


def test_local_sinks_write_the_log_and_json_lines(tmp_path, caplog):
    path = tmp_path / "lake" / "cases" / "_events" / "events.jsonl"
    sinks = [LogSink(), JsonLinesSink(path)]
    with CaseStore(f"sqlite:///{tmp_path / 'cases.sqlite'}", sinks=sinks) as store:
        store.observe(point(0))
        store.resolve(KEY, actor="ana", false_positive=True)
        with caplog.at_level(logging.INFO, logger="iot_lake.cases"):
            deliver_pending(store, sinks, T0 + timedelta(days=1000))
    assert [r.getMessage() for r in caplog.records] == [
        f"case opened {KEY}: dev-001 temperature at site-1, severity warning, status open",
        f"case resolved {KEY}: dev-001 temperature at site-1, severity warning, status false_positive",
    ]
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(e["event"], e["status"], e["actor"]) for e in lines] == [
        ("opened", "open", "detector"),
        ("resolved", "false_positive", "ana"),
    ]
    assert lines[0]["event_id"] < lines[1]["event_id"] and lines[0]["evidence"]["max_score"] == 4.0


@pytest.fixture
def webhook():
    """A local HTTP endpoint that records JSON POSTs (and their signatures) and answers with the next
    queued status: a code, a redirect to /elsewhere, or "slow"."""
    received, statuses, signatures = [], [], []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path.startswith("/elsewhere"):  # where a redirect points: must never be reached
                received.append(("redirected", json.loads(body)))
            else:
                received.append((self.headers["Content-Type"], json.loads(body)))
            signatures.append((self.headers.get(SIGNATURE_HEADER), body))
            status = statuses.pop(0) if statuses else 204
            if status == "slow":  # answers at once, then trickles its body past the sink's deadline
                self.send_response(200)
                self.send_header("Content-Length", "100")
                self.end_headers()
                try:
                    for _ in range(10):
                        self.wfile.write(b"x" * 10)
                        self.wfile.flush()
                        time.sleep(0.3)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the sink gave up at its deadline, as it should
                return
            self.send_response(status)
            if status in (301, 302, 307, 308):
                self.send_header("Location", "/elsewhere")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received, statuses, signatures
    server.shutdown()
    server.server_close()


def test_webhook_posts_json_and_a_server_error_is_retried(tmp_path, webhook):
    url, received, statuses, signatures = webhook
    statuses.append(503)
    sink = WebhookSink(url)
    with CaseStore(f"sqlite:///{tmp_path / 'cases.sqlite'}", sinks=[sink], clock=lambda: T0) as store:
        store.observe(point(0))
        report = deliver_pending(store, [sink], T0)
        assert report.failed == 1 and "503" in rows(store)[0]["last_error"]
        assert deliver_pending(store, [sink], T0 + timedelta(seconds=30)).delivered == 1
    assert [(ctype, doc["event"], doc["case_key"]) for ctype, doc in received] == [
        ("application/json", "opened", KEY)
    ] * 2


def _event() -> OutboxEvent:
    return OutboxEvent(id=7, case_key=KEY, event="opened", payload={"case_key": KEY, "event": "opened"})


def test_webhook_signs_the_body_with_the_secret_from_the_environment(webhook, monkeypatch):
    url, received, statuses, signatures = webhook
    monkeypatch.setenv("IOT_LAKE_CASES_WEBHOOK_SECRET", "s3cret")
    WebhookSink(url).deliver(_event())
    WebhookSink(url, secret="").deliver(_event())  # no secret: no signature
    (signature, body), (unsigned, _) = signatures
    assert signature == webhook_signature("s3cret", body) and signature.startswith("sha256=")
    assert signature != webhook_signature("other", body) and unsigned is None


def test_webhook_never_follows_a_redirect(webhook):
    url, received, statuses, signatures = webhook
    statuses.append(307)
    with pytest.raises(RuntimeError, match="redirect"):
        WebhookSink(url).deliver(_event())
    assert [kind for kind, _ in received] == ["application/json"]  # /elsewhere never got the event


def test_webhook_has_one_deadline_for_the_whole_exchange(webhook):
    url, received, statuses, signatures = webhook
    statuses.append("slow")  # every socket wait is short (0.3 s), the whole answer takes 3 s
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="longer than 1 s"):
        WebhookSink(url, timeout_s=1.0).deliver(_event())
    assert time.monotonic() - t0 < 2.5

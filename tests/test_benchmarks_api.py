"""The pure parts of benchmarks/api: percentiles and what is judged (the timings are the benchmark's)."""

from __future__ import annotations

import pytest

from benchmarks.api.run import TARGET_STATE_P99_MS, TRIVIAL, Phase, percentile, results_of


def test_percentile_is_the_nearest_rank():
    samples = [float(v) for v in range(100, 0, -1)]  # 1..100, unsorted
    assert (percentile(samples, 50), percentile(samples, 99), percentile(samples, 100)) == (50.0, 99.0, 100.0)
    assert percentile([3.0], 99) == 3.0 and percentile([1.0, 2.0], 0) == 1.0
    with pytest.raises(ValueError):
        percentile([], 50)


def _phase(route: str, ms: float, errors: dict[str, int] | None = None) -> Phase:
    return Phase(route, 10.0, [ms / 1000] * 100, errors or {})


def test_only_states_p99_and_the_errors_are_judged():
    phases = {"health": _phase("health", 2), "state": _phase("state", 40), "cases": _phase("cases", 90, {"429": 2})}
    results = {r.measure: r for r in results_of(phases, 50, 4, 1.0)}
    state = results["GET /devices/{id}/state p99, 50 clients"]
    assert (state.value, state.reference_value, state.target) == pytest.approx((40, 2, TARGET_STATE_P99_MS))
    assert state.met is True and state.ratio == pytest.approx(20)
    assert [r.measure for r in results.values() if r.target is not None] == [
        "GET /devices/{id}/state p99, 50 clients",
        "non-2xx answers, all routes",
    ]
    errors = results["non-2xx answers, all routes"]
    assert (errors.value, errors.met) == (2, False)
    assert results["requests/s of /devices/{id}/state"].value == pytest.approx(10)


def test_the_generators_ceiling_is_reported_beside_health_and_not_judged():
    phases = {r: _phase(r, 2) for r in ("health", "state", "cases")}
    assert "requests/s of /health" not in {r.measure for r in results_of(phases, 50, 4, 1.0)}
    phases[TRIVIAL] = Phase(TRIVIAL, 10.0, [0.001] * 400, {"ConnectError": 3})
    results = {r.measure: r for r in results_of(phases, 50, 4, 1.0)}
    health = results["requests/s of /health"]
    assert (health.value, health.reference_value, health.target) == pytest.approx((10, 40, None))
    assert results["non-2xx answers, all routes"].value == 0  # the trivial app's are not the API's


def test_the_load_generator_sends_each_clients_key_over_every_path_and_counts_refusals():
    """benchmarks/api/loadgen/drive.js (autocannon) against a small server: each connection sends its
    own key, every path is asked for, and a non-2xx answer is an error of its status."""
    import shutil
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from benchmarks.api.run import LOADGEN, drive

    if not LOADGEN.exists() or shutil.which("node") is None:
        pytest.skip("no autocannon in benchmarks/api/loadgen (scripts/setup.sh --test installs it)")
    seen: set[tuple[str, str | None]] = set()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the API's server

        def do_GET(self):
            key = self.headers.get("Authorization")
            seen.add((self.path, key))
            self.send_response(200 if key == "Bearer good" else 401)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        phase = drive(base, "state", ["/a", "/b"], ["good", "bad", None], 1.0)
    finally:
        server.shutdown()
    assert seen == {(p, k) for p in ("/a", "/b") for k in ("Bearer good", "Bearer bad", None)}
    assert phase.requests > 0 and set(phase.errors) == {"401"}
    assert 0 < phase.errors["401"] < phase.requests and phase.client_cpu > 0

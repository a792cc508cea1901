"""The serving API: cases and devices for applications and people (`iot-lake api`).

Reads the same case store the detector writes and the CLI works (`CaseStore`), so an action taken
here has the same lifecycle, history, outbox deliveries and retraining feedback as one taken with
`iot-lake cases resolve`. Every route but ``/health`` needs an API key (`iot_lake.api.keys`):
``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Read keys read; operator keys also act on
cases. Requests are rate limited per key.
"""

import base64
import binascii
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import lru_cache, partial
from pathlib import Path as FilePath
from typing import Annotated, Literal

import pyarrow as pa
import pyarrow.compute as pc
from fastapi import Depends, FastAPI, HTTPException, Path, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, BeforeValidator, Field, TypeAdapter
from starlette.concurrency import run_in_threadpool

from iot_lake.api import readings
from iot_lake.api.hot_state import DeltaHotState, HotState
from iot_lake.api.keys import OPERATOR, READ, ApiKey, ApiKeys, digest
from iot_lake.api.limits import SharedLimits
from iot_lake.api.state import StateCache
from iot_lake.api.unchanged import Unchanged
from iot_lake.cases.model import ACKNOWLEDGED, OPEN, SEVERITIES, STATUSES
from iot_lake.cases.store import CaseNotFound, CaseStateError, CaseStore
from iot_lake.cases.views import case_json, history_json, summary_json
from iot_lake.curated.aggregates import GRAINS
from iot_lake.lake import Lake, latest_registry_day, registry_rows

CURATED = "curated/telemetry"
KEY_PATH = Path(max_length=300, description="A case key (device|metric|start), URL-encoded.")
DEVICE_ID_MAX = 64
DEVICE_PATH = Path(max_length=DEVICE_ID_MAX, description="A device id of the registry.", examples=["dev-0001"])
MAX_RANGE = timedelta(days=7)  # per series request: 10,080 one-minute buckets at most, over pages
DEFAULT_RANGE = timedelta(days=1)
CASES_LIMIT = 200  # cases per answer unless asked
ACTIVE = (OPEN, ACKNOWLEDGED)
WORKBENCH = FilePath(__file__).with_name("workbench")
# The workbench loads nothing but its own files and calls nothing but this API.
WORKBENCH_CSP = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'none'"


class CaseOut(BaseModel):
    key: str
    device_id: str
    metric: str
    site_id: str | None
    start: str
    last_seen: str
    status: Literal[STATUSES]
    auto_resolved: bool
    severity: Literal[SEVERITIES]
    max_score: float
    reopen_count: int
    site_incident: str | None


CASE_LIST = TypeAdapter(list[CaseOut])


class HistoryOut(BaseModel):
    at: str
    from_status: str | None
    to_status: str
    actor: str
    note: str | None


class CaseDetail(CaseOut):
    evidence: dict
    history: list[HistoryOut]


class Action(BaseModel):
    note: str | None = Field(default=None, max_length=1000, description="Why, for the case's history.")


class MetricOut(BaseModel):
    metric: str
    unit: str
    canonical_unit: str


class DeviceOut(BaseModel):
    device_id: str
    site_id: str | None
    model: str | None
    firmware: str | None
    metrics: list[MetricOut]


class Band(BaseModel):
    bucket_start: datetime = Field(description="The 5-minute bucket the band is for.")
    origin: datetime = Field(description="When the forecast was made (the latest origin at or before the bucket).")
    model_version: str | None
    yhat: float
    lo_80: float
    hi_80: float
    lo_95: float
    hi_95: float


class MetricState(BaseModel):
    metric: str
    value: float
    unit: str | None
    event_ts: datetime = Field(description="When the latest reading was taken.")
    updated_at: datetime = Field(description="When the curated job last changed this state.")
    forecast: Band | None = Field(description="The forecast band for now, if a forecast covers now.")


class DeviceState(BaseModel):
    device_id: str
    site_id: str | None
    as_of: datetime
    metrics: list[MetricState]
    active_cases: list[CaseOut] = Field(description="Open or acknowledged cases of the device, newest first.")


class Point(BaseModel):
    bucket_start: datetime
    readings: int
    mean: float
    min: float
    max: float
    stddev: float | None
    last: float
    forecast: Band | None
    score: float | None = Field(description="The detector's highest score in the bucket, in [0, 1], if scored.")
    anomalous: bool | None = Field(description="Whether the detector found any minute of the bucket anomalous.")


class Series(BaseModel):
    device_id: str
    metric: str
    grain: Literal["1min", "5min"]
    start: datetime = Field(alias="from")
    end: datetime = Field(alias="to")
    points: list[Point]
    next_page_token: str | None = Field(description="Pass as page_token for the next page; null on the last.")


class Health(BaseModel):
    status: Literal["ok"]
    newest_curated: str | None = Field(description="The newest reading in curated telemetry (UTC).")
    age_seconds: float | None


class Problem(BaseModel):
    detail: str


ERRORS = {401: {"model": Problem}, 403: {"model": Problem}, 429: {"model": Problem}}
NOT_FOUND = {404: {"model": Problem}}
CONFLICT = {409: {"model": Problem}}
BAD_BODY = {400: {"model": Problem, "description": "The body is not JSON."}}


def create_app(
    cases_url: str,
    lake_root: str,
    storage_options: dict | None = None,
    delta_options: dict | None = None,
    per_second: int = 20,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    state: HotState | None = None,
    limits_path: str | None = None,
    hot_reads: bool = True,
) -> FastAPI:
    """The app over one case store and one lake (``storage_options`` for s3fs, ``delta_options`` for
    delta-rs, as the lake resource gives them); ``per_second`` requests per key and second. ``state``
    is where the latest readings come from: curated/device_state unless given (DynamoDB in the Lambda).
    ``limits_path``: the file the server's processes share their per-key limits in (this process's own
    memory when None). ``hot_reads=False`` answers every request through the routes (``HotReads``
    answers the polled reads before them; the tests compare the two)."""
    app = FastAPI(title="iot-lake", version="1", description=__doc__)
    store, keys, lake = CaseStore(cases_url), ApiKeys(cases_url), Lake(lake_root, storage_options)
    tables = readings.DeltaTables(lake, delta_options)  # kept open between requests, always at their newest
    states = StateCache(tables, MetricState, state or DeltaHotState(tables))
    limits = SharedLimits(per_second, limits_path)  # per key: a noisy client never slows another down
    unchanged = Unchanged(cases_url)  # the key checks and active cases, while the store has not changed
    bearer, header = HTTPBearer(auto_error=False), APIKeyHeader(name="X-API-Key", auto_error=False)
    blocking = _inline if _answers_at_once(lake, cases_url) else run_in_threadpool

    async def caller(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        api_key: Annotated[str | None, Depends(header)],
    ) -> ApiKey:
        found = await blocking(verified, credentials.credentials if credentials else api_key)
        if found is None:
            raise HTTPException(401, "a valid API key is required", headers={"WWW-Authenticate": "Bearer"})
        if not limits.allow(found.key_id):
            raise HTTPException(429, "too many requests for this key", headers={"Retry-After": "1"})
        return found

    def verified(key: str | None, version: int | None = None) -> ApiKey | None:
        # Kept by the key's hash (the secret itself is not kept), until the store changes.
        return unchanged.get(("key", digest(key or "")), lambda: keys.verify(key), version)

    def active_cases(device_id: str) -> list[dict]:
        return [summary_json(c) for c in store.summaries(device_id=device_id) if c["status"] in ACTIVE]

    # Async (no I/O): a sync dependency costs a hop to the threadpool and back, each request.
    async def reader(key: Annotated[ApiKey, Depends(caller)]) -> ApiKey:
        return key  # every valid key reads

    async def operator(key: Annotated[ApiKey, Depends(caller)]) -> ApiKey:
        if not key.allows(OPERATOR):
            raise HTTPException(403, f"key {key.name!r} has scope {READ}: acting on cases needs {OPERATOR}")
        return key

    @app.get("/health", response_model=Health)
    async def health() -> dict:
        newest = await blocking(newest_curated, tables)
        age = (clock() - newest).total_seconds() if newest else None
        return {"status": "ok", "newest_curated": newest.isoformat() if newest else None, "age_seconds": age}

    @app.get("/cases", response_model=list[CaseOut], responses=ERRORS)
    async def list_cases(
        _: Annotated[ApiKey, Depends(reader)],
        status: Literal[STATUSES] | None = None,
        site: Annotated[str | None, Query(max_length=64)] = None,
        severity: Literal[SEVERITIES] | None = None,
        since: Annotated[datetime | None, BeforeValidator(_iso_8601), Query(description=SINCE)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = CASES_LIMIT,
    ) -> Response:
        body = await blocking(cases_answer, status, site, severity, since and _aware(since), limit)
        return Response(body, media_type="application/json")  # validated as list[CaseOut] once per answer

    def cases_answer(*asked, version: int | None = None) -> bytes:
        return unchanged.get(("cases", *asked), lambda: cases_body(*asked), version)

    def cases_body(status, site, severity, since, limit) -> bytes:
        found = [
            case
            for case in store.summaries(status)
            if (site is None or case["site_id"] == site)
            and (severity is None or case["severity"] == severity)
            and (since is None or case["incident_start"] >= since)
        ]
        return CASE_LIST.dump_json(CASE_LIST.validate_python([summary_json(case) for case in found[:limit]]))

    @app.get("/cases/{key}", response_model=CaseDetail, responses={**ERRORS, **NOT_FOUND})
    def get_case(_: Annotated[ApiKey, Depends(reader)], key: Annotated[str, KEY_PATH]) -> dict:
        case = store.get(key)
        if case is None:
            raise HTTPException(404, f"no case {key}")
        history = [history_json(h) for h in store.history(key)]
        return {**case_json(case), "evidence": case.evidence, "history": history}

    def act(key: str, who: ApiKey, action: Action, do: Callable) -> dict:
        try:
            case = do(key, f"api:{who.name}", action.note)
        except CaseNotFound:
            raise HTTPException(404, f"no case {key}") from None
        except CaseStateError as exc:
            raise HTTPException(409, str(exc)) from None
        return case_json(case)

    acting = {"response_model": CaseOut, "responses": {**ERRORS, **NOT_FOUND, **CONFLICT, **BAD_BODY}}

    @app.post("/cases/{key}/ack", **acting)
    def ack(who: Annotated[ApiKey, Depends(operator)], key: Annotated[str, KEY_PATH], action: Action) -> dict:
        return act(key, who, action, store.acknowledge)

    @app.post("/cases/{key}/resolve", **acting)
    def resolve(who: Annotated[ApiKey, Depends(operator)], key: Annotated[str, KEY_PATH], action: Action) -> dict:
        return act(key, who, action, store.resolve)

    @app.post("/cases/{key}/false-positive", **acting)
    def false_positive(
        who: Annotated[ApiKey, Depends(operator)], key: Annotated[str, KEY_PATH], action: Action
    ) -> dict:
        return act(key, who, action, lambda k, actor, note: store.resolve(k, actor, note, false_positive=True))

    @app.get("/devices", response_model=list[DeviceOut], responses=ERRORS)
    def devices(_: Annotated[ApiKey, Depends(reader)]) -> list[dict]:
        return registry(lake, clock().date(), _minute())

    @app.get("/devices/{device_id}", response_model=DeviceOut, responses={**ERRORS, **NOT_FOUND})
    def device(_: Annotated[ApiKey, Depends(reader)], device_id: Annotated[str, DEVICE_PATH]) -> dict:
        return known_device(device_id)

    def known_device(device_id: str) -> dict:
        found = _device_in(registry(lake, clock().date(), _minute()), device_id)
        if found is None:
            raise HTTPException(404, f"no device {device_id}")
        return found

    @app.get("/devices/{device_id}/state", response_model=DeviceState, responses={**ERRORS, **NOT_FOUND})
    async def device_state(_: Annotated[ApiKey, Depends(reader)], device_id: Annotated[str, DEVICE_PATH]) -> Response:
        body = await blocking(state_of, device_id)
        return Response(body, media_type="application/json")  # built as DeviceState: not validated again

    def state_of(device_id: str) -> bytes:
        return state_answer(known_device(device_id))

    def state_answer(device: dict, version: int | None = None) -> bytes:
        device_id = device["device_id"]
        active = unchanged.get(("active", device_id), lambda: active_cases(device_id), version)
        return states.answer(device_id, device["site_id"], clock(), active)

    async def hot_read(scope) -> bytes | None:
        """The body of a 200 to a request of the state of a known device, or of the case list with no
        filter, with a valid key within its limit; None for any other request, which the routes
        above answer (errors too). What those routes would answer, without FastAPI's parameter and
        dependency handling, which took most of these routes' CPU (docs/api.md)."""
        path = scope["path"]
        if path == "/cases" and not scope["query_string"]:
            read = partial(cases_answer, None, None, None, None, CASES_LIMIT)
        elif path.startswith("/devices/") and path.endswith("/state"):
            device_id = path[len("/devices/") : -len("/state")]
            found = len(device_id) <= DEVICE_ID_MAX and _device_in(registry(lake, clock().date(), _minute()), device_id)
            if not found:
                return None  # a 404 or a 422 (an id longer than the route takes, even if registered)
            read = partial(state_answer, found)
        else:
            return None
        version = unchanged.look()  # the case store's, once for the key check and the answer
        found_key = await blocking(verified, presented_key(scope["headers"]), version)
        if found_key is None or not limits.allow(found_key.key_id):
            return None  # the route answers 401 or 429 (a refused request does not count against the key)
        return await blocking(partial(read, version=version))

    @app.get(
        "/devices/{device_id}/series",
        response_model=Series,
        response_model_by_alias=True,
        responses={**ERRORS, **NOT_FOUND},
    )
    def device_series(
        _: Annotated[ApiKey, Depends(reader)],
        device_id: Annotated[str, DEVICE_PATH],
        metric: Annotated[
            str, Query(max_length=64, description="One of the device's metrics.", examples=["temperature"])
        ],
        start: Annotated[datetime | None, BeforeValidator(_iso_8601), Query(alias="from", description=FROM)] = None,
        end: Annotated[datetime | None, BeforeValidator(_iso_8601), Query(alias="to", description=TO)] = None,
        grain: Literal["1min", "5min"] = "5min",
        limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
        page_token: Annotated[str | None, Query(max_length=100, description="From the previous page.")] = None,
    ) -> dict:
        device = known_device(device_id)
        if metric not in {m["metric"] for m in device["metrics"]}:
            raise HTTPException(404, f"device {device_id} has no metric {metric}")
        start, end = _range(start, end, clock())
        after = _after(page_token, start, end)
        rows, more = readings.aggregates(tables, device_id, metric, grain, start, end, after, limit)
        points = _points(tables, device_id, metric, grain, rows)
        token = _token(rows[-1]["bucket_start"]) if more else None
        return {
            "device_id": device_id,
            "metric": metric,
            "grain": grain,
            "from": start,
            "to": end,
            "points": points,
            "next_page_token": token,
        }

    @app.get("/workbench", include_in_schema=False)
    def workbench() -> FileResponse:
        """The operator workbench page (no key needed to load it: it asks for one)."""
        return FileResponse(WORKBENCH / "index.html", headers={"Content-Security-Policy": WORKBENCH_CSP})

    app.mount("/workbench/static", StaticFiles(directory=WORKBENCH), name="workbench")

    if hot_reads:
        app.add_middleware(HotReads, read=hot_read)  # inside NoStore: its answers are not cached either
    app.add_middleware(NoStore)
    app.state.store, app.state.keys = store, keys
    return app


class HotReads:
    """Plain ASGI: a GET that ``read(scope)`` answers (a body) gets a 200 with that JSON body, any
    other request goes on to the app's routes. For the two routes applications poll, whose answers
    are kept between requests: there FastAPI's own handling of a request was most of its cost."""

    def __init__(self, app, read: Callable):
        self.app, self.read = app, read

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path"):
            body = await self.read(scope)
            if body is not None:
                headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def presented_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The key a request presents, as the routes' dependencies take it: ``Authorization: Bearer <key>``
    (FastAPI's HTTPBearer), else ``X-API-Key`` (APIKeyHeader); the first of each header."""
    authorization = api_key = None
    for name, value in headers:
        name = name.lower()
        if name == b"authorization" and authorization is None:
            authorization = value.decode("latin-1")
        elif name == b"x-api-key" and api_key is None:
            api_key = value.decode("latin-1")
    scheme, _, credentials = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return api_key or None


def _device_in(devices: list[dict], device_id: str) -> dict | None:
    return next((d for d in devices if d["device_id"] == device_id), None)


class NoStore:
    """``Cache-Control: no-store`` on every answer: case states change under an operator's feet. Plain
    ASGI: Starlette's ``@app.middleware("http")`` runs each request through a task and memory streams
    of its own, a cost every request paid."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_no_store(message):
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"cache-control"]
                message = {**message, "headers": [*kept, (b"cache-control", b"no-store")]}
            await send(message)

        await self.app(scope, receive, send_no_store)


SINCE = "Only incidents starting at or after this time (ISO 8601; UTC unless it has an offset)."
FROM = "Start of the range, inclusive (ISO 8601; UTC unless it has an offset). Default: a day before `to`."
TO = f"End of the range, exclusive. Default: now. At most {MAX_RANGE.days} days after `from`."


def _invalid(field: str, message: str) -> RequestValidationError:
    """A 422 shaped like FastAPI's own (the schema's HTTPValidationError), for checks across fields."""
    return RequestValidationError([{"loc": ("query", field), "msg": message, "type": "value_error"}])


def _range(start: datetime | None, end: datetime | None, now: datetime) -> tuple[datetime, datetime]:
    end = _aware(end) if end else now
    start = _aware(start) if start else end - DEFAULT_RANGE
    if end <= start:
        raise _invalid("to", "must be after from")
    if end - start > MAX_RANGE:
        raise _invalid("to", f"at most {MAX_RANGE.days} days after from: ask for longer ranges in several requests")
    return start.astimezone(UTC), end.astimezone(UTC)


def _points(tables: readings.DeltaTables, device_id: str, metric: str, grain: str, rows: list[dict]) -> list[dict]:
    """The page's buckets with the forecast band of their 5-minute bucket and the detector's scores."""
    if not rows:
        return []
    first, last = rows[0]["bucket_start"], rows[-1]["bucket_start"]
    bands = readings.forecast_bands(tables, device_id, first, last, metric)
    seconds = GRAINS[grain]
    scored = readings.scores(tables, device_id, metric, first, last + timedelta(seconds=seconds - 1), seconds)
    unscored = {"score": None, "anomalous": None}
    return [
        {
            **row,
            "forecast": bands.get((metric, readings.floor_5min(row["bucket_start"]))),
            **scored.get(row["bucket_start"], unscored),
        }
        for row in rows
    ]


def _token(last: datetime) -> str:
    """Opaque to clients: the last bucket returned, which the next page starts after."""
    return base64.urlsafe_b64encode(f"v1:{int(last.timestamp())}".encode()).decode().rstrip("=")


def _after(token: str | None, start: datetime, end: datetime) -> datetime | None:
    if token is None:
        return None
    try:
        version, seconds = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode().split(":")
        after = datetime.fromtimestamp(int(seconds), UTC)
    except (ValueError, binascii.Error, UnicodeDecodeError, OverflowError, OSError):
        raise _invalid("page_token", "not a page token of this API: pass next_page_token as given") from None
    if version != "v1" or not start <= after < end:
        raise _invalid("page_token", "not a page token of this range: pass next_page_token with the same from and to")
    return after


def _iso_8601(value):
    """An ISO 8601 time only: pydantic alone would also take a number as Unix seconds ("0.5")."""
    if isinstance(value, str):
        try:
            datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("not an ISO 8601 time, e.g. 2026-11-20T10:00:00Z") from None
    return value


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _minute() -> int:
    return int(time.time() // 60)


def _answers_at_once(lake: Lake, cases_url: str) -> bool:
    """Whether the lake is local files and the case store SQLite: then a request's reads (a stat, an
    indexed SELECT) take microseconds, less than handing them to a worker thread and back, which under
    load also queues them behind the GIL's switch interval; so the hot routes read on the event loop.
    Over a network (S3, PostgreSQL) a read waits on a round trip and must not hold the loop."""
    return lake.is_local and cases_url.startswith("sqlite")


async def _inline(call: Callable, *args):
    return call(*args)


def newest_curated(tables: readings.DeltaTables) -> datetime | None:
    """The newest event time in curated telemetry, from the Delta log's file statistics (no data read),
    once per version of the table."""
    return tables.derived(CURATED, "newest", _newest_event)


def _newest_event(table) -> datetime | None:
    actions = pa.table(table.get_add_actions(flatten=True))
    if actions.num_rows == 0 or "max.event_ts" not in actions.column_names:
        return None
    newest = pc.max(actions["max.event_ts"]).as_py()
    return newest.astimezone(UTC) if newest else None


@lru_cache(maxsize=4)
def registry(lake: Lake, day, minute: int) -> list[dict]:
    """The newest registry snapshot's devices with their metrics; cached for the minute (the registry
    lands nightly, so a request never re-reads it)."""
    snapshot = latest_registry_day(lake, day)
    if snapshot is None:
        return []
    metrics: dict[str, list[dict]] = {}
    for m in registry_rows(lake, snapshot, "device_metrics"):
        metrics.setdefault(m["device_id"], []).append({k: m[k] for k in ("metric", "unit", "canonical_unit")})
    fields = ("device_id", "site_id", "model", "firmware")
    return [
        {**{k: d.get(k) for k in fields}, "metrics": metrics.get(d["device_id"], [])}
        for d in registry_rows(lake, snapshot, "devices")
    ]

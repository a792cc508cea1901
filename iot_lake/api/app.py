"""The serving API: cases and devices for applications and people (`iot-lake api`).

Reads the same case store the detector writes and the CLI works (`CaseStore`), so an action taken
here has the same lifecycle, history, outbox deliveries and retraining feedback as one taken with
`iot-lake cases resolve`. Every route but ``/health`` needs an API key (`iot_lake.api.keys`):
``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Read keys read; operator keys also act on
cases. Requests are rate limited per key.
"""

import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, BeforeValidator, Field
from pyrate_limiter import Duration, Limiter, Rate

from iot_lake.api.keys import OPERATOR, READ, ApiKey, ApiKeys
from iot_lake.cases.model import SEVERITIES, STATUSES
from iot_lake.cases.store import CaseNotFound, CaseStateError, CaseStore
from iot_lake.cases.views import case_json, history_json
from iot_lake.lake import Lake, latest_registry_day, registry_key

CURATED = "curated/telemetry"
KEY_PATH = Path(max_length=300, description="A case key (device|metric|start), URL-encoded.")


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
) -> FastAPI:
    """The app over one case store and one lake (``storage_options`` for s3fs, ``delta_options`` for
    delta-rs, as the lake resource gives them); ``per_second`` requests per key and second."""
    app = FastAPI(title="iot-lake", version="1", description=__doc__)
    store, keys, lake = CaseStore(cases_url), ApiKeys(cases_url), Lake(lake_root, storage_options)
    limiters: dict[str, Limiter] = {}  # one per key: a noisy client never slows another down
    bearer, header = HTTPBearer(auto_error=False), APIKeyHeader(name="X-API-Key", auto_error=False)

    def caller(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        api_key: Annotated[str | None, Depends(header)],
    ) -> ApiKey:
        found = keys.verify(credentials.credentials if credentials else api_key)
        if found is None:
            raise HTTPException(401, "a valid API key is required", headers={"WWW-Authenticate": "Bearer"})
        limiter = limiters.setdefault(found.key_id, Limiter(Rate(per_second, Duration.SECOND)))
        if not limiter.try_acquire(found.key_id, blocking=False):
            raise HTTPException(429, "too many requests for this key", headers={"Retry-After": "1"})
        return found

    def reader(key: Annotated[ApiKey, Depends(caller)]) -> ApiKey:
        return key  # every valid key reads

    def operator(key: Annotated[ApiKey, Depends(caller)]) -> ApiKey:
        if not key.allows(OPERATOR):
            raise HTTPException(403, f"key {key.name!r} has scope {READ}: acting on cases needs {OPERATOR}")
        return key

    @app.get("/health", response_model=Health)
    def health() -> dict:
        newest = newest_curated(lake, delta_options)
        age = (clock() - newest).total_seconds() if newest else None
        return {"status": "ok", "newest_curated": newest.isoformat() if newest else None, "age_seconds": age}

    @app.get("/cases", response_model=list[CaseOut], responses=ERRORS)
    def list_cases(
        _: Annotated[ApiKey, Depends(reader)],
        status: Literal[STATUSES] | None = None,
        site: Annotated[str | None, Query(max_length=64)] = None,
        severity: Literal[SEVERITIES] | None = None,
        since: Annotated[datetime | None, BeforeValidator(_iso_8601), Query(description=SINCE)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> list[dict]:
        found = [
            case
            for case in store.list_cases(status)
            if (site is None or case.site_id == site)
            and (severity is None or case.severity == severity)
            and (since is None or case.incident_start >= _aware(since))
        ]
        return [case_json(case) for case in found[:limit]]

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
    def device(_: Annotated[ApiKey, Depends(reader)], device_id: Annotated[str, Path(max_length=64)]) -> dict:
        found = [d for d in registry(lake, clock().date(), _minute()) if d["device_id"] == device_id]
        if not found:
            raise HTTPException(404, f"no device {device_id}")
        return found[0]

    @app.middleware("http")
    async def no_store(request: Request, call_next):
        response = await call_next(request)
        response.headers["Cache-Control"] = "no-store"  # case states change under an operator's feet
        return response

    app.state.store, app.state.keys = store, keys
    return app


SINCE = "Only incidents starting at or after this time (ISO 8601; UTC unless it has an offset)."


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


def newest_curated(lake: Lake, delta_options: dict | None = None) -> datetime | None:
    """The newest event time in curated telemetry, from the Delta log's file statistics (no data read)."""
    from deltalake import DeltaTable

    if not lake.exists(f"{CURATED}/_delta_log"):
        return None
    actions = pa.table(DeltaTable(lake.uri(CURATED), storage_options=delta_options).get_add_actions(flatten=True))
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

    def rows(table: str) -> list[dict]:
        with lake.open(registry_key(snapshot, table)) as f:
            return pq.read_table(f).to_pylist()

    metrics: dict[str, list[dict]] = {}
    for m in rows("device_metrics"):
        metrics.setdefault(m["device_id"], []).append({k: m[k] for k in ("metric", "unit", "canonical_unit")})
    fields = ("device_id", "site_id", "model", "firmware")
    return [{**{k: d.get(k) for k in fields}, "metrics": metrics.get(d["device_id"], [])} for d in rows("devices")]

"""CasesResource: the case store and its sinks (iot_lake.cases) as the environment configures them.

Locally a SQLite file under the lake's ``_sources/`` with the log and JSON-lines sinks; in prod
PostgreSQL with CloudWatch and SNS, plus EventBridge and Incident Manager when configured.
Sensors and assets open the store per tick or step (``with cases.store() as store``), deliver
its outbox with ``deliver_pending(store, cases.sinks(), now)`` and mirror it with
``mirror_to_lake``. The alert sensors (sensors/alerts.py) raise alerts into the same store.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from dagster import ConfigurableResource

from iot_lake.cases.model import CasePolicy
from iot_lake.cases.sinks import Sink, build_sinks
from iot_lake.cases.store import CaseStore


class CasesResource(ConfigurableResource):
    env: str = "local"
    url: str
    lake_root: str
    region: str | None = None
    webhook_url: str | None = None
    sns_topic_arn: str | None = None
    event_bus_name: str | None = None
    incident_response_plan_arn: str | None = None
    ui_url: str = "http://127.0.0.1:3000"  # alerts link to their runs there
    resolve_after_minutes: int = 30
    reopen_within_minutes: int = 120
    site_window_minutes: int = 15  # cases of one site starting this close together: one site incident
    site_min_devices: int = 2

    def policy(self) -> CasePolicy:
        return CasePolicy(
            resolve_after=timedelta(minutes=self.resolve_after_minutes),
            reopen_within=timedelta(minutes=self.reopen_within_minutes),
            site_window=timedelta(minutes=self.site_window_minutes),
            site_min_devices=self.site_min_devices,
        )

    def sinks(self) -> list[Sink]:
        """New sink objects; their AWS clients are created on first delivery."""
        return build_sinks(
            self.env,
            lake_root=self.lake_root,
            region=self.region,
            webhook_url=self.webhook_url,
            sns_topic_arn=self.sns_topic_arn,
            event_bus_name=self.event_bus_name,
            incident_response_plan_arn=self.incident_response_plan_arn,
            policy=self.policy(),
        )

    @contextmanager
    def store(self) -> Iterator[CaseStore]:
        """The store for one step or tick; its connections are closed when it is done."""
        with CaseStore(self.url, sinks=self.sinks(), policy=self.policy()) as store:
            yield store

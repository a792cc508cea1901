"""Runs the simulator over a time range (backfill) or forever (follow), into the lake or Kinesis."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta

from iot_lake.announcements import announce
from iot_lake.fleet import Fleet, build_fleet
from iot_lake.lake import SIMULATOR_PREFIX, TELEMETRY_PREFIX, Lake
from iot_lake.simulate.anomalies import Anomaly
from iot_lake.simulate.deliveries import DeliveryWindows, SimConfig
from iot_lake.simulate.firehose import objects_for
from iot_lake.simulate.historian import seed_historian
from iot_lake.simulate.kinesis import KinesisPublisher
from iot_lake.simulate.weather import weather_file

HOUR = timedelta(hours=1)


@dataclass
class SimulationReport:
    start: str
    end: str
    objects: int = 0
    lines: int = 0
    bytes: int = 0
    published: int = 0
    weather_files: int = 0
    anomalies: int = 0
    historian: dict = field(default_factory=dict)


def anomalies_key(day: date) -> str:
    return f"{SIMULATOR_PREFIX}/anomalies/{day:%Y-%m-%d}.csv"


def read_anomalies(lake: Lake, days):
    """The injected anomalies the simulator left for ``days`` (start and end as UTC timestamps), or
    None where it left none: real or imported data has no ground truth."""
    import pandas as pd

    frames = []
    for day in days:
        if lake.exists(anomalies_key(day)):
            with lake.open(anomalies_key(day)) as f:
                frames.append(pd.read_csv(f))
    if not frames:
        return None
    truth = pd.concat(frames, ignore_index=True)
    truth["start"], truth["end"] = pd.to_datetime(truth["start"], utc=True), pd.to_datetime(truth["end"], utc=True)
    return truth


def delivery_truth_key(object_key: str) -> str:
    return f"{SIMULATOR_PREFIX}/deliveries/{object_key.removeprefix(TELEMETRY_PREFIX + '/')}.json"


def weather_truth_key(day: date) -> str:
    return f"{SIMULATOR_PREFIX}/weather/{day:%Y-%m-%d}.json"


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _anomalies_csv(anomalies: list[Anomaly]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["device_id", "site_id", "metric", "kind", "start", "end", "magnitude"])
    for a in sorted(anomalies, key=lambda a: (a.start_ms, a.device_id, a.metric)):
        writer.writerow(
            [a.device_id, a.site_id, a.metric, a.kind, _iso(a.start_ms), _iso(a.end_ms), round(a.magnitude, 4)]
        )
    return buf.getvalue()


class Simulator:
    def __init__(self, cfg: SimConfig, lake: Lake, publisher: KinesisPublisher | None = None):
        self.cfg, self.lake, self.publisher = cfg, lake, publisher
        self.fleet: Fleet = build_fleet(cfg.devices, cfg.seed)
        self.windows = DeliveryWindows(self.fleet, cfg)
        self._truth_days: set[date] = set()

    def seed_historian(self, url: str, start: date) -> dict:
        return seed_historian(url, self.fleet, self.cfg, start)

    def emit(self, start: datetime, end: datetime, report: SimulationReport) -> None:
        """Deliver every record that arrives in [start, end) and the weather of days completed by end.

        What it wrote is announced: simulated time is not the sensor's clock (a backfill writes past
        hours), so the landing sensor's listing of the open hours alone would not see it.
        """
        df = self.windows.between(int(start.timestamp() * 1000), int(end.timestamp() * 1000))
        for day in sorted({d.date() for d in (start, end - timedelta(microseconds=1))}):
            self._write_anomaly_truth(day, report)
        written: list[str] = []
        if self.publisher is not None:
            report.published += self.publisher.publish(df["line"].tolist(), df["device_id"].tolist())
            report.lines += len(df)
        else:
            written += self._write_objects(df, report)
        midnight = datetime.combine(start.date() + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
        while midnight <= end:  # each day that closed within (start, end]
            written += self._write_weather(midnight.date() - timedelta(days=1), report)
            midnight += timedelta(days=1)
        announce(self.lake, "simulator", written)

    def _write_objects(self, df, report: SimulationReport) -> list[str]:
        keys = []
        for obj in objects_for(df, self.cfg):
            self.lake.write_bytes(obj.key, obj.body)
            self.lake.write_text(delivery_truth_key(obj.key), json.dumps({"key": obj.key, **obj.truth}))
            keys.append(obj.key)
            report.objects += 1
            report.lines += obj.truth["lines"]
            report.bytes += len(obj.body)
        return keys

    def _write_anomaly_truth(self, day: date, report: SimulationReport) -> None:
        if day in self._truth_days:
            return
        anomalies = self.windows.day(day).anomalies
        self.lake.write_text(anomalies_key(day), _anomalies_csv(anomalies))
        self._truth_days.add(day)
        report.anomalies += len(anomalies)

    def _write_weather(self, day: date, report: SimulationReport) -> list[str]:
        truth = {}
        for site in self.fleet.sites:
            f = weather_file(self.fleet, site, day, self.cfg.bad_weather_rate)
            self.lake.write_bytes(f.key, f.body)
            truth[f.key] = f.defect
            report.weather_files += 1
        self.lake.write_text(weather_truth_key(day), json.dumps(truth, indent=1))
        return list(truth)

    def backfill_weather(self, first: date, end: date) -> int:
        """The weather of the days before the telemetry (the historian's past): a weather provider
        has its history too, and a feature row without its temperature trains a different model."""
        report = SimulationReport(start=first.isoformat(), end=end.isoformat())
        day = first
        while day < end:
            self._write_weather(day, report)
            day += timedelta(days=1)
        return report.weather_files

    def backfill(
        self, start: datetime, end: datetime, on_hour: Callable[[datetime], None] | None = None
    ) -> SimulationReport:
        report = SimulationReport(start=start.isoformat(), end=end.isoformat())
        hour = start
        while hour < end:
            nxt = min(hour + HOUR, end)
            self.emit(hour, nxt, report)
            if on_hour:
                on_hour(hour)
            hour = nxt
        return report

    def follow(
        self,
        start: datetime,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        max_windows: int | None = None,
        on_window: Callable[[datetime, SimulationReport], None] | None = None,
    ) -> SimulationReport:
        """Keep delivering each buffer window as soon as it closes, until stopped."""
        buffer_s = self.cfg.buffer_s
        cursor = datetime.fromtimestamp(int(start.timestamp()) // buffer_s * buffer_s, tz=UTC)
        report = SimulationReport(start=cursor.isoformat(), end="")
        windows = 0
        while max_windows is None or windows < max_windows:
            now = clock()
            closed = datetime.fromtimestamp(int(now) // buffer_s * buffer_s, tz=UTC)
            if closed > cursor:
                self.emit(cursor, closed, report)
                cursor = closed
                report.end = closed.isoformat()
                windows += 1
                if on_window:
                    on_window(closed, report)
                continue
            sleep(max(0.5, cursor.timestamp() + buffer_s - now + 1.0))
        return report


def report_json(report: SimulationReport) -> str:
    return json.dumps(asdict(report), indent=1)

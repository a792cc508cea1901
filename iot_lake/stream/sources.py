"""Where the streaming scorer's records come from: the lake's landing prefix, or the Kinesis stream.

Both hand over parsed rows (``iot_lake.curated.telemetry_job.PARSED``) from the curated job's own
parser, and both start at the window's first hour (``scorer.window_start``): state is rebuilt by
reading the window again, never checkpointed, because re-observing minutes changes no case.

- ``LandingWatcher`` lists the telemetry hour prefixes of the window (two folders, whatever the
  history) and parses each object it has not seen, the objects Firehose writes and the landing
  sensor curates. Locally that is the only source; on S3 it works too, a listing per poll.
- ``KinesisReader`` reads the Kinesis data stream the IoT rule writes and Firehose reads
  (``-c kinesisSource=true``, docs/production.md), each shard from the window's start
  (``AT_TIMESTAMP``): the records before Firehose has buffered them into an object, so the scorer
  does not wait out Firehose's buffer interval. A record's arrival hour is its
  ``ApproximateArrivalTimestamp``'s, as Firehose's prefix takes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime

import pyarrow as pa

from iot_lake.cases.model import utcnow
from iot_lake.curated.telemetry_job import block_rows, parse_objects
from iot_lake.curated.typical import RegistryIndex
from iot_lake.lake import Lake, telemetry_hour_prefix
from iot_lake.sources.telemetry import MAX_LINE_BYTES, block_lines, cap_lines
from iot_lake.stream.scorer import HOUR, hour_of, window_start

log = logging.getLogger(__name__)


class LandingWatcher:
    """New objects under the window's telemetry hour prefixes, parsed."""

    def __init__(self, lake: Lake, registry: Callable, storage_options: dict | None = None, clock=utcnow):
        self.lake, self.registry, self.options, self.clock = lake, registry, storage_options, clock
        self.seen: set[str] = set()

    def reset(self) -> None:
        """Read the whole window again at the next poll (after a step that failed)."""
        self.seen.clear()

    def poll(self) -> list[pa.RecordBatch]:
        start = window_start(self.clock())
        hours = [start, start + HOUR]
        prefixes = tuple(telemetry_hour_prefix(h) for h in hours)
        self.seen = {k for k in self.seen if k.startswith(prefixes)}  # forget hours that left the window
        batches = []
        for hour, prefix in zip(hours, prefixes):
            keys = [o.key for o in self.lake.list(prefix) if o.key not in self.seen]
            if keys:
                run = parse_objects(self.lake.url, self.options or {}, self.registry(hour.date()))
                batches += list(run([pa.record_batch({"key": keys})]))
                self.seen.update(keys)
        return batches


class KinesisReader:
    """The records of every shard of a Kinesis data stream, from the window's start, parsed."""

    def __init__(self, stream: str, registry: Callable, client=None, clock=utcnow, limit: int = 10_000):
        from iot_lake.aws import client as aws_client

        self.stream, self.registry, self.clock, self.limit = stream, registry, clock, limit
        self.client = client or aws_client("kinesis")
        self.iterators: dict[str, str | None] = {}  # shard -> next iterator (None: the shard is closed)
        self.lines: dict[str, int] = {}  # shard -> lines parsed: a record's line number, for the copies' order
        self.read = 0
        self._arn: str | None = None

    def reset(self) -> None:
        """Read every shard from the window's start again at the next poll (after a step that failed)."""
        self.iterators.clear()

    @property
    def arn(self) -> str:
        """The stream's ARN, which every call names (GetRecords has no stream name, and IAM grants the stream)."""
        if self._arn is None:
            self._arn = self.client.describe_stream_summary(StreamName=self.stream)["StreamDescriptionSummary"][
                "StreamARN"
            ]
        return self._arn

    def _shards(self) -> Iterator[str]:
        # Paged by the last shard seen, not NextToken, which may not name the stream (nor IAM its resource).
        after = None
        while True:
            page = self.client.list_shards(StreamARN=self.arn, **({"ExclusiveStartShardId": after} if after else {}))
            yield from (s["ShardId"] for s in page["Shards"])
            if not page.get("NextToken") or not page["Shards"]:
                return
            after = page["Shards"][-1]["ShardId"]

    def _iterator(self, shard: str, start: datetime) -> str:
        return self.client.get_shard_iterator(
            StreamARN=self.arn, ShardId=shard, ShardIteratorType="AT_TIMESTAMP", Timestamp=start
        )["ShardIterator"]

    def poll(self) -> list[pa.RecordBatch]:
        start = window_start(self.clock())
        for shard in self._shards():  # shards split or merged since: read from the window's start too
            if shard not in self.iterators:
                self.iterators[shard] = self._iterator(shard, start)
        records = []
        for shard, iterator in self.iterators.items():
            while iterator:
                page = self.client.get_records(StreamARN=self.arn, ShardIterator=iterator, Limit=self.limit)
                records += [(shard, r) for r in page["Records"]]
                iterator = page.get("NextShardIterator")
                if not page["Records"] or page.get("MillisBehindLatest", 0) == 0:
                    break
            self.iterators[shard] = iterator
        self.read += len(records)
        return self._parsed(records)

    def _parsed(self, records: list) -> list[pa.RecordBatch]:
        """Records grouped by shard and arrival hour, each group a block of lines for the curated parser."""
        groups: dict[tuple[str, datetime], list[bytes]] = {}
        for shard, record in records:
            data = record["Data"]
            groups.setdefault((shard, hour_of(record["ApproximateArrivalTimestamp"])), []).append(
                data if data.endswith(b"\n") else data + b"\n"
            )
        batches = []
        for (shard, hour), lines in groups.items():
            registry = self.registry(hour.date())
            origin = {
                "source_object": f"kinesis:{self.stream}/{shard}",
                "landing_hour": hour,
                "landing_date": hour.date(),
            }
            block = block_lines(cap_lines(b"".join(lines), MAX_LINE_BYTES))
            number = self.lines.get(shard, 0)
            batches += list(block_rows(block, RegistryIndex.of(registry), registry, origin, number))
            self.lines[shard] = number + len(block)
        return batches

"""Publishes simulated records to a Kinesis data stream, as devices do through IoT Core rules."""

from __future__ import annotations

import time
from collections.abc import Sequence

from iot_lake.aws import client as aws_client

MAX_RECORDS = 500  # PutRecords limits
MAX_BYTES = 5 * 1024 * 1024


class KinesisPublisher:
    def __init__(self, stream: str, client=None, max_attempts: int = 6, sleep=time.sleep):
        self.stream = stream
        self.client = client or aws_client("kinesis")
        self.max_attempts = max_attempts
        self.sleep = sleep
        self.sent = 0

    def publish(self, lines: Sequence[str], partition_keys: Sequence[str]) -> int:
        """Send the lines; returns how many this call sent (``self.sent`` is the running total)."""
        before = self.sent
        batch: list[dict] = []
        size = 0
        for line, key in zip(lines, partition_keys):
            entry = {"Data": (line + "\n").encode("utf-8"), "PartitionKey": key or "unknown"}
            n = len(entry["Data"]) + len(entry["PartitionKey"])
            if batch and (len(batch) == MAX_RECORDS or size + n > MAX_BYTES):
                self._put(batch)
                batch, size = [], 0
            batch.append(entry)
            size += n
        if batch:
            self._put(batch)
        return self.sent - before

    def _put(self, entries: list[dict]) -> None:
        """PutRecords is not all-or-nothing: resend just the failed entries, with backoff."""
        for attempt in range(self.max_attempts):
            response = self.client.put_records(StreamName=self.stream, Records=entries)
            results = response["Records"]
            failed = [e for e, r in zip(entries, results) if r.get("ErrorCode")]
            self.sent += len(entries) - len(failed)
            if not failed:
                return
            entries = failed
            if attempt + 1 < self.max_attempts:
                self.sleep(min(0.1 * 2**attempt, 5.0))
        codes = {r.get("ErrorCode") for r in results if r.get("ErrorCode")}
        raise RuntimeError(
            f"{len(entries)} records still rejected by Kinesis after {self.max_attempts} attempts: {codes}"
        )

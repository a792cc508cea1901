"""Reading back what the simulator published: a stream's records and the CLI's report."""

from __future__ import annotations

import re


def read_stream(client, stream: str) -> list[tuple[str, str, bytes]]:
    """Every record of every shard: (shard id, partition key, data), in shard order."""
    out = []
    for shard in client.list_shards(StreamName=stream)["Shards"]:
        it = client.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")[
            "ShardIterator"
        ]
        while True:
            resp = client.get_records(ShardIterator=it, Limit=10_000)
            if not resp["Records"]:
                break
            out.extend((shard["ShardId"], r["PartitionKey"], r["Data"]) for r in resp["Records"])
            it = resp["NextShardIterator"]
    return out


def report_value(output: str, name: str) -> int:
    m = re.search(rf"^\W*{name}\W+([\d,]+)", output, re.MULTILINE)
    assert m, f"no {name!r} row in:\n{output}"
    return int(m[1].replace(",", ""))

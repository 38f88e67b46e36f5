"""Records/s from a Kinesis-compatible server (moto's, over HTTP) to acknowledged Kafka writes,
beside the ceiling: reading the same shards with get_records and doing nothing else.

Run: PYTHONPATH=. .venv/bin/python benchmarks/kinesis_bridge.py [--records 50000] [--shards 4]
Both sides read the same stream in one run on the same machine; the broker is the embedded one.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from jobs.simulate import DEMO_EFFECTS, Traffic, demo_catalog, recent_start, simulate
from pipelines.embedded_broker import HOST, EmbeddedBroker, free_port
from pipelines.kinesis import KinesisBridge, kinesis_client
from pipelines.topics import Topics, ensure_topics
from sinks.sql.kinesis_leases import shard_states
from sinks.sql.migrate import upgrade_to_head
from sinks.sql.store import make_engine

PARTITIONS = 8


def fill(client: Any, stream: str, records: int) -> dict[str, int]:
    traffic = Traffic(users=max(10, records // 8), start_ts=recent_start())
    events = []
    for event in simulate(demo_catalog(), traffic, DEMO_EFFECTS):
        events.append(event)
        if len(events) == records:
            break
    last: dict[str, int] = {}
    for start in range(0, len(events), 500):
        batch = [
            {"Data": orjson.dumps(e), "PartitionKey": e["user_id"]}
            for e in events[start : start + 500]
        ]
        result = client.put_records(StreamName=stream, Records=batch)
        for entry in result["Records"]:
            shard, sequence = entry["ShardId"], int(entry["SequenceNumber"])
            last[shard] = max(last.get(shard, 0), sequence)
    return last


def ceiling(client: Any, stream: str) -> tuple[int, float]:
    started, total = time.perf_counter(), 0
    for shard in client.list_shards(StreamName=stream)["Shards"]:
        iterator = client.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = client.get_records(ShardIterator=iterator, Limit=1000)
            total += len(page["Records"])
            if not page["Records"] and page.get("MillisBehindLatest", 0) == 0:
                break
            iterator = page.get("NextShardIterator")
    return total, time.perf_counter() - started


async def bridge(client: Any, stream: str, last: dict[str, int], bootstrap: str) -> float:
    workdir = Path(tempfile.mkdtemp(prefix="xpstream-kinesis-bench-"))
    url = f"sqlite:///{workdir}/bench.db"
    upgrade_to_head(url)
    engine = make_engine(url)
    topics = Topics.of("kbench")
    await ensure_topics(bootstrap, topics.layout(PARTITIONS))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    stop = asyncio.Event()
    runner = KinesisBridge(client, engine, producer, stream, topics.events, PARTITIONS)
    started = time.perf_counter()
    task = asyncio.create_task(runner.run(stop))

    def done() -> bool:
        states = shard_states(engine, stream)
        return all(s in states and int(states[s].checkpoint or 0) >= seq for s, seq in last.items())

    while not await asyncio.to_thread(done):
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - started
    stop.set()
    await task
    await producer.stop()
    engine.dispose()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--shards", type=int, default=4)
    args = parser.parse_args()
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per moto request otherwise

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    port = free_port()
    server = ThreadedMotoServer(ip_address=HOST, port=port, verbose=False)
    server.start()
    try:
        client = kinesis_client(f"http://{HOST}:{port}", "us-east-1")
        stream = "bench"
        client.create_stream(StreamName=stream, ShardCount=args.shards)
        last = fill(client, stream, args.records)
        read, read_seconds = ceiling(client, stream)
        with EmbeddedBroker(log_path=Path(tempfile.mkdtemp()) / "tansu.log") as broker:
            bridge_seconds = asyncio.run(bridge(client, stream, last, broker.url))
    finally:
        server.stop()
    top = read / read_seconds
    ours = read / bridge_seconds
    print(f"get_records only (ceiling): {read} records in {read_seconds:.2f}s = {top:,.0f}/s")
    print(f"bridge to acked Kafka writes: {read} records in {bridge_seconds:.2f}s = {ours:,.0f}/s")
    print(f"bridge / ceiling: {ours / top:.0%}")


if __name__ == "__main__":
    main()

"""Pipeline events/s beside (a) the raw aiokafka getmany + JSON decode ceiling and (b) a naive
Faust agent that takes one event per message with a table update per event; same broker, same
run. Prints events/s of each and the ratios. The pipeline is `xpstream run --only workers` as
deployed (exactly-once on Apache Kafka); the naive agent runs in this process, where Faust uses
no transactions, which only flatters it.

Run: PYTHONPATH=. .venv/bin/python benchmarks/pipeline_throughput.py [--broker kafka|tansu]
     [--events 500000] [--naive-events 30000] [--envelope-events 500]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from config.settings import Settings
from jobs.simulate import demo_catalog, recent_start
from pipelines import attribution
from pipelines.attribution import Aggregates, AttributionConfig, UserAttribution
from pipelines.embedded_broker import EmbeddedBroker
from pipelines.events import CatalogIndex, decode_message
from pipelines.faust_app import make_app
from pipelines.producer import envelopes, send_envelopes
from pipelines.topics import Topics, ensure_topics
from pipelines.user_state import decode_state, encode_state
from sinks.sql.migrate import upgrade_to_head
from sinks.sql.store import flushed_offsets, make_engine, save_catalog
from stats.assignment import assign

PARTITIONS = 4


def synthetic_events(count: int, users: int = 50_000, seed: int = 1) -> list[bytes]:
    """80% metric, 20% exposure events over 50k users and the demo's three experiments."""
    rng = random.Random(seed)
    catalog = demo_catalog()
    experiments = list(catalog.experiments)
    lines = []
    start = recent_start(1.0)  # 500k events at 0.01 s apart span 1.4 h
    for number in range(count):
        user = f"user-{rng.randrange(users)}"
        ts = start + number * 0.01
        if rng.random() < 0.2:
            experiment = rng.choice(experiments)
            index = assign(user, experiment.hashing_seed, [v.weight for v in experiment.variants])
            event: dict[str, Any] = {
                "type": "exposure",
                "experiment": experiment.key,
                "variant": experiment.variants[index].key,
            }
        else:
            metric = rng.choice(("revenue", "purchase", "errors", "orders"))
            event = {
                "type": "metric",
                "metric": metric,
                "value": round(rng.uniform(1, 100), 2) if metric == "revenue" else 1,
            }
        event |= {"event_id": uuid.UUID(int=rng.getrandbits(128)).hex, "ts": ts, "user_id": user}
        lines.append(orjson.dumps(event))
    return lines


async def produce(
    bootstrap: str, topic: str, lines: list[bytes], per_envelope: int | None
) -> dict[int, int]:
    """Send and wait for acknowledgement; with envelopes, returns the last offset per partition."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=20,
        max_request_size=4 * 1024 * 1024,
        max_batch_size=1 << 20,
    )
    await producer.start()
    try:
        if per_envelope:
            return await send_envelopes(producer, topic, lines, PARTITIONS, per_envelope)
        futures = [
            await producer.send(topic, line, key=orjson.loads(line)["user_id"].encode())
            for line in lines
        ]
        await asyncio.gather(*futures)
        return {}
    finally:
        await producer.stop()


async def ceiling(bootstrap: str, topic: str, total: int) -> float:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=f"ceiling-{uuid.uuid4().hex}",
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
    )
    await consumer.start()
    seen = 0
    started = None
    try:
        while seen < total:
            batches = await consumer.getmany(timeout_ms=1000, max_records=1000)
            if started is None and batches:
                started = time.perf_counter()
            for messages in batches.values():
                for message in messages:
                    payload = orjson.loads(message.value)
                    seen += len(payload) if isinstance(payload, list) else 1
    finally:
        await consumer.stop()
    return total / (time.perf_counter() - (started or time.perf_counter()))


def events_per_envelope(lines: list[bytes], per_envelope: int) -> dict[int, list[int]]:
    """Events in each envelope, by partition, in offset order (a fresh topic starts at 0)."""
    sizes: dict[int, list[int]] = {}
    for partition, envelope in envelopes(lines, PARTITIONS, per_envelope):
        assert partition is not None
        sizes.setdefault(partition, []).append(len(orjson.loads(envelope)))
    return sizes


async def pipeline_rate(
    settings: Settings, bootstrap: str, lines: list[bytes], per_envelope: int
) -> float:
    """`xpstream run --only workers` as deployed (a faust.Worker, so exactly-once applies on
    Apache Kafka), on a topic filled beforehand: events flushed to SQL per second, counted
    from the first flush (the group is joined) to the last."""
    engine = make_engine(settings.database_url)
    topic = Topics.of(settings.namespace).events
    await ensure_topics(bootstrap, Topics.of(settings.namespace).layout(PARTITIONS))
    targets = await produce(bootstrap, topic, lines, per_envelope)
    sizes = events_per_envelope(lines, per_envelope)
    env = {
        **os.environ,
        "XPSTREAM_KAFKA_URL": bootstrap,
        "XPSTREAM_KAFKA_FLAVOR": settings.kafka_flavor,
        "XPSTREAM_NAMESPACE": settings.namespace,
        "XPSTREAM_DATABASE_URL": settings.database_url,
        "XPSTREAM_PARTITIONS": str(PARTITIONS),
        "XPSTREAM_FLUSH_SECONDS": str(settings.flush_seconds),
        "XPSTREAM_DATA_DIR": tempfile.mkdtemp(prefix="xpstream-bench-state-"),  # RocksDB
    }
    xpstream = Path(sys.executable).with_name("xpstream")
    worker = subprocess.Popen(
        [str(xpstream), "run", "--only", "workers"], env=env, stderr=subprocess.DEVNULL
    )
    try:
        started: tuple[float, int] | None = None
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            flushed = flushed_offsets(engine, topic)
            if flushed and started is None:
                done = sum(sum(sizes[p][: offset + 1]) for p, offset in flushed.items())
                started = (time.perf_counter(), done)
            if all(flushed.get(p, -1) >= last for p, last in targets.items()):
                assert started is not None
                return (len(lines) - started[1]) / (time.perf_counter() - started[0])
            time.sleep(0.05)
        raise TimeoutError("the worker did not flush every event")
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        engine.dispose()


async def naive_rate(settings: Settings, bootstrap: str, lines: list[bytes]) -> float:
    """One event per message, decoded, attributed and written to a table per event."""
    topic = f"naive-{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, {topic: PARTITIONS})
    await produce(bootstrap, topic, lines, None)
    catalog = demo_catalog()
    config = AttributionConfig.of(catalog, settings.window_seconds, 14 * 86400)
    index = CatalogIndex.of(catalog)
    app = make_app(
        f"naive-{uuid.uuid4().hex[:8]}",
        bootstrap,
        PARTITIONS,
        single_record_batches=settings.kafka_flavor == "tansu",
    )
    source = app.topic(topic, value_serializer="raw", key_serializer="raw", partitions=PARTITIONS)
    users = app.Table("users", key_type=bytes, value_type=bytes, partitions=PARTITIONS)
    done = asyncio.Event()
    count = 0
    started = 0.0

    @app.agent(source)
    async def attribute(stream: Any) -> None:
        nonlocal count, started
        async for raw in stream:
            if not count:
                started = time.perf_counter()  # the group is joined: start the clock
            for event in decode_message(raw, index).events:
                key = event.user_id.encode()
                previous = users.get(key)
                state, _ = UserAttribution(config, Aggregates()).apply(
                    decode_state(previous) if previous else None, [event]
                )
                users[key] = encode_state(state)
            count += 1
            if count == len(lines):
                done.set()

    await app.start()
    try:
        await asyncio.wait_for(done.wait(), timeout=1800)
    finally:
        elapsed = time.perf_counter() - started
        await app.stop()
    return len(lines) / elapsed


async def main_async(args: argparse.Namespace, bootstrap: str, flavor: str) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="xpstream-bench-"))
    database = f"sqlite:///{workdir}/bench.db"
    upgrade_to_head(database)
    engine = make_engine(database)
    save_catalog(engine, demo_catalog())
    engine.dispose()
    settings = Settings(
        namespace=f"bench{uuid.uuid4().hex[:6]}",
        partitions=PARTITIONS,
        kafka_flavor=flavor,
        database_url=database,
        flush_seconds=1.0,
    )
    lines = synthetic_events(args.events)
    print(
        f"broker: {flavor} at {bootstrap}; {len(lines)} events in envelopes of "
        f"{args.envelope_events}, {PARTITIONS} partitions, one worker process, "
        + ("exactly-once" if flavor == "apache" else "at-least-once (no transactions)")
        + "; attribution "
        + ("as Python" if attribution.__file__.endswith(".py") else "compiled (mypyc)")
    )
    pipeline = await pipeline_rate(settings, bootstrap, lines, args.envelope_events)
    top = await ceiling(bootstrap, Topics.of(settings.namespace).events, len(lines))
    naive = await naive_rate(settings, bootstrap, lines[: args.naive_events])
    print(f"ceiling (aiokafka getmany + JSON decode): {top:10.0f} events/s")
    print(f"xpstream pipeline (to flushed SQL rows):  {pipeline:10.0f} events/s")
    print(
        f"naive Faust agent, 1 event/message:       {naive:10.0f} events/s "
        f"({args.naive_events} events)"
    )
    print(f"pipeline / naive:   {pipeline / naive:6.1f}x")
    print(f"pipeline / ceiling: {pipeline / top:6.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--broker", choices=("kafka", "tansu"), default="kafka")
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--naive-events", type=int, default=30_000)
    parser.add_argument("--envelope-events", type=int, default=500)
    args = parser.parse_args()
    if args.broker == "tansu":
        with EmbeddedBroker() as broker:
            asyncio.run(main_async(args, broker.url, "tansu"))
        return
    from tests.services.apache_kafka import ApacheKafka

    kafka = ApacheKafka().start()
    try:
        asyncio.run(main_async(args, kafka.bootstrap, "apache"))
    finally:
        kafka.stop()


if __name__ == "__main__":
    main()

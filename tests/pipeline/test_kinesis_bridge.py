"""The Kinesis bridge against kinesalite over HTTP, the real broker and real SQL: a split and a
merge mid-stream, a SIGKILLed bridge, two bridges sharing shards — aggregates equal pandas."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaProducer

from config.settings import Settings
from jobs.replay import pipeline_counters
from pipelines.kinesis import KinesisBridge, kinesis_client
from pipelines.topics import Topics, ensure_topics
from sinks.sql.kinesis_leases import register_shards, save_checkpoint, shard_states, take_lease
from sinks.sql.migrate import upgrade_to_head
from sinks.sql.store import make_engine, save_catalog
from tests.conftest import Broker
from tests.pipeline.conftest import XPSTREAM
from tests.pipeline.draining import drain_pipeline
from tests.pipeline.generate import EventFile, generate
from tests.pipeline.test_ground_truth import check_against_ground_truth


@pytest.fixture(scope="module")
def events() -> EventFile:
    generated = generate(users=3500, seed=5)
    assert len(generated.lines) >= 20_000
    return generated


class Stream:
    """A kinesalite stream and what was put into it: the last sequence number per shard."""

    def __init__(self, endpoint: str, shards: int) -> None:
        self.name = f"s{uuid.uuid4().hex[:10]}"
        self.client = kinesis_client(endpoint, "us-east-1")
        self.client.create_stream(StreamName=self.name, ShardCount=shards)
        self.wait_active()
        self.last: dict[str, int] = {}

    def wait_active(self) -> None:
        for _ in range(200):
            summary = self.client.describe_stream_summary(StreamName=self.name)
            if summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
                return
            time.sleep(0.05)
        raise TimeoutError("stream not ACTIVE")

    def put(self, lines: list[str], first_index: int) -> None:
        for start in range(0, len(lines), 500):
            records = []
            for offset, line in enumerate(lines[start : start + 500]):
                try:
                    user = json.loads(line).get("user_id")
                except (ValueError, AttributeError):
                    user = None
                key = (
                    user
                    if isinstance(user, str) and user
                    else f"bad-{first_index + start + offset}"
                )
                records.append({"Data": line.encode(), "PartitionKey": key})
            result = self.client.put_records(StreamName=self.name, Records=records)
            assert result["FailedRecordCount"] == 0
            for entry in result["Records"]:
                sequence = int(entry["SequenceNumber"])
                self.last[entry["ShardId"]] = max(self.last.get(entry["ShardId"], 0), sequence)

    def open_shards(self) -> list[dict[str, Any]]:
        shards = self.client.list_shards(StreamName=self.name)["Shards"]
        return [s for s in shards if "EndingSequenceNumber" not in s["SequenceNumberRange"]]

    def split_first(self) -> None:
        shard = self.open_shards()[0]
        low = int(shard["HashKeyRange"]["StartingHashKey"])
        high = int(shard["HashKeyRange"]["EndingHashKey"])
        self.client.split_shard(
            StreamName=self.name,
            ShardToSplit=shard["ShardId"],
            NewStartingHashKey=str((low + high) // 2),
        )
        self.wait_active()

    def merge_adjacent(self) -> None:
        shards = sorted(self.open_shards(), key=lambda s: int(s["HashKeyRange"]["StartingHashKey"]))
        for left, right in itertools.pairwise(shards):
            if int(left["HashKeyRange"]["EndingHashKey"]) + 1 == int(
                right["HashKeyRange"]["StartingHashKey"]
            ):
                self.client.merge_shards(
                    StreamName=self.name,
                    ShardToMerge=left["ShardId"],
                    AdjacentShardToMerge=right["ShardId"],
                )
                self.wait_active()
                return
        raise AssertionError("no adjacent open shards")

    def forwarded(self, engine: sa.Engine) -> bool:
        """Every record put is behind a checkpoint."""
        states = shard_states(engine, self.name)
        return all(
            shard in states
            and states[shard].checkpoint is not None
            and int(states[shard].checkpoint or 0) >= last
            for shard, last in self.last.items()
        )


def database(tmp_path: Path, event_file: EventFile) -> tuple[str, sa.Engine]:
    url = f"sqlite:///{tmp_path}/kinesis.db"
    upgrade_to_head(url)
    engine = make_engine(url)
    save_catalog(engine, event_file.catalog)
    return url, engine


async def until(condition: Callable[[], bool], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.2)


def settings_for(url: str, namespace: str) -> Settings:
    return Settings(database_url=url, namespace=namespace, partitions=4, flush_seconds=0.5)


def check(engine: sa.Engine, event_file: EventFile, replayed: bool = False) -> None:
    """Aggregates exact; dead letters exact unless records were re-read after a crash or a
    lease hand-over (bad records carry no event_id to de-duplicate: at least once)."""
    check_against_ground_truth(engine, event_file)
    dead = pipeline_counters(engine)["by_reason"]
    if replayed:
        assert set(dead) == set(event_file.injected)
        assert all(dead[reason] >= count for reason, count in event_file.injected.items())
    else:
        assert dead == pytest.approx(dict(event_file.injected))


def test_split_and_merge_mid_stream(
    kinesalite: str, apache_kafka: Broker, events: EventFile, tmp_path: Path
) -> None:
    url, engine = database(tmp_path, events)
    settings = settings_for(url, f"k{uuid.uuid4().hex[:8]}")
    topics = Topics.of(settings.namespace)
    stream = Stream(kinesalite, shards=2)
    lines = events.lines
    cut1, cut2 = len(lines) * 2 // 5, len(lines) * 7 // 10

    async def scenario() -> KinesisBridge:
        await ensure_topics(apache_kafka.bootstrap, topics.layout(settings.partitions))
        producer = AIOKafkaProducer(
            bootstrap_servers=apache_kafka.bootstrap, acks="all", linger_ms=5
        )
        await producer.start()
        bridge = KinesisBridge(
            stream.client,
            engine,
            producer,
            stream.name,
            topics.events,
            settings.partitions,
            lease_seconds=3.0,
        )
        stop = asyncio.Event()
        running = asyncio.create_task(bridge.run(stop))
        try:
            await asyncio.to_thread(stream.put, lines[:cut1], 0)
            await asyncio.to_thread(stream.split_first)
            await asyncio.to_thread(stream.put, lines[cut1:cut2], cut1)
            await asyncio.to_thread(stream.merge_adjacent)
            await asyncio.to_thread(stream.put, lines[cut2:], cut2)
            await until(lambda: stream.forwarded(engine))
        finally:
            stop.set()
            await running
            await producer.stop()
        await drain_pipeline(settings, apache_kafka.bootstrap, engine)
        return bridge

    bridge = asyncio.run(scenario())
    shards = stream.client.list_shards(StreamName=stream.name)["Shards"]
    assert len(shards) == 5  # 2 + 2 children of the split + 1 of the merge
    assert bridge.stats.forwarded == len(lines)  # no record read twice by one healthy bridge
    check(engine, events)
    engine.dispose()


def bridge_process(env: dict[str, str], stream: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [XPSTREAM, "kinesis-bridge", "--stream", stream, "--lease-seconds", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture()
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def env_for(kinesalite: str, broker: Broker, url: str, namespace: str) -> dict[str, str]:
    return {
        **os.environ,
        "XPSTREAM_KAFKA_URL": broker.bootstrap,
        "XPSTREAM_DATABASE_URL": url,
        "XPSTREAM_NAMESPACE": namespace,
        "XPSTREAM_PARTITIONS": "4",
        "XPSTREAM_AWS_ENDPOINT_URL": kinesalite,
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def test_sigkill_and_restart(
    kinesalite: str,
    apache_kafka: Broker,
    events: EventFile,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    url, engine = database(tmp_path, events)
    namespace = f"k{uuid.uuid4().hex[:8]}"
    env = env_for(kinesalite, apache_kafka, url, namespace)
    stream = Stream(kinesalite, shards=2)
    half = len(events.lines) // 2
    stream.put(events.lines[:half], 0)
    first = bridge_process(env, stream.name)
    processes.append(first)

    def some_progress() -> bool:
        states = shard_states(engine, stream.name)
        return any(s.checkpoint for s in states.values())

    asyncio.run(until(some_progress, 60))
    stream.put(events.lines[half:], half)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not stream.forwarded(engine)  # killed mid-stream
    processes.append(bridge_process(env, stream.name))
    asyncio.run(until(lambda: stream.forwarded(engine)))
    settings = settings_for(url, namespace)
    asyncio.run(drain_pipeline(settings, apache_kafka.bootstrap, engine))
    check(engine, events, replayed=True)
    engine.dispose()


def test_two_bridges_share_and_hand_over(
    kinesalite: str,
    apache_kafka: Broker,
    events: EventFile,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    url, engine = database(tmp_path, events)
    namespace = f"k{uuid.uuid4().hex[:8]}"
    env = env_for(kinesalite, apache_kafka, url, namespace)
    stream = Stream(kinesalite, shards=4)
    stream.put(events.lines[:1000], 0)
    processes.extend([bridge_process(env, stream.name), bridge_process(env, stream.name)])

    def owners() -> dict[str, str | None]:
        now = time.time()
        return {
            shard: state.owner if state.lease_expires_at >= now else None
            for shard, state in shard_states(engine, stream.name).items()
        }

    def shared() -> bool:  # both bridges own shards, and every shard has a live owner
        split = owners()
        return len(split) == 4 and all(split.values()) and len(set(split.values())) == 2

    # Bridges claim shards one lease round at a time: wait for the split, not for the first
    # claim of the second bridge (a shard could still be unclaimed then).
    asyncio.run(until(shared, 60))
    victim = processes[0]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    asyncio.run(
        until(lambda: len(set(owners().values()) - {None}) == 1 and all(owners().values()), 60)
    )
    stream.put(events.lines[1000:], 1000)
    asyncio.run(until(lambda: stream.forwarded(engine)))
    asyncio.run(drain_pipeline(settings_for(url, namespace), apache_kafka.bootstrap, engine))
    check(engine, events, replayed=True)
    engine.dispose()


def test_a_lapsed_lease_cannot_checkpoint(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/lease.db"
    upgrade_to_head(url)
    engine = make_engine(url)
    register_shards(engine, "s", ["shard-0"])
    assert take_lease(engine, "s", "shard-0", "a", now=100.0, seconds=5)
    assert not take_lease(engine, "s", "shard-0", "b", now=101.0, seconds=5)  # a holds it
    assert save_checkpoint(engine, "s", "shard-0", "a", 102.0, "10", finished=False)
    assert take_lease(engine, "s", "shard-0", "b", now=106.0, seconds=5)  # a's lease lapsed
    assert not save_checkpoint(engine, "s", "shard-0", "a", 106.5, "20", finished=False)
    assert shard_states(engine, "s")["shard-0"].checkpoint == "10"
    assert save_checkpoint(engine, "s", "shard-0", "b", 107.0, "20", finished=True)
    assert not take_lease(engine, "s", "shard-0", "a", now=200.0, seconds=5)  # finished
    engine.dispose()

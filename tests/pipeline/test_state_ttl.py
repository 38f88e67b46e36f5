"""User states on RocksDB (Apache Kafka with exactly-once, and Tansu): an experiment stopped
longer than XPSTREAM_STATE_TTL_DAYS leaves the states (a user with nothing left is deleted, a
tombstone on the compacted changelog), the totals stay as they were, and a restart from the
on-disk checkpoint sees the same states."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from config.settings import Settings
from jobs.replay import produce_lines, wait_until_flushed
from pipelines.topics import Topics, ensure_topics
from pipelines.user_state import decode_state
from pipelines.worker import Pipeline, build_pipeline
from sinks.kafka_reads import committed_reader, read_until
from sinks.sql.migrate import upgrade_to_head
from sinks.sql.store import cumulative_arms, make_engine
from tests.conftest import Broker
from tests.pipeline.conftest import load_catalog, pipeline_env, xpstream
from tests.pipeline.generate import CATALOG, generate

DAY = 86400.0


def solo_lines() -> list[bytes]:
    """Users exposed to exp-a alone (the generated ones are in several experiments)."""
    return [
        json.dumps(event).encode()
        for number in range(40)
        for event in (
            {"type": "exposure", "experiment": "exp-a", "variant": "control"},
            {"type": "metric", "metric": "revenue", "value": 5.0},
        )
        for event in [
            {**event, "event_id": f"solo-{number}-{event['type']}", "user_id": f"solo-{number}",
             "ts": 1_764_000_000.0 + number}
        ]
    ]  # fmt: skip


def statistics_of(pipeline: Pipeline) -> set[bytes]:
    """The experiments whose windows or totals the worker holds."""
    return {key.split(b"\x1f")[1] for key in pipeline.aggregates if key[:1] in (b"w", b"t")}


def states(pipeline: Pipeline) -> dict[bytes, bytes]:
    return {
        key: record
        for partition in sorted(pipeline.verified)
        for key in pipeline.users.keys(partition)
        if (record := pipeline.users.view(partition).get(key)) is not None
    }


async def last_changelog_records(bootstrap: str, topic: str) -> dict[bytes, bytes | None]:
    """The newest committed record per key of the users changelog."""
    newest: dict[bytes, bytes | None] = {}
    async with committed_reader(bootstrap) as consumer:
        tps = [TopicPartition(topic, p) for p in range(4)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        async for _, records in read_until(consumer, await consumer.end_offsets(tps)):
            newest.update((r.key, r.value) for r in records)
    return newest


async def cleanup_policies(bootstrap: str, topics: list[str]) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in topics]
        )
    finally:
        await admin.close()
    policies = {}
    for response in described:
        for _, _, _, name, configs, *_ in response.resources:
            policies[name] = next(c[1] for c in configs if c[0] == "cleanup.policy")
    return policies


def test_a_stopped_experiments_states_expire_after_the_ttl(
    kafka_broker: Broker, tmp_path: Path
) -> None:
    """On Apache Kafka under exactly-once, and on Tansu (at-least-once, no compaction: the
    cleanup policy is Apache Kafka's to check)."""
    event_file = generate(users=800, seed=5)
    database = f"sqlite:///{tmp_path}/xp.db"
    env = pipeline_env(kafka_broker, database)
    load_catalog(env, CATALOG, tmp_path)
    settings = Settings(
        namespace=env["XPSTREAM_NAMESPACE"],
        partitions=4,
        database_url=database,
        flush_seconds=0.5,
        kafka_flavor="apache" if kafka_broker.transactions else "tansu",
        data_dir=str(tmp_path / "state"),
        state_ttl_days=30,
    )
    upgrade_to_head(database)
    engine = make_engine(database)
    topics = Topics.of(settings.namespace)
    bootstrap = kafka_broker.bootstrap

    totals: dict[tuple[str, str, str], dict[str, float]] = {}

    async def first_run() -> tuple[dict[bytes, bytes], dict[bytes, bytes], int]:
        await ensure_topics(bootstrap, topics.layout(settings.partitions))
        pipeline = build_pipeline(settings, bootstrap, engine, state_store="rocksdb")
        await pipeline.app.start()
        try:
            lines = [line.encode() for line in event_file.lines] + solo_lines()
            await wait_until_flushed(
                engine, topics.events, await produce_lines(settings, bootstrap, lines), 180
            )
            before = states(pipeline)
            totals.update(cumulative_arms(engine))
            stopped = xpstream(env, "experiments", "stop", "exp-a")
            assert stopped.returncode == 0, stopped.stderr
            pipeline.reload_catalog()
            assert await pipeline.expire_states(time.time() + 29 * DAY) == 0  # not yet
            changed = await pipeline.expire_states(time.time() + 31 * DAY)
            assert await pipeline.expire_states(time.time() + 32 * DAY) == 0  # swept once
            # The sweep's writes join the transaction of the next unit: a bad line is one.
            bad = await produce_lines(settings, bootstrap, [b'{"not": "an event"}'])
            await wait_until_flushed(engine, topics.events, bad, 60)
            await asyncio.sleep(1.5)  # a flush interval: the commit reaches the disk
            assert statistics_of(pipeline) == {b"exp-b", b"exp-c"}  # exp-a's left memory
            return before, states(pipeline), changed
        finally:
            await pipeline.app.stop()

    before, after, changed = asyncio.run(first_run())
    assert cumulative_arms(engine) == totals  # expiry changes states, never statistics

    in_a = {k for k, r in before.items() if "exp-a" in decode_state(r).exposures}
    only_a = {k for k in in_a if set(decode_state(before[k]).exposures) == {"exp-a"}}
    assert only_a and in_a - only_a  # both kinds of user are there to expire
    assert changed == len(in_a)
    assert set(after) == set(before) - only_a
    for key in in_a - only_a:
        state = decode_state(after[key])
        assert "exp-a" not in state.exposures and "exp-a" not in state.crossovers
        assert not any(raw.startswith("exp-a") for raw in state.raw)
    for key in set(before) - in_a:
        assert after[key] == before[key]

    changelog = f"{settings.namespace}-users-changelog"
    newest = asyncio.run(last_changelog_records(bootstrap, changelog))
    assert {k for k, v in newest.items() if v is None} == only_a  # tombstones
    if kafka_broker.transactions:
        policies = asyncio.run(
            cleanup_policies(bootstrap, [changelog, f"{settings.namespace}-aggregates-changelog"])
        )
        assert set(policies.values()) == {"compact"}, policies

    async def restart() -> dict[bytes, bytes]:
        pipeline = build_pipeline(settings, bootstrap, engine, state_store="rocksdb")
        await pipeline.app.start()
        try:
            deadline = time.monotonic() + 60
            while pipeline.assigned_partitions() != {0, 1, 2, 3}:
                assert time.monotonic() < deadline, "never assigned"
                await asyncio.sleep(0.2)
            await pipeline.ensure_state(0)  # every assigned partition, from its checkpoint
            assert statistics_of(pipeline) == {b"exp-b", b"exp-c"}  # the tombstones restored
            return states(pipeline)
        finally:
            await pipeline.app.stop()

    assert asyncio.run(restart()) == after
    engine.dispose()

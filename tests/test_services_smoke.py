"""Each real test service starts, answers and does the basic work the pipeline relies on."""

from __future__ import annotations

import uuid

import boto3
import pytest
import sqlalchemy as sa
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from tests.conftest import Broker

MESSAGES = 1_000
PARTITIONS = 4


def test_kafka_topic_produce_consume_in_group(kafka_broker: Broker) -> None:
    topic = f"smoke-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap, client_id="smoke-admin")
    try:
        admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    finally:
        admin.close()

    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
    for i in range(MESSAGES):
        producer.send(topic, key=f"user-{i % 97}".encode(), value=str(i).encode())
    producer.flush()
    producer.close()

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_broker.bootstrap,
        group_id=f"group-{topic}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
        consumer_timeout_ms=20_000,
    )
    seen: list[int] = []
    partitions_seen: set[int] = set()
    keys_by_partition: dict[bytes, set[int]] = {}
    for message in consumer:
        seen.append(int(message.value))
        partitions_seen.add(message.partition)
        keys_by_partition.setdefault(message.key, set()).add(message.partition)
        if len(seen) == MESSAGES:
            break
    consumer.commit()
    consumer.close()

    assert sorted(seen) == list(range(MESSAGES))
    assert partitions_seen == set(range(PARTITIONS))
    # one key, one partition: the property per-user state relies on
    assert all(len(parts) == 1 for parts in keys_by_partition.values())


def test_kafka_transaction_commits_and_aborts(apache_kafka: Broker) -> None:
    topic = f"txn-{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(
        bootstrap_servers=apache_kafka.bootstrap,
        transactional_id=f"smoke-{topic}",
        enable_idempotence=True,
    )
    producer.init_transactions()
    producer.begin_transaction()
    producer.send(topic, b"committed")
    producer.commit_transaction()
    producer.begin_transaction()
    producer.send(topic, b"aborted")
    producer.abort_transaction()
    producer.begin_transaction()
    producer.send(topic, b"committed-2")
    producer.commit_transaction()
    producer.close()

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=apache_kafka.bootstrap,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        consumer_timeout_ms=10_000,
    )
    values = []
    for message in consumer:
        values.append(message.value)
        if len(values) == 2:
            break
    consumer.close()
    assert values == [b"committed", b"committed-2"]


def test_postgres_roundtrip_through_sqlalchemy(postgres: str) -> None:
    engine = sa.create_engine(postgres)
    metadata = sa.MetaData()
    table = sa.Table(
        "smoke",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
    )
    with engine.begin() as conn:
        metadata.create_all(conn)
        conn.execute(sa.insert(table), [{"id": i, "name": f"n{i}"} for i in range(10)])
    with engine.connect() as conn:
        version = conn.execute(sa.text("show server_version")).scalar_one()
        rows = conn.execute(sa.select(table.c.name).order_by(table.c.id)).scalars().all()
    engine.dispose()
    assert version.startswith("15.")
    assert rows == [f"n{i}" for i in range(10)]


@pytest.mark.parametrize("records", [500])
def test_kinesis_put_and_get_records(kinesis_endpoint: str, records: int) -> None:
    client = boto3.client("kinesis", endpoint_url=kinesis_endpoint, region_name="us-east-1")
    stream = f"smoke-{uuid.uuid4().hex[:8]}"
    client.create_stream(StreamName=stream, ShardCount=1)
    client.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.1})
    response = client.put_records(
        StreamName=stream,
        Records=[{"Data": f"r{i}".encode(), "PartitionKey": f"u{i}"} for i in range(records)],
    )
    assert response["FailedRecordCount"] == 0
    shard_id = client.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
    iterator = client.get_shard_iterator(
        StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    got: list[bytes] = []
    while len(got) < records:
        page = client.get_records(ShardIterator=iterator, Limit=1000)
        got.extend(record["Data"] for record in page["Records"])
        iterator = page["NextShardIterator"]
        if not page["Records"]:
            break
    assert got == [f"r{i}".encode() for i in range(records)]

"""The Kinesis source: reads every shard from its checkpoint and forwards the records to the
events topic keyed by user (one processing path), checkpointing only after Kafka acknowledged.

Shards are shared between bridge processes through lease rows in SQL, as the Kinesis Client
Library shares them through DynamoDB: one owner per shard, leases renewed while the owner lives,
taken over when they expire. A parent shard is read to its end before its children start, so a
split or merge loses nothing and keeps each user's events in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

import boto3
from aiokafka import AIOKafkaProducer
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy import Engine

from pipelines.producer import send_envelopes
from sinks.sql.kinesis_leases import (
    ShardState,
    register_shards,
    release_leases,
    save_checkpoint,
    shard_states,
    steal_lease,
    take_lease,
)

log = logging.getLogger(__name__)

RETRYABLE = {
    "ProvisionedThroughputExceededException",
    "LimitExceededException",
    "InternalFailure",
    "ServiceUnavailable",
    "ThrottlingException",
}
RECORDS_PER_CALL = 1000


def kinesis_client(endpoint_url: str, region: str | None = None) -> Any:
    """boto3's client: region and credentials from the usual AWS chain; our own retries."""
    return boto3.client(
        "kinesis",
        endpoint_url=endpoint_url or None,
        region_name=region or boto3.session.Session().region_name or "us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=10),
    )


def backoff(attempt: int, base: float = 0.1, cap: float = 5.0) -> float:
    """Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff And
    Jitter", 2015)."""
    return random.uniform(0, min(cap, base * 2**attempt))


def is_retryable(exc: Exception) -> bool:
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return code in RETRYABLE or status >= 500
    return isinstance(exc, BotoCoreError)


@dataclass
class ShardReader:
    shard_id: str
    iterator: str | None = None
    attempts: int = 0
    not_before: float = 0.0  # monotonic time of the next allowed call (backoff)


@dataclass
class BridgeStats:
    forwarded: int = 0  # records sent to Kafka and acknowledged


class KinesisBridge:
    def __init__(
        self,
        client: Any,
        engine: Engine,
        producer: AIOKafkaProducer,
        stream: str,
        topic: str,
        partitions: int,
        *,
        owner: str | None = None,
        lease_seconds: float = 10.0,
        poll_seconds: float = 0.2,
    ) -> None:
        self.client, self.engine, self.producer = client, engine, producer
        self.stream, self.topic, self.partitions = stream, topic, partitions
        self.owner = owner or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self.lease_seconds, self.poll_seconds = lease_seconds, poll_seconds
        self.readers: dict[str, ShardReader] = {}
        self.stats = BridgeStats()

    async def run(self, stop: asyncio.Event) -> None:
        next_balance = 0.0
        try:
            while not stop.is_set():
                if time.monotonic() >= next_balance:
                    await self._balance()
                    next_balance = time.monotonic() + self.lease_seconds / 3
                results = await asyncio.gather(
                    *(self._read(r) for r in list(self.readers.values()))
                )
                if not any(results):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.poll_seconds)
        finally:
            await asyncio.to_thread(
                release_leases, self.engine, self.stream, self.owner, list(self.readers)
            )

    async def _balance(self) -> None:
        """Renew our leases, then take free or expired shards up to a fair share."""
        shards = await asyncio.to_thread(self._list_shards)
        await asyncio.to_thread(register_shards, self.engine, self.stream, shards)
        states = await asyncio.to_thread(shard_states, self.engine, self.stream)
        now = time.time()
        eligible = [s for s in shards if _eligible(s, shards, states)]
        for shard_id in list(self.readers):
            if shard_id not in eligible or not await asyncio.to_thread(
                take_lease, self.engine, self.stream, shard_id, self.owner, now, self.lease_seconds
            ):
                self.readers.pop(shard_id)  # finished, or taken over after our lease lapsed
        owners = {s.owner for s in states.values() if s.owner and s.lease_expires_at >= now}
        share = math.ceil(len(eligible) / max(1, len(owners | {self.owner})))
        for shard_id in eligible:
            if len(self.readers) >= share:
                break
            state = states.get(shard_id)
            free = (
                state is None or state.owner in (None, self.owner) or state.lease_expires_at < now
            )
            if shard_id in self.readers or not free:
                continue
            if await asyncio.to_thread(
                take_lease, self.engine, self.stream, shard_id, self.owner, now, self.lease_seconds
            ):
                self.readers[shard_id] = ShardReader(shard_id)
        if len(self.readers) < share:
            await self._steal_one(eligible, states, now, share)
        surplus = sorted(self.readers)[share:] if len(owners) > 1 else []
        if surplus:  # hand shards to a newly started bridge: it resumes from our checkpoints
            for shard_id in surplus:
                self.readers.pop(shard_id)
            await asyncio.to_thread(release_leases, self.engine, self.stream, self.owner, surplus)

    async def _steal_one(
        self, eligible: list[str], states: dict[str, ShardState], now: float, share: int
    ) -> None:
        """No free shard and fewer than our share: take one from the busiest other owner."""
        held: dict[str, list[str]] = {}
        for shard_id in eligible:
            state = states.get(shard_id)
            if (
                state
                and state.owner
                and state.owner != self.owner
                and state.lease_expires_at >= now
            ):
                held.setdefault(state.owner, []).append(shard_id)
        if not held:
            return
        victim, shards = max(held.items(), key=lambda item: len(item[1]))
        if len(shards) <= share:
            return
        shard_id = sorted(shards)[-1]
        if await asyncio.to_thread(
            steal_lease,
            self.engine,
            self.stream,
            shard_id,
            victim,
            self.owner,
            now,
            self.lease_seconds,
        ):
            self.readers[shard_id] = ShardReader(shard_id)

    def _list_shards(self) -> dict[str, dict[str, Any]]:
        shards: dict[str, dict[str, Any]] = {}
        kwargs: dict[str, Any] = {"StreamName": self.stream}
        while True:
            page = self.client.list_shards(**kwargs)
            shards.update({s["ShardId"]: s for s in page["Shards"]})
            if not page.get("NextToken"):
                return shards
            kwargs = {"NextToken": page["NextToken"]}

    async def _read(self, reader: ShardReader) -> int:
        """One get_records call on a shard, forwarded and checkpointed; returns records read."""
        if time.monotonic() < reader.not_before:
            return 0
        try:
            if reader.iterator is None:
                reader.iterator = await asyncio.to_thread(self._iterator, reader.shard_id)
            page = await asyncio.to_thread(
                self.client.get_records, ShardIterator=reader.iterator, Limit=RECORDS_PER_CALL
            )
        except (ClientError, BotoCoreError) as exc:
            code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else ""
            if code == "ExpiredIteratorException":
                reader.iterator = None
                return 0
            if not is_retryable(exc):
                raise
            reader.attempts += 1
            reader.not_before = time.monotonic() + backoff(reader.attempts)
            return 0
        reader.attempts = 0
        records = page["Records"]
        if records:
            await send_envelopes(
                self.producer, self.topic, [r["Data"] for r in records], self.partitions
            )
        closed = page.get("NextShardIterator") is None
        kept = await asyncio.to_thread(
            save_checkpoint,
            self.engine,
            self.stream,
            reader.shard_id,
            self.owner,
            time.time(),
            records[-1]["SequenceNumber"] if records else None,
            closed,
        )
        self.stats.forwarded += len(records)
        if closed or not kept:  # finished, or the lease was lost: stop reading this shard
            self.readers.pop(reader.shard_id, None)
            return len(records)
        reader.iterator = page["NextShardIterator"]
        return len(records)

    def _iterator(self, shard_id: str) -> str:
        state = shard_states(self.engine, self.stream).get(shard_id)
        if state is not None and state.checkpoint is not None:
            start = {
                "ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
                "StartingSequenceNumber": state.checkpoint,
            }
        else:
            start = {"ShardIteratorType": "TRIM_HORIZON"}
        response = self.client.get_shard_iterator(StreamName=self.stream, ShardId=shard_id, **start)
        return str(response["ShardIterator"])


def _eligible(
    shard_id: str, shards: dict[str, dict[str, Any]], states: dict[str, ShardState]
) -> bool:
    """Not finished, and every parent still in the stream has been read to its end."""
    state = states.get(shard_id)
    if state is not None and state.finished:
        return False
    shard = shards[shard_id]
    for parent in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId")):
        if parent and parent in shards:
            parent_state = states.get(parent)
            if parent_state is None or not parent_state.finished:
                return False
    return True

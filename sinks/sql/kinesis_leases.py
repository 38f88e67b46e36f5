"""Shard leases and checkpoints for the Kinesis bridge. Every change is one conditional UPDATE,
so two bridges racing for a shard cannot both win, on Postgres and SQLite alike."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, or_, select, update

from sinks.sql.models import KinesisShardRow
from sinks.sql.store import insert_for


@dataclass(frozen=True)
class ShardState:
    shard_id: str
    checkpoint: str | None
    finished: bool
    owner: str | None
    lease_expires_at: float


def register_shards(engine: Engine, stream: str, shard_ids: Iterable[str]) -> None:
    rows = [{"stream": stream, "shard_id": s, "finished": False} for s in shard_ids]
    if not rows:
        return
    with engine.begin() as conn:
        conn.execute(
            insert_for(engine, KinesisShardRow.__table__).on_conflict_do_nothing(
                index_elements=["stream", "shard_id"]
            ),
            rows,
        )


def shard_states(engine: Engine, stream: str) -> dict[str, ShardState]:
    query = select(KinesisShardRow).where(KinesisShardRow.stream == stream)
    with engine.connect() as conn:
        return {
            row.shard_id: ShardState(
                row.shard_id, row.checkpoint, row.finished, row.owner, row.lease_expires_at
            )
            for row in conn.execute(query)
        }


def _update_one(
    engine: Engine, stream: str, shard_id: str, conditions: list[Any], values: dict[str, Any]
) -> bool:
    """UPDATE the shard's row when ``conditions`` hold; True when it did (exactly one row)."""
    with engine.begin() as conn:
        result = conn.execute(
            update(KinesisShardRow)
            .where(
                KinesisShardRow.stream == stream, KinesisShardRow.shard_id == shard_id, *conditions
            )
            .values(**values)
        )
        return result.rowcount == 1


def take_lease(
    engine: Engine, stream: str, shard_id: str, owner: str, now: float, seconds: float
) -> bool:
    """Take (or renew) the lease when it is free, expired or already ours."""
    return _update_one(
        engine,
        stream,
        shard_id,
        [
            KinesisShardRow.finished.is_(False),
            or_(
                KinesisShardRow.owner.is_(None),
                KinesisShardRow.owner == owner,
                KinesisShardRow.lease_expires_at < now,
            ),
        ],
        {"owner": owner, "lease_expires_at": now + seconds},
    )


def steal_lease(
    engine: Engine,
    stream: str,
    shard_id: str,
    victim: str,
    thief: str,
    now: float,
    seconds: float,
) -> bool:
    """Take a live lease from an owner holding more than its share (the KCL's lease stealing);
    the victim notices at its next renewal or checkpoint, both of which then fail."""
    return _update_one(
        engine,
        stream,
        shard_id,
        [KinesisShardRow.owner == victim, KinesisShardRow.finished.is_(False)],
        {"owner": thief, "lease_expires_at": now + seconds},
    )


def save_checkpoint(
    engine: Engine,
    stream: str,
    shard_id: str,
    owner: str,
    now: float,
    sequence: str | None,
    finished: bool,
) -> bool:
    """Record progress only while the lease is ours and live; False: the lease was lost."""
    values: dict[str, object] = {"finished": finished}
    if sequence is not None:
        values["checkpoint"] = sequence
    if finished:
        values["owner"] = None
    return _update_one(
        engine,
        stream,
        shard_id,
        [KinesisShardRow.owner == owner, KinesisShardRow.lease_expires_at >= now],
        values,
    )


def release_leases(engine: Engine, stream: str, owner: str, shard_ids: Iterable[str]) -> None:
    ids = list(shard_ids)
    if not ids:
        return
    with engine.begin() as conn:
        conn.execute(
            update(KinesisShardRow)
            .where(
                KinesisShardRow.stream == stream,
                KinesisShardRow.owner == owner,
                KinesisShardRow.shard_id.in_(ids),
            )
            .values(owner=None, lease_expires_at=0.0)
        )

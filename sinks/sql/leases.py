"""One leader per role among replicas (analyzer, scheduler, publisher, shipper), by a lease row
per role like the Kinesis shard leases: taken or renewed by one conditional UPDATE, so two
replicas racing cannot both win. A leader checks its lease, row-locked, as the first statement
of every transaction that acts: one that lost it (expired, taken over) commits nothing, and a
replica taking the lease over waits for that transaction to end."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field

from sqlalchemy import Engine, or_, select, update
from sqlalchemy.orm import Session

from sinks.sql.models import LeaseRow
from sinks.sql.store import insert_for

log = logging.getLogger(__name__)


class LeaseLostError(RuntimeError):
    """The acting transaction's lease is no longer this replica's: it must roll back."""


def replica_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class Lease:
    """``role``'s lease for this replica; ``seconds`` long, renewed by every :meth:`acquire`."""

    engine: Engine
    role: str
    seconds: float
    owner: str = field(default_factory=replica_name)
    leading: bool = False

    def acquire(self) -> bool:
        """Take the lease when it is free or expired, or renew it when it is ours."""
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(
                insert_for(conn, LeaseRow)
                .values(role=self.role, owner=None, expires_at=0.0)
                .on_conflict_do_nothing(index_elements=["role"])
            )
            taken = conn.execute(
                update(LeaseRow)
                .where(
                    LeaseRow.role == self.role,
                    or_(
                        LeaseRow.owner.is_(None),
                        LeaseRow.owner == self.owner,
                        LeaseRow.expires_at < now,
                    ),
                )
                .values(owner=self.owner, expires_at=now + self.seconds)
            ).rowcount
        if bool(taken) != self.leading:
            self.leading = bool(taken)
            log.warning("%s: %s", self.role, "leading" if taken else "following (lease lost)")
        return self.leading

    def check(self, session: Session) -> None:
        """In an acting transaction, first: the lease row locked and still ours, live."""
        row = session.scalars(
            select(LeaseRow).where(LeaseRow.role == self.role).with_for_update()
        ).first()
        if row is None or row.owner != self.owner or row.expires_at < time.time():
            self.leading = False
            raise LeaseLostError(f"{self.role}: the lease is no longer {self.owner}'s")

    def release(self) -> None:
        """On a clean stop: a follower takes over at once, not after the lease runs out."""
        with self.engine.begin() as conn:
            conn.execute(
                update(LeaseRow)
                .where(LeaseRow.role == self.role, LeaseRow.owner == self.owner)
                .values(owner=None, expires_at=0.0)
            )
        self.leading = False

"""What the API keeps per process: the engine, a short-lived catalog snapshot, the producer."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from api.auth import Authenticator
from api.metrics import ApiMetrics
from config.catalog import Catalog, Experiment
from config.settings import Settings
from pipelines.events import CatalogIndex, EventBounds
from sinks.outage import Outage
from sinks.sql.models import CatalogStateRow, FlagRow
from sinks.sql.store import as_utc, read_catalog
from stats.assignment import bucket_ranges, fnv1a32

log = logging.getLogger(__name__)
CATALOG_SECONDS = 1.0  # a rollback by the analyzer (another process) reaches assignments this fast


class BrokerUnavailableError(RuntimeError):
    pass


class DatabaseUnavailableError(RuntimeError):
    """The database is away and nothing read earlier can answer: the API answers 503."""


@dataclass(frozen=True)
class AssignmentPlan:
    """What assigning a user to one experiment needs, computed once per snapshot."""

    experiment: Experiment
    weights: tuple[float, ...]
    ranges: tuple[tuple[float, float], ...]
    held: str | None  # why everyone gets control (not running, flag rolled back/disabled)
    seed_state: int  # FNV-1a of the hashing seed, where a version-2 hash of seed + user resumes


@dataclass(frozen=True)
class CatalogSnapshot:
    catalog: Catalog
    index: CatalogIndex
    running: tuple[Experiment, ...]  # running or paused (a paused one serves control)
    taken_at: float
    plans: dict[str, AssignmentPlan]
    flag_held: dict[str, Literal["disabled", "rolled_back"]]  # flags serving their default
    version: int  # the catalog's version: every change bumps it
    updated_at: datetime

    @classmethod
    def read(cls, engine: Engine, bounds: EventBounds) -> CatalogSnapshot:
        with Session(engine) as session:
            state = session.get_one(CatalogStateRow, 1)
            version, updated_at = state.version, as_utc(state.updated_at)
            catalog = read_catalog(session)
            flags = session.execute(
                select(FlagRow.key, FlagRow.enabled, FlagRow.rolled_back_at)
            ).all()
        flag_held: dict[str, Literal["disabled", "rolled_back"]] = {
            key: "rolled_back" if back is not None else "disabled"
            for key, on, back in flags
            if not on or back is not None
        }
        serving_control = {  # flag → why its experiments serve control to everyone
            key: f"flag_{'rolled_back' if held == 'rolled_back' else 'disabled'}"
            for key, held in flag_held.items()
        }
        plans = {}
        for e in catalog.experiments:
            weights = tuple(v.weight for v in e.variants)
            held = (
                None
                if e.status == "running"
                else "paused"
                if e.status == "paused"
                else ("not_running")
            )
            if held is None and e.flag is not None:
                held = serving_control.get(e.flag)
            ranges = tuple(bucket_ranges(len(weights), e.coverage, weights))
            plans[e.key] = AssignmentPlan(e, weights, ranges, held, fnv1a32(e.hashing_seed))
        return cls(
            catalog=catalog,
            plans=plans,
            index=CatalogIndex.of(catalog, bounds),
            running=tuple(e for e in catalog.experiments if e.status in ("running", "paused")),
            taken_at=time.monotonic(),
            flag_held=flag_held,
            version=version,
            updated_at=updated_at,
        )


@dataclass
class ApiState:
    settings: Settings
    engine: Engine
    bootstrap: str
    metrics: ApiMetrics = field(default_factory=ApiMetrics)
    auth: Authenticator = field(init=False)
    # The SDK payload's bytes per encryption key, for one snapshot (api.routers.sdk).
    payloads: tuple[CatalogSnapshot | None, dict[str | None, bytes]] = field(
        default_factory=lambda: (None, {})
    )
    _snapshot: CatalogSnapshot | None = None
    _reading: asyncio.Future[CatalogSnapshot] | None = None
    _reading_generation: int = 0
    _generation: int = 0  # bumped by every catalog change this process makes
    _read_generation: int = -1  # the generation the snapshot was read at
    _producer: AIOKafkaProducer | None = None
    _producer_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    outage: Outage = field(default_factory=lambda: Outage("catalog read", 1.0, cap=5.0))
    # (experiment, points) → (what it was computed from, the effect over time): report_service
    lift_cache: dict[tuple[str, int | None], tuple[Any, list[dict[str, Any]]]] = field(
        default_factory=dict
    )

    def __post_init__(self) -> None:
        self.auth = Authenticator(self.engine)

    def _changed_since_read(self) -> bool:
        return self._snapshot is None or self._read_generation != self._generation

    def catalog(self) -> CatalogSnapshot:
        """The snapshot, read again when stale: for routes that run in a thread. While the
        database is away the last snapshot stays in force."""
        snapshot = self._snapshot
        if (
            snapshot is None
            or self._changed_since_read()
            or time.monotonic() - snapshot.taken_at > CATALOG_SECONDS
        ):
            snapshot = self._read(self._generation) or snapshot
        if snapshot is None:
            raise DatabaseUnavailableError("no catalog read yet, and the database is away")
        return snapshot

    async def current_catalog(self) -> CatalogSnapshot:
        """The snapshot for async routes. A stale one is still served while a single read, in
        a thread, replaces it: requests neither wait for the database nor all read it at once.
        After a change made here the next request waits for the read (it must see the change);
        while the database is away the last snapshot stays in force."""
        snapshot = self._snapshot
        stale = snapshot is None or time.monotonic() - snapshot.taken_at > CATALOG_SECONDS
        reading = self._reading
        if (stale or self._changed_since_read()) and (
            reading is None or self._reading_generation != self._generation
        ):
            reading = self._reading = asyncio.ensure_future(self._refresh(self._generation))
            self._reading_generation = self._generation
        if snapshot is None or self._changed_since_read():
            assert reading is not None
            snapshot = await asyncio.shield(reading)
        return snapshot

    async def _refresh(self, generation: int) -> CatalogSnapshot:
        try:
            snapshot = await asyncio.to_thread(self._read, generation)
        finally:
            if self._reading_generation == generation:
                self._reading = None
        if snapshot is None:
            if self._snapshot is None:
                raise DatabaseUnavailableError("no catalog read yet, and the database is away")
            return self._snapshot
        return snapshot

    def _read(self, generation: int) -> CatalogSnapshot | None:
        """A new snapshot, or None while the database is away (one warning per outage)."""
        if self._snapshot is not None and not self.outage.due():
            return None
        try:
            snapshot = CatalogSnapshot.read(self.engine, EventBounds.of(self.settings))
        except Exception as error:
            self.outage.failed(error)
            return None
        self.outage.recovered()
        self._snapshot, self._read_generation = snapshot, generation
        return snapshot

    def catalog_changed(self) -> None:
        self._generation += 1

    async def producer(self) -> AIOKafkaProducer:
        """The producer, started on first use; BrokerUnavailableError when it cannot connect."""
        async with self._producer_lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap,
                    acks="all",
                    linger_ms=2,
                    max_request_size=4 * 1024 * 1024,
                    request_timeout_ms=5000,
                )
                try:
                    await asyncio.wait_for(producer.start(), 5)
                except (KafkaError, OSError, TimeoutError) as exc:
                    await producer.stop()
                    raise BrokerUnavailableError(str(exc) or type(exc).__name__) from exc
                self._producer = producer
            return self._producer

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

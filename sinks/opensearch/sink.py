"""Drains the SQL search outbox into OpenSearch with bulk requests. The pipeline only ever writes
the outbox, so it never waits for OpenSearch; when OpenSearch is away, rows wait and are sent in
order when it returns. Documents that OpenSearch refuses are kept in the outbox with the error."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opensearchpy import OpenSearch, helpers
from opensearchpy.exceptions import ConnectionError as OpenSearchConnectionError
from opensearchpy.exceptions import TransportError
from sqlalchemy import Engine, delete, func, select, update

from config.settings import Settings
from sinks.opensearch.documents import BUILDERS
from sinks.opensearch.templates import templates
from sinks.sql.leases import Lease
from sinks.sql.models import SearchOutboxRow

log = logging.getLogger(__name__)
BATCH_ROWS = 2000
KEYS_PER_QUERY = 200


class OpenSearchUnavailableError(RuntimeError):
    pass


@dataclass
class DrainStats:
    sent: int = 0
    failed: int = 0


def make_client(settings: Settings) -> OpenSearch:
    auth = (settings.opensearch_username, settings.opensearch_password)
    return OpenSearch(
        [settings.opensearch_url],
        http_auth=auth if settings.opensearch_username else None,
        verify_certs=settings.opensearch_verify_certs,
        ca_certs=settings.opensearch_ca_certs or None,
        timeout=10,
        max_retries=0,  # outages are the outbox's business, not the client's
    )


def backlog(engine: Engine) -> int:
    """Documents waiting for OpenSearch (refused ones not counted)."""
    query = (
        select(func.count()).select_from(SearchOutboxRow).where(SearchOutboxRow.failed_at.is_(None))
    )
    with engine.connect() as conn:
        return int(conn.execute(query).scalar() or 0)


class OpenSearchSink:
    def __init__(self, engine: Engine, client: OpenSearch, prefix: str) -> None:
        self.engine, self.client, self.prefix = engine, client, prefix
        self._templates_ready = False

    def ensure_templates(self) -> None:
        for name, body in templates(self.prefix).items():
            self.client.indices.put_index_template(name=name, body=body)
        self._templates_ready = True

    def drain_once(self) -> DrainStats:
        """Send the oldest queued rows (one batch); raises OpenSearchUnavailableError when
        OpenSearch cannot be reached, leaving every row in place."""
        stats = DrainStats()
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(SearchOutboxRow.id, SearchOutboxRow.kind, SearchOutboxRow.key)
                .where(SearchOutboxRow.failed_at.is_(None))
                .order_by(SearchOutboxRow.id)
                .limit(BATCH_ROWS)
            ).all()
        if not rows:
            return stats
        try:
            if not self._templates_ready:
                self.ensure_templates()
            ids_by_doc: dict[tuple[str, str], list[int]] = defaultdict(list)
            for row_id, kind, key in rows:
                ids_by_doc[(kind, key)].append(row_id)
            actions = self._actions(ids_by_doc)
            outcome = self._bulk(actions)
        except (OpenSearchConnectionError, ConnectionError) as exc:
            raise OpenSearchUnavailableError(str(exc)) from exc
        except TransportError as exc:
            if isinstance(exc.status_code, int) and (
                exc.status_code >= 500 or exc.status_code == 429
            ):
                raise OpenSearchUnavailableError(str(exc)) from exc
            raise
        done: list[int] = []
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            for (kind, key), row_ids in ids_by_doc.items():
                error = outcome.get((kind, key))
                if error is None:
                    done.extend(row_ids)
                    stats.sent += 1
                    continue
                stats.failed += 1
                log.error("OpenSearch refused %s %r: %s", kind, key, error)
                conn.execute(
                    update(SearchOutboxRow)
                    .where(SearchOutboxRow.id.in_(row_ids))
                    .values(failed_at=now, error=error[:2000])
                )
            for start in range(0, len(done), 500):
                conn.execute(
                    delete(SearchOutboxRow).where(SearchOutboxRow.id.in_(done[start : start + 500]))
                )
        return stats

    def drain(self) -> DrainStats:
        """Until the outbox is empty (or only refused documents remain)."""
        total = DrainStats()
        while True:
            stats = self.drain_once()
            total.sent += stats.sent
            total.failed += stats.failed
            if stats.sent + stats.failed == 0:
                return total

    async def run(
        self, stop: asyncio.Event, poll_seconds: float = 1.0, lease: Lease | None = None
    ) -> None:
        """Drain whenever rows wait; while OpenSearch is away, back off (full jitter, 30 s cap)
        and keep everything queued. With ``lease``, only while this replica leads."""
        attempt = 0
        while not stop.is_set():
            if lease is not None and not await asyncio.to_thread(lease.acquire):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), poll_seconds)
                continue
            try:
                stats = await asyncio.to_thread(self.drain_once)
            except OpenSearchUnavailableError as exc:
                attempt += 1
                pause = random.uniform(0, min(30.0, 0.5 * 2**attempt))
                log.warning(
                    "OpenSearch unavailable (%s); %d queued, retry in %.1fs",
                    exc,
                    await asyncio.to_thread(backlog, self.engine),
                    pause,
                )
            else:
                attempt = 0
                if stats.sent + stats.failed:
                    continue
                pause = poll_seconds
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)

    def _actions(
        self, ids_by_doc: dict[tuple[str, str], list[int]]
    ) -> list[tuple[tuple[str, str], dict[str, Any]]]:
        """(outbox kind and key, bulk action); a key whose source row is gone builds nothing."""
        by_kind: dict[str, list[str]] = defaultdict(list)
        for kind, key in ids_by_doc:
            by_kind[kind].append(key)
        actions = []
        for kind, keys in by_kind.items():
            for start in range(0, len(keys), KEYS_PER_QUERY):
                chunk = keys[start : start + KEYS_PER_QUERY]
                for key, action in BUILDERS[kind](self.engine, self.prefix, chunk):
                    actions.append(((kind, key), action))
        return actions

    def _bulk(
        self, keyed: list[tuple[tuple[str, str], dict[str, Any]]]
    ) -> dict[tuple[str, str], str]:
        """Bulk with retries and backoff on 429 (opensearch-py's streaming_bulk); returns the
        error of each refused document."""
        refs = [ref for ref, _ in keyed]
        actions = [action for _, action in keyed]
        errors: dict[tuple[str, str], str] = {}
        results = helpers.streaming_bulk(
            self.client,
            actions,
            chunk_size=500,
            max_retries=5,
            initial_backoff=1,
            max_backoff=10,
            raise_on_error=False,
            raise_on_exception=True,
        )
        for ref, (ok, item) in zip(refs, results, strict=True):
            if not ok:
                detail = item.get("index", item)
                error = detail.get("error", {})
                kind = error.get("type", "error") if isinstance(error, dict) else "error"
                reason = error.get("reason", "") if isinstance(error, dict) else str(error)
                errors[ref] = f"{kind}: {reason}"
        return errors

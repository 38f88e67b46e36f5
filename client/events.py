"""Batched, retried, bounded event delivery to ``POST /v1/events``.

Events wait in a bounded queue; a background thread sends them in batches (at most 500, or
whatever has waited a second). A batch that meets a 503 (the broker is away), a 429 or a
network error is sent again, with the same event ids, after a backoff that doubles up to 30 s:
the pipeline applies a repeated event id once, so a retry never counts twice. A batch refused
with another 4xx is dropped and counted. When the queue is full, new events are dropped,
counted and logged, never silently."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)
BATCH_EVENTS = 500
BATCH_SECONDS = 1.0
MAX_QUEUE = 100_000
RETRY_STATUSES = frozenset({429, 502, 503, 504})


class EventsClient:
    def __init__(
        self,
        api_url: str,
        key: str,
        *,
        batch_events: int = BATCH_EVENTS,
        batch_seconds: float = BATCH_SECONDS,
        max_queue: int = MAX_QUEUE,
        timeout: float = 10.0,
        max_backoff: float = 30.0,
    ) -> None:
        self.url = api_url.rstrip("/") + "/v1/events"
        self.key = key
        self.batch_events, self.batch_seconds = batch_events, batch_seconds
        self.max_queue, self.timeout, self.max_backoff = max_queue, timeout, max_backoff
        self.accepted = 0  # events the API acknowledged
        self.rejected = 0  # events the API refused (a reason each, or the whole batch)
        self.dropped = 0  # events the full queue could not take
        self.retries = 0  # batches sent again
        self._queue: deque[dict[str, Any]] = deque()
        self._pending = 0  # events taken from the queue, not yet acknowledged
        self._lock = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="xpstream-events", daemon=True)
        self._thread.start()

    # --- what apps call ------------------------------------------------------------------

    def exposure(
        self,
        user_id: str,
        experiment: str,
        variant: str,
        ts: float | None = None,
        event_id: str | None = None,
    ) -> None:
        self._add(
            {
                "type": "exposure",
                "event_id": event_id or str(uuid.uuid4()),
                "ts": time.time() if ts is None else ts,
                "user_id": user_id,
                "experiment": experiment,
                "variant": variant,
            }
        )

    def metric(
        self,
        user_id: str,
        metric: str,
        value: float | None = None,
        ts: float | None = None,
        event_id: str | None = None,
    ) -> None:
        event: dict[str, Any] = {
            "type": "metric",
            "event_id": event_id or str(uuid.uuid4()),
            "ts": time.time() if ts is None else ts,
            "user_id": user_id,
            "metric": metric,
        }
        if value is not None:
            event["value"] = value
        self._add(event)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued event is acknowledged (or refused); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._lock.notify_all()
            while self._queue or self._pending:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._lock.wait(0.05 if remaining is None else min(remaining, 0.05))
        return True

    def close(self, timeout: float | None = 30.0) -> bool:
        """Flush, then stop the sending thread; False when events were left unsent."""
        done = self.flush(timeout)
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self._thread.join(timeout)
        if not done:
            log.warning("xpstream events client closed with %d events unsent", self.waiting)
        return done

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._queue) + self._pending

    # --- the sending thread ----------------------------------------------------------------

    def _add(self, event: dict[str, Any]) -> None:
        with self._lock:
            if len(self._queue) >= self.max_queue:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 10_000 == 0:
                    log.warning("xpstream events queue full: %d events dropped", self.dropped)
                return
            self._queue.append(event)
            if len(self._queue) >= self.batch_events:
                self._lock.notify_all()

    def _take(self) -> list[dict[str, Any]] | None:
        """The next batch: full, or what has waited ``batch_seconds``; None once closed."""
        with self._lock:
            started = time.monotonic()
            while len(self._queue) < self.batch_events and not self._closed:
                left = self.batch_seconds - (time.monotonic() - started)
                if left <= 0 and self._queue:
                    break
                self._lock.wait(max(left, 0.05))
            if not self._queue:
                return None if self._closed else []
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), self.batch_events))]
            self._pending = len(batch)
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            if batch:
                settled = self._deliver(batch)
                with self._lock:
                    if settled:
                        self._pending = 0
                    self._lock.notify_all()

    def _deliver(self, batch: list[dict[str, Any]]) -> bool:
        """Send until acknowledged or refused for good (True), the same event ids every time;
        False when the client closed first."""
        body = json.dumps({"events": batch}).encode()
        backoff = 0.5
        while True:
            status, answer = self._post(body)
            if status == 202:
                self.accepted += int(answer.get("accepted", 0))
                self.rejected += int(answer.get("rejected", 0))
                return True
            if status is not None and status not in RETRY_STATUSES:
                log.warning("xpstream refused %d events (HTTP %d): %s", len(batch), status, answer)
                self.rejected += len(batch)
                return True
            if self._closed:
                return False  # closed while the API is away: these stay unsent (logged)
            self.retries += 1
            if self.retries == 1 or self.retries % 100 == 0:
                log.warning("xpstream events: HTTP %s; retrying (retry %d)", status, self.retries)
            time.sleep(backoff * random.uniform(0.5, 1.0))  # jitter: clients do not retry in step
            backoff = min(backoff * 2, self.max_backoff)

    def _post(self, body: bytes) -> tuple[int | None, dict[str, Any]]:
        request = urllib.request.Request(
            self.url,
            data=body,
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            try:
                detail = json.loads(error.read() or b"{}")
            except ValueError:
                detail = {}
            return error.code, detail
        except (urllib.error.URLError, OSError, TimeoutError):
            return None, {}


def growthbook_tracking(client: EventsClient) -> Callable[..., None]:
    """The ``on_experiment_viewed`` callback of GrowthBook's Python SDK: each exposure it
    reports is sent as an xpstream exposure (experiment key, variant key, hashed user id)."""

    def on_experiment_viewed(experiment: Any, result: Any, user_context: Any = None) -> None:
        client.exposure(
            user_id=str(result.hashValue), experiment=experiment.key, variant=str(result.key)
        )

    return on_experiment_viewed

"""One watch of the catalog's version per API process: when any process changes the catalog (an
edit, a rollback by the analyzer, a schedule step), the snapshot is read again and every
streaming subscriber is woken. Subscribers only wait on a condition, so a slow or dead one
never holds up the others."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from api.state import ApiState
from sinks.sql.store import catalog_version

log = logging.getLogger(__name__)
POLL_SECONDS = 0.5  # a change in another process reaches subscribers within about this
MAX_SUBSCRIBERS = 10_000


class CatalogWatch:
    def __init__(self, state: ApiState, poll_seconds: float = POLL_SECONDS) -> None:
        self.state, self.poll_seconds = state, poll_seconds
        self.changed = asyncio.Condition()
        self.subscribers = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._poll())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def wait(self, timeout: float) -> bool:
        """True when the catalog changed within ``timeout`` seconds."""
        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait(), timeout)
            except TimeoutError:
                return False
        return True

    async def _poll(self) -> None:
        seen: int | None = None
        failing = False
        while True:
            try:
                version = await asyncio.to_thread(catalog_version, self.state.engine)
            except Exception as error:  # the database is away: keep serving the last payload
                if not failing:
                    log.warning("catalog watch: %s; retrying", type(error).__name__)
                failing = True
            else:
                failing = False
                if seen is not None and version != seen:
                    self.state.catalog_changed()
                    async with self.changed:
                        self.changed.notify_all()
                seen = version
            await asyncio.sleep(self.poll_seconds)

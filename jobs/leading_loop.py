"""The loop of an acting singleton (analyzer, scheduler): a pass every interval while this
replica holds the role's lease, quiet through database outages, the lease released on stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sinks.outage import Outage
from sinks.sql.leases import Lease, LeaseLostError
from sinks.sql.store import unavailable

log = logging.getLogger(__name__)
T = TypeVar("T")


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> None:
    if seconds > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)


async def every(
    what: str,
    interval: float,
    stop: asyncio.Event,
    step: Callable[[], T],
    done: Callable[[T], None],
    lease: Lease | None,
) -> None:
    """``step`` (in a thread) every ``interval`` seconds until ``stop``, then ``done`` with its
    result. A failed step is retried at the next interval: one warning while the database is
    away, a traceback for anything else. With ``lease``, only the replica holding it steps;
    the others try to take it over every half interval."""
    outage = Outage(what, 0.0)
    while not stop.is_set():
        started = time.monotonic()
        try:
            if lease is not None and not await asyncio.to_thread(lease.acquire):
                await wait_or_stop(stop, interval / 2)
                continue
            result = await asyncio.to_thread(step)
        except LeaseLostError:
            continue  # another replica leads now; this one follows
        except Exception as error:
            if unavailable(error):
                outage.failed(error)
            else:
                log.exception("%s failed; retrying in %.1fs", what, interval)
        else:
            outage.recovered()
            done(result)
        await wait_or_stop(stop, interval - (time.monotonic() - started))
    if lease is not None and lease.leading:
        await asyncio.to_thread(lease.release)

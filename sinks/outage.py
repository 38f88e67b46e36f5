"""Backoff for a step whose dependency is away, logged once when the outage starts and once
when it ends (the rest at DEBUG): workers, the API and the loops share it."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class Outage:
    """Backoff for a step whose dependency is away: tries wait ``base`` seconds, doubling up to
    ``cap``; one warning when the outage starts and one when it ends, the rest at DEBUG."""

    what: str
    base: float
    cap: float = 30.0
    failures: int = 0
    retry_at: float = 0.0

    def due(self) -> bool:
        return time.monotonic() >= self.retry_at

    def failed(self, error: BaseException) -> None:
        delay = min(self.cap, self.base * 2**self.failures)
        level = logging.WARNING if self.failures == 0 else logging.DEBUG
        log.log(
            level,
            "%s failed (%s: %s); retrying in %.1fs",
            self.what,
            type(error).__name__,
            " ".join(str(error).split())[:200],  # one line, however the driver words it
            delay,
        )
        self.failures += 1
        self.retry_at = time.monotonic() + delay

    def recovered(self) -> None:
        if self.failures:
            log.warning("%s works again after %d failed tries", self.what, self.failures)
        self.failures, self.retry_at = 0, 0.0

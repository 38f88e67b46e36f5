"""Client libraries (Kafka, Faust, OpenSearch, AWS) log every failed reconnection, many a second
while a broker is away. The first line of each kind is kept, the repeats within a minute are
counted and left out, and the next one after that says how many were."""

from __future__ import annotations

import logging
import time

LIBRARIES = ("aiokafka", "kafka", "faust", "mode", "opensearch", "urllib3", "botocore")
WINDOW_SECONDS = 60.0


class RepeatedLines(logging.Filter):
    """Per (logger, message template): one line a window; the repeats are counted."""

    def __init__(self, window: float = WINDOW_SECONDS) -> None:
        super().__init__()
        self.window = window
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(LIBRARIES) or record.levelno >= logging.CRITICAL:
            return True
        key = (record.name, str(record.msg))
        now = time.monotonic()
        first, repeats = self._seen.get(key, (-self.window, 0))
        if now - first < self.window:
            self._seen[key] = (first, repeats + 1)
            return False
        self._seen[key] = (now, 0)
        if repeats:
            record.msg = f"{record.msg} (and {repeats} more like it in the last minute)"
        return True


def configure_logging(level: str) -> None:
    """The processes' logging: a line per record at ``level``, libraries' repeats left out."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(RepeatedLines())

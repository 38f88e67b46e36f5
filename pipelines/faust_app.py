"""The Faust application: broker settings that suit both Apache Kafka and the embedded Tansu."""

from __future__ import annotations

import faust

EVENTS_TOPIC = "xpstream.events"
DEAD_LETTER_TOPIC = "xpstream.dead-letter"


def make_app(
    app_id: str, broker_url: str, partitions: int, *, exactly_once: bool = False
) -> faust.App:
    """A Faust app bound to loopback-safe settings; ``broker_url`` is ``host:port[,host:port]``."""
    return faust.App(
        app_id,
        broker=[f"kafka://{server}" for server in broker_url.split(",")],
        topic_partitions=partitions,
        store="memory://",
        web_enabled=False,
        web_bind="127.0.0.1",
        # Joins take ~session_timeout/2: short timeouts make workers ready in seconds.
        broker_session_timeout=2.0,
        broker_heartbeat_interval=0.5,
        broker_rebalance_timeout=4.0,
        # Tansu reports wrong end offsets unless every record is its own batch (NOTES.md).
        producer_max_batch_size=1,
        processing_guarantee="exactly_once" if exactly_once else "at_least_once",
    )

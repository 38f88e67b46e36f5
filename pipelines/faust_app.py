"""The Faust application: broker settings that suit both Apache Kafka and the embedded Tansu."""

from __future__ import annotations

import tempfile
from pathlib import Path

import faust


def make_app(
    app_id: str,
    broker_url: str,
    partitions: int,
    *,
    exactly_once: bool = False,
    single_record_batches: bool = False,
) -> faust.App:
    """A Faust app bound to loopback-safe settings; ``broker_url`` is ``host:port[,host:port]``."""
    # Tables written through Faust on Tansu recover only if every record is its own batch
    # (docs/design.md §6); the pipeline writes its changelogs itself (changelog.py), in batches
    # this big.
    batch_size = 1 if single_record_batches else 512 * 1024
    return faust.App(
        app_id,
        broker=[f"kafka://{server}" for server in broker_url.split(",")],
        topic_partitions=partitions,
        store="memory://",
        # Faust makes a data directory even for memory stores: keep it out of the cwd.
        datadir=Path(tempfile.gettempdir()) / "xpstream-faust",
        web_enabled=False,
        web_bind="127.0.0.1",
        # Joins take ~session_timeout/2: short timeouts make workers ready in seconds.
        broker_session_timeout=2.0,
        broker_heartbeat_interval=0.5,
        broker_rebalance_timeout=4.0,
        broker_commit_interval=1.0,
        producer_max_request_size=4 * 1024 * 1024,
        consumer_max_fetch_size=4 * 1024 * 1024,
        processing_guarantee="exactly_once" if exactly_once else "at_least_once",
        producer_max_batch_size=batch_size,
    )

"""The pipeline's topic names, and creating them up front: a consumer that subscribes before its
topic exists is never assigned it (Faust's assignor ignores missing topics until the next
rebalance)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError


@dataclass(frozen=True)
class Topics:
    events: str
    dead_letter: str
    alerts: str

    @classmethod
    def of(cls, namespace: str) -> Topics:
        return cls(
            f"{namespace}.events", f"{namespace}.dead-letter", f"{namespace}.guardrail-alerts"
        )

    def layout(self, partitions: int) -> dict[str, int]:
        """Partitions per topic, for :func:`ensure_topics`."""
        return {self.events: partitions, self.dead_letter: 1, self.alerts: 1}


async def ensure_topics(bootstrap: str, partitions_by_topic: dict[str, int]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, partitions, 1)
            for name, partitions in partitions_by_topic.items()
            if name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker won the race
                await admin.create_topics(missing)
    finally:
        await admin.close()

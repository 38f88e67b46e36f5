"""`xpstream demo`: the walk of an event on embedded defaults."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict

import orjson
from aiokafka import AIOKafkaProducer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from config.settings import Settings
from jobs.simulate import SimulatedExperiment, exposure_events
from pipelines.embedded_broker import broker_url
from pipelines.faust_app import EVENTS_TOPIC, make_app

DEMO_EXPERIMENT = SimulatedExperiment("checkout-lift", ("control", "treatment"), (0.5, 0.5))


async def count_users_per_variant(
    bootstrap: str, partitions: int, users: int, console: Console
) -> dict[str, int]:
    """Produce simulated exposures, consume them with a Faust agent, count distinct users."""
    app = make_app(f"xpstream-demo-{uuid.uuid4().hex[:8]}", bootstrap, partitions)
    topic = app.topic(EVENTS_TOPIC, value_serializer="raw", partitions=partitions)
    users_by_variant: dict[str, set[str]] = defaultdict(set)
    events = list(exposure_events(DEMO_EXPERIMENT, users))
    consumed = 0
    all_consumed = asyncio.Event()

    @app.agent(topic)
    async def count_exposures(stream):  # type: ignore[no-untyped-def]
        nonlocal consumed
        async for raw in stream:
            event = orjson.loads(raw)
            users_by_variant[event["variant"]].add(event["user_id"])
            consumed += 1
            if consumed == len(events):
                all_consumed.set()

    await app.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        with Progress(console=console, transient=True) as progress:
            sending = progress.add_task("producing exposures", total=len(events))
            for event in events:
                await producer.send(
                    EVENTS_TOPIC, orjson.dumps(event), key=event["user_id"].encode()
                )
                progress.advance(sending)
            await producer.flush()
            consuming = progress.add_task("consuming with Faust", total=len(events))
            while not all_consumed.is_set():
                progress.update(consuming, completed=consumed)
                await asyncio.sleep(0.1)
    finally:
        await producer.stop()
        await app.stop()
    return {variant: len(ids) for variant, ids in sorted(users_by_variant.items())}


def run_demo(settings: Settings, users: int, console: Console) -> dict[str, int]:
    with broker_url(settings.kafka_url) as bootstrap:
        console.print(f"broker: {bootstrap}{'' if settings.kafka_url else ' (embedded Tansu)'}")
        counts = asyncio.run(
            count_users_per_variant(bootstrap, settings.partitions, users, console)
        )
    table = Table(title=f"{DEMO_EXPERIMENT.key}: users per variant")
    table.add_column("variant")
    table.add_column("users", justify="right")
    for variant, count in counts.items():
        table.add_row(variant, str(count))
    table.add_row("total", str(sum(counts.values())), style="bold")
    console.print(table)
    console.print(f"users simulated: {users}")
    return counts

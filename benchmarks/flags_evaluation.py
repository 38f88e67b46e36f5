"""Flag evaluation, measured side by side in one run on this machine:

1. ``POST /v1/flags/evaluate`` for 50 flags with conditions (varied users), beside a bare FastAPI
   POST endpoint returning a constant: requests/s and latency, uvicorn with one worker each;
2. the SDK payload ``GET /api/features/{key}``: a full answer beside a 304 (``If-None-Match``);
3. per flag and user, in-process: the server's ``evaluate`` (the growthbook package's condition
   evaluator) beside the growthbook SDK's own ``eval_feature`` on the same payload.

Run: PYTHONPATH=. .venv/bin/python benchmarks/flags_evaluation.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.embedded_broker import HOST, free_port, wait_for_port

FLAGS = 50


# ruff: noqa: E501  (a rule a line reads best)
def catalog() -> dict[str, Any]:
    """50 flags of every type, each with 3 conditional rules and a rollout."""
    flags = []
    for i in range(FLAGS):
        kind = ("boolean", "string", "number", "json")[i % 4]
        value: Any = {"boolean": True, "string": "on", "number": 2, "json": {"on": True}}[kind]
        flags.append(
            {
                "key": f"flag-{i}",
                "type": kind,
                "rules": [
                    {"id": "staff", "condition": {"email": {"$regex": "@example\\.com$"}}, "value": value},
                    {"id": "eu", "condition": {"country": {"$in": ["DE", "FR", "IT"]}, "app": {"$vgte": "2.0.0"}}, "value": value, "rollout": 0.3},
                    {"id": "tier", "condition": {"$or": [{"plan": "vip"}, {"tier": {"$gte": 3}}]}, "value": value},
                ],
            }
        )  # fmt: skip
    return {"flags": flags}


def attributes(rng: random.Random, number: int) -> dict[str, Any]:
    return {
        "email": rng.choice(["a@example.com", "b@example.org"]),
        "country": rng.choice(["DE", "US", "FR", "BR"]),
        "app": rng.choice(["1.9.0", "2.1.3", "3.0.0"]),
        "plan": rng.choice(["free", "vip"]),
        "tier": rng.randrange(5),
    }


def prepare(workdir: Path) -> tuple[str, dict[str, str]]:
    from config.catalog import parse_catalog
    from sinks.sql.keys import create_api_key
    from sinks.sql.migrate import upgrade_to_head
    from sinks.sql.store import make_engine, save_catalog

    database = f"sqlite:///{workdir}/flags.db"
    upgrade_to_head(database)
    engine = make_engine(database)
    save_catalog(engine, parse_catalog(catalog()))
    keys = {role: create_api_key(engine, role, "benchmark") for role in ("sdk", "client")}
    engine.dispose()
    return database, keys


def serve(kind: str, database: str, port: int) -> None:
    import uvicorn
    from fastapi import FastAPI

    if kind == "bare":
        bare = FastAPI()

        @bare.post("/constant")
        async def constant(body: dict[str, Any]) -> dict[str, str]:
            return {"status": "ok"}

        uvicorn.run(bare, host=HOST, port=port, log_level="warning")
        return
    from api.app import create_app
    from api.server import serve as serve_api
    from config.settings import Settings
    from sinks.sql.store import make_engine

    settings = Settings(database_url=database)
    serve_api(
        create_app(settings, make_engine(database), f"{HOST}:{free_port()}"), HOST, port, settings
    )


async def load(
    port: int, requests: list[bytes], seconds: float, concurrency: int, status: bytes
) -> tuple[float, np.ndarray]:
    """Keep-alive connections each sending its next request when the last is answered."""
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def connection(number: int) -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        i = number
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            writer.write(requests[i % len(requests)])
            head = await reader.readuntil(b"\r\n\r\n")
            lowered = head.lower()
            length = (
                int(lowered.split(b"content-length:")[1].split(b"\r\n")[0])
                if b"content-length:" in lowered
                else 0
            )
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            assert head.startswith(b"HTTP/1.1 " + status), head[:200]
            i += concurrency
        writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(connection(n) for n in range(concurrency)))
    return len(latencies) / (time.perf_counter() - began), np.array(latencies)


def post(path: str, body: dict[str, Any], headers: dict[str, str]) -> bytes:
    data = json.dumps(body).encode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n{extra}\r\n"
    ).encode() + data


def get(path: str, headers: dict[str, str]) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n{extra}\r\n".encode()


def report(label: str, rate: float, latencies: np.ndarray) -> None:
    p50, p99 = np.percentile(latencies, [50, 99]) * 1000
    print(f"{label:<44} {rate:8.0f} req/s   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms")


def in_process(database: str, client_key: str, url: str, users: int) -> None:
    """µs per flag and user: the server's evaluate beside the SDK's eval_feature."""
    import httpx
    from growthbook import GrowthBook

    from api.flag_evaluation import evaluate
    from api.state import CatalogSnapshot
    from pipelines.events import EventBounds
    from sinks.sql.store import make_engine

    engine = make_engine(database)
    snapshot = CatalogSnapshot.read(engine, EventBounds())
    rng = random.Random(1)
    people = [attributes(rng, n) for n in range(users)]
    started = time.perf_counter()
    for number, person in enumerate(people):
        for flag in snapshot.catalog.flags:
            evaluate(snapshot, flag, f"user-{number}", person)
    server = (time.perf_counter() - started) / (users * FLAGS) * 1e6
    payload = httpx.get(f"{url}/api/features/{client_key}").json()
    growthbook = GrowthBook(features=payload["features"])
    started = time.perf_counter()
    for number, person in enumerate(people):
        growthbook.set_attributes({**person, "id": f"user-{number}"})
        for i in range(FLAGS):
            growthbook.eval_feature(f"flag-{i}")
    sdk = (time.perf_counter() - started) / (users * FLAGS) * 1e6
    print(f"server evaluate, per flag and user:          {server:8.1f} µs")
    print(f"growthbook SDK eval_feature, per flag:       {sdk:8.1f} µs")
    print(f"server / SDK per evaluation: {server / sdk:.2f}")
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--serve", choices=["real", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.database, args.port)
        return
    database, keys = prepare(Path(tempfile.mkdtemp(prefix="xpstream-flags-bench-")))
    rng = random.Random(7)
    sdk = {"Authorization": f"Bearer {keys['sdk']}"}
    evaluations = [
        post("/v1/flags/evaluate", {"user_id": f"user-{n}", "attributes": attributes(rng, n)}, sdk)
        for n in range(1000)
    ]
    constants = [post("/constant", {"user_id": f"user-{n}"}, {}) for n in range(1000)]
    servers = {kind: free_port() for kind in ("bare", "real")}
    processes = [
        subprocess.Popen(
            [sys.executable, __file__, "--serve", kind, "--database", database, "--port", str(port)]
        )
        for kind, port in servers.items()
    ]
    try:
        for process, port in zip(processes, servers.values(), strict=True):
            wait_for_port(port, 30, process)
        features = f"/api/features/{keys['client']}"
        first = asyncio.run(load(servers["real"], [get(features, {})], 0.5, 1, b"200"))
        assert first[0] > 0
        import httpx

        etag = httpx.get(f"http://{HOST}:{servers['real']}{features}").headers["ETag"]
        runs = [
            ("bare POST endpoint (constant)", servers["bare"], constants, b"200"),
            (f"POST /v1/flags/evaluate ({FLAGS} flags)", servers["real"], evaluations, b"200"),
            ("GET /api/features (full payload)", servers["real"], [get(features, {})], b"200"),
            (
                "GET /api/features (If-None-Match: 304)",
                servers["real"],
                [get(features, {"If-None-Match": etag})],
                b"304",
            ),
        ]
        results = {}
        for label, port, requests, status in runs:
            asyncio.run(load(port, requests, args.seconds / 5, args.concurrency, status))  # warm
            results[label] = asyncio.run(
                load(port, requests, args.seconds, args.concurrency, status)
            )
            report(label, *results[label])
        labels = list(results)
        print(f"evaluate / bare: {results[labels[1]][0] / results[labels[0]][0]:.0%}")
        print(f"304 / full payload: {results[labels[3]][0] / results[labels[2]][0]:.1f}x")
        in_process(database, keys["client"], f"http://{HOST}:{servers['real']}", 400)
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)


if __name__ == "__main__":
    main()

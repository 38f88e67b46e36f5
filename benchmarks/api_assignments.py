"""GET /v1/assignments for a user in 10 running experiments, beside a bare FastAPI endpoint that
returns a constant: requests/s and latency percentiles of each, same load, same run.

Run: PYTHONPATH=. .venv/bin/python benchmarks/api_assignments.py [--seconds 10] [--concurrency 16]
Each server is uvicorn with one worker in its own process; the load comes from this process.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pipelines.embedded_broker import HOST, free_port, wait_for_port


def serve(kind: str, database: str, port: int) -> None:
    import uvicorn
    from fastapi import FastAPI

    if kind == "bare":
        bare = FastAPI()

        @bare.get("/constant")
        async def constant() -> dict[str, str]:
            return {"status": "ok"}

        uvicorn.run(bare, host=HOST, port=port, log_level="warning", workers=1)
        return
    from api.app import create_app
    from api.server import serve as serve_api
    from config.settings import Settings
    from sinks.sql.store import make_engine

    settings = Settings(database_url=database)
    app = create_app(settings, make_engine(database), f"{HOST}:{free_port()}")
    serve_api(app, HOST, port, settings)  # as `xpstream api` serves it


def prepare(workdir: Path) -> tuple[str, str]:
    from config.catalog import parse_catalog
    from sinks.sql.keys import create_api_key
    from sinks.sql.migrate import upgrade_to_head
    from sinks.sql.store import make_engine, save_catalog

    database = f"sqlite:///{workdir}/bench.db"
    upgrade_to_head(database)
    engine = make_engine(database)
    experiments = [
        {
            "key": f"exp-{i}",
            "flag": f"flag-{i}",
            "hash_version": 1 + i % 2,
            "coverage": 0.9,
            "control": "control",
            "variants": [
                {"key": "control", "weight": 0.34},
                {"key": "b", "weight": 0.33},
                {"key": "c", "weight": 0.33},
            ],
            "metrics": ["revenue"],
        }
        for i in range(10)
    ]
    catalog = {
        "metrics": [{"key": "revenue", "kind": "sum"}],
        "flags": [{"key": f"flag-{i}"} for i in range(10)],
        "experiments": experiments,
    }
    save_catalog(engine, parse_catalog(catalog))
    token = create_api_key(engine, "sdk", "benchmark")
    engine.dispose()
    return database, token


async def load(
    port: int, path: str, headers: dict[str, str], seconds: float, concurrency: int, users: bool
) -> tuple[float, np.ndarray]:
    """``concurrency`` keep-alive connections, each sending its next request when the last one is
    answered. A minimal HTTP/1.1 client, so the load generator costs less than the server."""
    latencies: list[float] = []
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    stop_at = time.perf_counter() + seconds

    async def connection(number: int) -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        i = number
        while time.perf_counter() < stop_at:
            target = f"{path}?user_id=user-{i}" if users else path
            request = f"GET {target} HTTP/1.1\r\nHost: {HOST}\r\n{extra}\r\n".encode()
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            assert head.startswith(b"HTTP/1.1 200"), head[:200]
            i += concurrency
        writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(connection(n) for n in range(concurrency)))
    return len(latencies) / (time.perf_counter() - began), np.array(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--serve", choices=["real", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.database, args.port)
        return
    workdir = Path(tempfile.mkdtemp(prefix="xpstream-api-bench-"))
    database, token = prepare(workdir)
    results = {}
    for kind, path in (("bare", "/constant"), ("real", "/v1/assignments")):
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", kind, "--database", database, "--port", str(port)]
        )
        try:
            wait_for_port(port, 30, server)
            headers = {"Authorization": f"Bearer {token}"} if kind == "real" else {}
            # Warm up for a fifth of the run, then measure.
            asyncio.run(
                load(port, path, headers, args.seconds / 5, args.concurrency, kind == "real")
            )
            results[kind] = asyncio.run(
                load(port, path, headers, args.seconds, args.concurrency, kind == "real")
            )
        finally:
            server.terminate()
            server.wait(10)
    for kind, (rate, latencies) in results.items():
        p50, p99 = np.percentile(latencies, [50, 99]) * 1000
        label = "bare constant endpoint" if kind == "bare" else "GET /v1/assignments (10 exps)"
        print(f"{label:<32} {rate:8.0f} req/s   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms")
    ratio = results["real"][0] / results["bare"][0]
    print(f"assignments / bare: {ratio:.0%} of the bare endpoint's requests/s")


if __name__ == "__main__":
    main()

"""A hostile or careless client against `xpstream api` as deployed (uvicorn in its own process):
a thousand distinct 1 MB tokens and a 32 MB header neither grow the server's memory nor keep
/health from answering; the embedded broker never outlives a SIGKILLed command."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from pipelines.embedded_broker import HOST, free_port, wait_for_port
from tests.pipeline.conftest import XPSTREAM

MIB = 1024 * 1024


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def exchange(port: int, request: bytes) -> bytes:
    """Send ``request`` (as far as the server lets us) and return what it answers."""
    with socket.create_connection((HOST, port), timeout=30) as conn:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.sendall(request)  # the server may refuse to read the rest
        try:
            return conn.recv(4096)
        except ConnectionResetError:
            return b""


@pytest.fixture()
def api(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {
        **os.environ,
        "XPSTREAM_DATABASE_URL": f"sqlite:///{tmp_path}/api.db",
        "XPSTREAM_KAFKA_URL": f"{HOST}:{free_port()}",  # no broker: not needed here
    }
    server = subprocess.Popen(
        [XPSTREAM, "api", "--port", str(port)], env=env, stderr=subprocess.DEVNULL
    )
    wait_for_port(port, 60, server)
    yield server, port
    server.terminate()
    server.wait(30)


def test_a_thousand_huge_tokens_and_a_huge_header_cost_no_memory(
    api: tuple[subprocess.Popen[bytes], int],
) -> None:
    server, port = api
    health_seconds: list[float] = []
    stop = threading.Event()

    def watch_health() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            answer = exchange(port, f"GET /health HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
            health_seconds.append(time.perf_counter() - started)
            assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
            time.sleep(0.01)

    for _ in range(20):  # warm up: first requests allocate what every later one reuses
        exchange(port, f"GET /v1/experiments HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    before = rss(server.pid)
    watcher = threading.Thread(target=watch_health)
    watcher.start()
    try:
        statuses = set()
        for number in range(1000):
            token = f"{number:08d}".encode() + b"t" * (MIB - 8)
            answer = exchange(
                port,
                b"GET /v1/experiments HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer "
                + token
                + b"\r\n\r\n",
            )
            statuses.add(answer[:12])
        refused = set()  # tokens under the header limit reach authentication: never cached
        for number in range(1000):
            token = f"{number:08d}".encode() + b"t" * (32 * 1024)
            answer = exchange(
                port,
                b"GET /v1/experiments HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer "
                + token
                + b"\r\n\r\n",
            )
            refused.add(answer[:12])
        huge = exchange(port, b"GET /health HTTP/1.1\r\nX-Big: " + b"b" * (32 * MIB) + b"\r\n\r\n")
    finally:
        stop.set()
        watcher.join()
    grown = rss(server.pid) - before
    assert statuses <= {b"HTTP/1.1 431", b""}, statuses
    assert b"HTTP/1.1 429" in refused <= {b"HTTP/1.1 401", b"HTTP/1.1 429"}, refused
    assert huge.startswith(b"HTTP/1.1 431")
    assert grown < 20 * MIB, f"RSS grew {grown / MIB:.1f} MiB"
    assert health_seconds and max(health_seconds) < 1.0, max(health_seconds)
    print(
        f"\nRSS grew {grown / MIB:.2f} MiB; /health answered {len(health_seconds)} times, "
        f"slowest {max(health_seconds) * 1000:.1f} ms"
    )


@pytest.mark.parametrize("command", ["api", "replay"])
def test_the_embedded_broker_dies_with_a_sigkilled_command(tmp_path: Path, command: str) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text('{"type": "nothing"}\n' * 10)
    env = {**os.environ, "XPSTREAM_DATABASE_URL": f"sqlite:///{tmp_path}/xp.db"}
    env.pop("XPSTREAM_KAFKA_URL", None)
    if command == "replay":  # it needs a catalog before it starts the broker
        catalog = tmp_path / "catalog.json"
        catalog.write_text(
            '{"metrics": [{"key": "m", "kind": "sum"}], "experiments": [{"key": "e", '
            '"control": "a", "variants": [{"key": "a", "weight": 0.5}, {"key": "b", '
            '"weight": 0.5}]}]}'
        )
        subprocess.run([XPSTREAM, "catalog", "load", str(catalog)], env=env, check=True)
        args = [XPSTREAM, "replay", str(events), "--timeout", "600"]
    else:
        args = [XPSTREAM, "api", "--port", str(free_port())]
    parent = subprocess.Popen(args, env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    brokers: list[int] = []
    while not brokers:
        assert time.monotonic() < deadline, "no embedded broker started"
        assert parent.poll() is None, "the command exited"
        brokers = [
            pid
            for pid in children(parent.pid)
            if b"tansu" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        time.sleep(0.05)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in brokers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in brokers), "the broker outlived its command"


def test_an_anonymous_body_is_refused_before_it_is_read(
    api: tuple[subprocess.Popen[bytes], int],
) -> None:
    """Headers promise a 1 MB body that never comes: the answer must not wait for it."""
    _, port = api
    with socket.create_connection((HOST, port), timeout=10) as conn:
        conn.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000\r\n\r\n"
        )
        answer = conn.recv(4096)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:80]

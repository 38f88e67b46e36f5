"""kinesalite (an in-memory Kinesis-compatible server, npm) run by node on loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from pipelines.embedded_broker import HOST, free_port, wait_for_port
from tests.services.apache_kafka import CACHE_ROOT

VERSION = "3.3.3"
LAUNCHER = Path(__file__).with_name("kinesalite-launch.js")


def kinesalite_module() -> Path:
    """npm-installed once into the test cache; later runs start offline."""
    root = CACHE_ROOT / f"kinesalite-{VERSION}"
    module = root / "node_modules" / "kinesalite"
    if (root / ".complete").exists():
        return module
    root.mkdir(parents=True, exist_ok=True)
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("kinesalite tests need Node.js with npm on PATH")
    subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--prefix", str(root), f"kinesalite@{VERSION}"],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (root / ".complete").touch()
    return module


class Kinesalite:
    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> Kinesalite:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("kinesalite tests need Node.js on PATH")
        env = {**os.environ, "KINESALITE_MODULE": str(kinesalite_module())}
        self.process = subprocess.Popen(
            [node, str(LAUNCHER), str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, 30, self.process)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

"""A real OpenSearch 2.19 node in a JVM, from Maven Central artifacts: the server jar with its
HTTP module on the classpath, started by a ten-line launcher compiled here (no distribution
tarball, no Docker). Data lives in a directory that survives stop() and start()."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from pipelines.embedded_broker import HOST, free_port
from tests.services.apache_kafka import CACHE_ROOT, maven_copy

VERSION = "2.19.6"
HERE = Path(__file__).parent
POM = HERE / "opensearch-pom.xml"
LAUNCHER = HERE / "opensearch" / "XpstreamTestNode.java"


def opensearch_classpath() -> str:
    """Jars copied once by Maven, the launcher compiled once; later runs start offline."""
    root = CACHE_ROOT / f"opensearch-{VERSION}"
    libs, classes, marker = root / "libs", root / "classes", root / ".complete"
    if not marker.exists():
        maven_copy(POM, libs)
        classes.mkdir(exist_ok=True)
        subprocess.run(
            ["javac", "-cp", f"{libs}/*", "-d", str(classes), str(LAUNCHER)],
            check=True,
            capture_output=True,
            timeout=300,
        )
        marker.touch()
    return f"{classes}:{libs}/*"


class OpenSearchNode:
    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="xpstream-opensearch-"))
        (self.home / "config").mkdir()
        (self.home / "config" / "opensearch.yml").touch()
        self.http_port, self.transport_port = free_port(), free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    def start(self, timeout: float = 120.0) -> OpenSearchNode:
        classpath = opensearch_classpath()
        log = (self.home / "node.log").open("ab")
        self.process = subprocess.Popen(
            [
                "java",
                "-Xms256m",
                "-Xmx512m",
                "-XX:+UseSerialGC",
                "-Djava.awt.headless=true",
                "-cp",
                classpath,
                "XpstreamTestNode",
                str(self.home),
                str(self.http_port),
                str(self.transport_port),
            ],
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"OpenSearch exited; see {self.home / 'node.log'}")
            try:
                with urllib.request.urlopen(f"{self.url}/_cluster/health", timeout=2) as reply:
                    if reply.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"OpenSearch did not answer within {timeout:.0f}s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)

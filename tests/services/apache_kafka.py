"""A single-node Apache Kafka 4.x (KRaft, transactions on) run from its Maven Central artifacts."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from pathlib import Path

from pipelines.embedded_broker import HOST, free_port, wait_for_port

KAFKA_VERSION = "4.1.1"
POM = Path(__file__).with_name("kafka-pom.xml")
CACHE_ROOT = Path(os.environ.get("XPSTREAM_TEST_CACHE", Path.home() / ".cache" / "xpstream-tests"))

SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{host}:{controller_port}
listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}
advertised.listeners=PLAINTEXT://{host}:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={data_dir}
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=500
auto.create.topics.enable=true
"""

LOG4J2 = """\
Configuration:
  Appenders:
    File:
      name: file
      fileName: {log_file}
      PatternLayout: {{Pattern: "%d %p %c{{1}} %m%n"}}
  Loggers:
    Root: {{level: WARN, AppenderRef: [{{ref: file}}]}}
"""


def maven_copy(pom: Path, libs: Path) -> None:
    """A pom's runtime dependencies, copied from Maven Central into ``libs``."""
    libs.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={libs}",
            "-DincludeScope=runtime",
        ],
        check=True,
        capture_output=True,
        timeout=900,
    )


def kafka_libs() -> Path:
    """The broker's jars, copied from Maven Central once into the cache directory."""
    libs = CACHE_ROOT / f"kafka-{KAFKA_VERSION}" / "libs"
    marker = libs / ".complete"
    if not marker.exists():
        maven_copy(POM, libs)
        marker.touch()
    return libs


class ApacheKafka:
    """One KRaft broker+controller on loopback; `start()` formats a fresh log dir each time."""

    def __init__(self) -> None:
        self.port = free_port()
        self.controller_port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="xpstream-kafka-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    def _java(self, *args: str, heap: str = "256m") -> list[str]:
        classpath = str(kafka_libs() / "*")
        return [
            "java",
            f"-Xmx{heap}",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.yaml'}",
            "-cp",
            classpath,
            *args,
        ]

    def start(self, timeout: float = 60.0) -> ApacheKafka:
        data_dir = self.workdir / "data"
        config = self.workdir / "server.properties"
        config.write_text(
            SERVER_PROPERTIES.format(
                host=HOST, port=self.port, controller_port=self.controller_port, data_dir=data_dir
            )
        )
        (self.workdir / "log4j2.yaml").write_text(
            LOG4J2.format(log_file=self.workdir / "broker.log")
        )
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        subprocess.run(
            self._java(
                "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(config)
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        self.resume(timeout)
        return self

    def resume(self, timeout: float = 60.0) -> None:
        """Run the broker on its formatted log dir (again, after :meth:`crash`)."""
        with open(self.workdir / "stdout.log", "ab") as out:
            self._process = subprocess.Popen(
                self._java("kafka.Kafka", str(self.workdir / "server.properties"), heap="512m"),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_for_port(self.port, timeout, self._process)
        except BaseException:
            self.stop()
            raise

    def crash(self) -> None:
        """SIGKILL the broker, keeping its data, as a lost broker host would."""
        process, self._process = self._process, None
        if process is not None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)

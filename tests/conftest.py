"""Session fixtures for real test services, each on 127.0.0.1 and a free port, each torn down."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from pipelines.embedded_broker import HOST, EmbeddedBroker, free_port
from pipelines.events import DAY, EventBounds
from tests.services.apache_kafka import ApacheKafka
from tests.services.kinesalite import Kinesalite
from tests.services.opensearch import OpenSearchNode
from tests.services.postgres import PostgresCluster

# boto3 must never find real credentials or reach AWS from a test.
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_SESSION_TOKEN="testing",
    AWS_DEFAULT_REGION="us-east-1",
)
for _name in [name for name in os.environ if name.startswith(("XPSTREAM_", "OTEL_"))]:
    del os.environ[_name]
# The tests' events carry fixed event times (November 2025) so that ground truths reproduce:
# every process they start accepts event times up to a century old (the default is 400 days).
os.environ["XPSTREAM_EVENT_MAX_AGE_DAYS"] = "36500"
HISTORICAL = EventBounds(max_age_seconds=36500 * DAY)

# Workers' on-disk user states (XPSTREAM_DATA_DIR), a namespace each; gone when the session ends.
STATE_DIR = Path(tempfile.gettempdir()) / "xpstream-test-state"


@dataclass(frozen=True)
class Broker:
    """What a Kafka test needs to know about the broker it runs against."""

    name: str
    bootstrap: str
    transactions: bool


@pytest.fixture(scope="session")
def apache_kafka() -> Iterator[Broker]:
    kafka = ApacheKafka().start()
    try:
        yield Broker("kafka", kafka.bootstrap, transactions=True)
    finally:
        kafka.stop()


@pytest.fixture(scope="session")
def tansu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    with EmbeddedBroker(log_path=log) as broker:
        yield Broker("tansu", broker.url, transactions=False)


@pytest.fixture(scope="session", params=["kafka", "tansu"])
def kafka_broker(request: pytest.FixtureRequest) -> Broker:
    """Any Kafka test taking this fixture runs against Apache Kafka and against Tansu."""
    fixture = {"kafka": "apache_kafka", "tansu": "tansu"}[request.param]
    broker: Broker = request.getfixturevalue(fixture)
    return broker


@dataclass(frozen=True)
class Demo:
    """One `xpstream demo` run: its database, what it printed, and its HTML report."""

    database_url: str
    stdout: str
    report: Path


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """The demo, run once per session (36 s): its test reads the output, the console's the
    database it leaves."""
    workdir = tmp_path_factory.mktemp("demo")
    url = f"sqlite:///{workdir}/demo.db"
    report = workdir / "demo.html"
    result = subprocess.run(
        [str(Path(sys.executable).with_name("xpstream")), "demo", "--report", str(report)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200", "XPSTREAM_DATABASE_URL": url},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return Demo(url, result.stdout, report)


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """SQLAlchemy URL of a throwaway PostgreSQL 15 cluster."""
    cluster = PostgresCluster().start()
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture()
def postgres_database(postgres: str) -> Iterator[str]:
    """A fresh database of its own on the session's cluster, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = postgres.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def kinesis_endpoint() -> Iterator[str]:
    """moto's Kinesis-compatible server over HTTP on loopback."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address=HOST, port=port, verbose=False)
    server.start()
    try:
        yield f"http://{HOST}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kinesalite() -> Iterator[str]:
    """kinesalite over HTTP on loopback: stream and resharding behaviour as AWS answers it."""
    server = Kinesalite().start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def opensearch() -> Iterator[str]:
    """A real OpenSearch node (Maven Central artifacts, in a JVM) on loopback."""
    node = OpenSearchNode().start()
    try:
        yield node.url
    finally:
        node.remove()


def _live_children(parent: int) -> list[str]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, ppid = fields[0], int(fields[1])
        if ppid == parent and state != "Z":
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if "multiprocessing.resource_tracker" not in command:  # Python's, ends with it
                children.append(command[:120])
    return children


def _brokers() -> set[int]:
    """Embedded brokers running on the machine, whoever their parent is now."""
    found = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"tansu" in cmdline.read_bytes().split(b"\0")[0]:
                found.add(int(cmdline.parent.name))
        except OSError:
            continue
    return found


BROKERS_BEFORE: set[int] = set()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Python imports a compiled module over its source: stop when one is older than it."""
    BROKERS_BEFORE.update(_brokers())
    root = Path(__file__).resolve().parent.parent
    for extension in root.glob("pipelines/*.so"):
        source = extension.with_name(extension.name.split(".")[0] + ".py")
        if source.exists() and source.stat().st_mtime > extension.stat().st_mtime:
            pytest.exit(f"{extension.name} is older than {source.name}: run `make native`", 2)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if a service a test started outlives the session; remove the workers'
    on-disk states."""
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    leftovers = _live_children(os.getpid())
    # A broker whose command was SIGKILLed is re-parented: look for every one started since.
    leftovers += [f"embedded broker, pid {pid}" for pid in sorted(_brokers() - BROKERS_BEFORE)]
    if leftovers:
        print("\nprocesses left running by the tests:\n  " + "\n  ".join(leftovers))
        session.exitstatus = 1

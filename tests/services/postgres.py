"""A throwaway PostgreSQL 15 cluster, run as an unprivileged OS user (postgres refuses root)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from pipelines.embedded_broker import HOST, free_port, wait_for_port

SEARCH_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/local/bin", "/usr/bin")


def pg_binary(name: str) -> str:
    for directory in SEARCH_DIRS:
        candidate = Path(directory) / name
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found: install PostgreSQL 15 server binaries")
    return found


class PostgresCluster:
    """``durable``: commits survive a crash (the default of a real server); without it the
    cluster trades that for speed (no fsync, asynchronous commit)."""

    def __init__(self, durable: bool = False) -> None:
        self.durable = durable
        self.port = free_port()
        self.datadir = Path(tempfile.mkdtemp(prefix="xpstream-pg-"))
        self._run_as = "postgres" if os.geteuid() == 0 else None
        if self._run_as:
            entry = pwd.getpwnam(self._run_as)
            os.chown(self.datadir, entry.pw_uid, entry.pw_gid)
        self.started = False

    def _run(self, *args: str) -> None:
        subprocess.run(
            list(args), check=True, user=self._run_as, stdout=subprocess.DEVNULL, cwd=self.datadir
        )

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@{HOST}:{self.port}/postgres"

    def start(self) -> PostgresCluster:
        self._run(
            pg_binary("initdb"),
            "-D",
            str(self.datadir / "data"),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
        )
        self.resume()
        return self

    def resume(self) -> None:
        """Start the server on the cluster's data (again, after :meth:`crash`)."""
        options = f"-c listen_addresses={HOST} -p {self.port} -k {self.datadir}"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            pg_binary("pg_ctl"),
            "-D",
            str(self.datadir / "data"),
            "-w",
            "-l",
            str(self.datadir / "server.log"),
            "-o",
            options,
            "start",
        )
        self.started = True
        wait_for_port(self.port, 10)

    def crash(self) -> None:
        """Stop at once, as a lost database server would (``pg_ctl stop -m immediate``)."""
        self._run(pg_binary("pg_ctl"), "-D", str(self.datadir / "data"), "-m", "immediate", "stop")
        self.started = False

    def stop(self) -> None:
        if self.started:
            self._run(pg_binary("pg_ctl"), "-D", str(self.datadir / "data"), "-m", "fast", "stop")
            self.started = False
        shutil.rmtree(self.datadir, ignore_errors=True)

"""Servers of a test's own, on free ports, that the test may kill or restart.

The machine's shared Redis and PostgreSQL are never stopped: a fault test starts its own.
"""

import glob
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg2
import redis


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition, what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


class PrivateRedis:
    """A redis-server with no persistence: a restart comes back empty."""

    def __init__(self):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process = None

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        wait_until(self._answers, f"redis-server answers on port {self.port}")

    def _answers(self) -> bool:
        try:
            return redis.Redis.from_url(self.url).ping()
        except redis.ConnectionError:
            return False

    def kill(self) -> None:
        self._process.kill()
        self._process.wait()

    def keys(self, pattern: str) -> list[bytes]:
        return list(redis.Redis.from_url(self.url).scan_iter(pattern))


class PrivatePostgres:
    """A PostgreSQL cluster in a temporary folder, run as the `postgres` OS user (initdb refuses root),
    with trust authentication on 127.0.0.1 and its socket in its own folder."""

    def __init__(self):
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._bin = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1])
        self._root = Path(tempfile.mkdtemp(prefix="private-postgres-"))
        shutil.chown(self._root, "postgres", "postgres")
        self._data = self._root / "data"
        self._run("initdb", "-D", str(self._data), "-U", "postgres", "--auth=trust", "--no-sync")

    def _run(self, tool: str, *args: str) -> None:
        command = ["runuser", "-u", "postgres", "--", str(self._bin / tool), *args]
        subprocess.run(command, check=True, capture_output=True)

    def _ctl(self, action: str, *args: str) -> None:
        options = f"-p {self.port} -k {self._root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", action, "-D", str(self._data), "-l", str(self._root / "log"), "-w", "-o", options, *args)

    def start(self) -> None:
        self._ctl("start")

    def stop(self) -> None:
        """Fast shutdown: open sessions are ended, their transactions rolled back."""
        self._ctl("stop", "-m", "fast")

    def answers(self) -> bool:
        try:
            psycopg2.connect(self.url, connect_timeout=1).close()
            return True
        except psycopg2.OperationalError:
            return False

    def remove(self) -> None:
        self._ctl("stop", "-m", "immediate")
        shutil.rmtree(self._root)

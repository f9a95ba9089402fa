"""Real redis-server processes for the tests: single servers and a 3-master cluster.

Every server listens on 127.0.0.1 on a free port, keeps nothing on disk (``save ""``,
``appendonly no``) and is stopped by the fixture that started it. Nothing here talks to a
non-loopback address.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

HOST = "127.0.0.1"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def free_port(*, with_bus: bool = False) -> int:
    """A loopback port nobody listens on (and port + 10000 too, for a cluster bus)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = int(s.getsockname()[1])
        if port + 10000 > 65535 and with_bus:
            continue
        if with_bus:
            with socket.socket() as s:
                try:
                    s.bind((HOST, port + 10000))
                except OSError:
                    continue
        return port
    raise RuntimeError("no free loopback port found")


def _wait_until(predicate: object, timeout: float, what: str) -> None:
    # Readiness of another process has no event to wait on: poll with a deadline.
    deadline = time.monotonic() + timeout
    while True:
        if predicate():  # type: ignore[operator]
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


class RedisServer:
    """One redis-server child process that a test can stop, pause, resume and restart."""

    def __init__(self, workdir: Path, *, port: int | None = None, extra: tuple[str, ...] = ()):
        self.port = port or free_port(with_bus="--cluster-enabled" in extra)
        self.dir = workdir / f"redis-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.port, **kwargs)  # type: ignore[arg-type]

    def _ping(self) -> bool:
        try:
            with redis.Redis(host=HOST, port=self.port, socket_timeout=0.5) as c:
                return bool(c.ping())
        except redis.RedisError:
            return False

    def start(self) -> RedisServer:
        args = [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--logfile", str(self.dir / "redis.log"),
            "--daemonize", "no",
            *self.extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _wait_until(
                lambda: self.proc is not None and (self.proc.poll() is not None or self._ping()),
                10,
                f"redis-server on port {self.port}",
            )
        except TimeoutError:
            self.kill()
            raise
        if self.proc.poll() is not None:
            log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"redis-server on port {self.port} exited: {log}")
        self.paused = False
        return self

    def stop(self) -> None:
        """SIGTERM and wait: the port refuses connections afterwards."""
        if self.proc is None:
            return
        if self.paused:
            self.resume()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None
            self.paused = False

    def pause(self) -> None:
        """SIGSTOP: the kernel still accepts TCP connections, but nothing answers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def restart(self) -> None:
        self.stop()
        self.start()


class RedisClusterHarness:
    """Three cluster-enabled masters on loopback, joined with ``redis-cli --cluster create``."""

    def __init__(self, workdir: Path, masters: int = 3) -> None:
        self.servers = [
            RedisServer(
                workdir / f"cluster-{i}",
                extra=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ),
            )
            for i in range(masters)
        ]

    @property
    def url(self) -> str:
        return self.servers[0].url

    @property
    def ports(self) -> list[int]:
        return [s.port for s in self.servers]

    def start(self) -> RedisClusterHarness:
        for server in self.servers:
            server.start()
        nodes = [f"{HOST}:{s.port}" for s in self.servers]
        subprocess.run(
            [REDIS_CLI, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )
        _wait_until(self._ready, 30, "cluster_state:ok on every node")
        return self

    def _ready(self) -> bool:
        for server in self.servers:
            try:
                with server.client(socket_timeout=0.5) as c:
                    info = c.execute_command("CLUSTER INFO")
                    state = info.get("cluster_state") if isinstance(info, dict) else None
                    if state is None:
                        text = info.decode() if isinstance(info, bytes) else str(info)
                        state = "ok" if "cluster_state:ok" in text else "fail"
                    if state != "ok":
                        return False
            except redis.RedisError:
                return False
        # Redis refuses writes for a moment after the state turns ok: probe keys on every master.
        try:
            with redis.RedisCluster(host=HOST, port=self.servers[0].port) as rc:
                for i in range(16):
                    rc.set(f"__probe__{i}", b"1", px=1000)
        except Exception:
            return False
        return True

    def stop(self) -> None:
        for server in self.servers:
            with contextlib.suppress(Exception):
                server.stop()

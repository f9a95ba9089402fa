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


def _cluster_state(server: RedisServer) -> str:
    with server.client(socket_timeout=0.5) as c:
        info = c.execute_command("CLUSTER INFO")
    if isinstance(info, dict):
        return str(info.get("cluster_state"))
    text = info.decode() if isinstance(info, bytes) else str(info)
    return "ok" if "cluster_state:ok" in text else "fail"


class ReplicatedClusterHarness:
    """3 primaries + 3 replicas, ``cluster-node-timeout 1000``, ``full-coverage no``.

    The shape README recommends for failover: a SIGKILLed primary is replaced by its replica
    in about 2 s while the other primaries keep serving their slots.
    """

    def __init__(self, workdir: Path, *, node_timeout_ms: int = 1000) -> None:
        self.servers = [
            RedisServer(
                workdir / f"rcluster-{i}",
                extra=(
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", str(node_timeout_ms),
                    "--cluster-require-full-coverage", "no",
                    "--cluster-replica-validity-factor", "0",
                ),
            )
            for i in range(6)
        ]  # fmt: skip

    @property
    def ports(self) -> list[int]:
        return [s.port for s in self.servers]

    @property
    def url(self) -> str:
        """A ``redis+cluster://`` URL with every node as a seed."""
        return "redis+cluster://" + ",".join(f"{HOST}:{p}" for p in self.ports)

    def start(self) -> ReplicatedClusterHarness:
        for server in self.servers:
            server.start()
        nodes = [f"{HOST}:{s.port}" for s in self.servers]
        subprocess.run(
            [REDIS_CLI, "--cluster", "create", *nodes, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )
        _wait_until(self.healthy, 30, "3 primaries with a replica each, cluster_state:ok")
        return self

    def nodes(self) -> list[dict[str, object]]:
        """``CLUSTER NODES`` as seen by a live node: port, role, primary id, slots, flags."""
        for server in self.servers:
            if server.proc is None:
                continue
            # A bare connection: redis-py's reply callback would reshape the text.
            conn = redis.Connection(host=HOST, port=server.port, socket_timeout=0.5)
            try:
                conn.send_command("CLUSTER", "NODES")
                raw = conn.read_response()
            except redis.RedisError:
                continue
            finally:
                conn.disconnect()
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            rows = []
            for line in text.strip().splitlines():
                parts = line.split()
                rows.append(
                    {
                        "id": parts[0],
                        "port": int(parts[1].split("@")[0].rsplit(":", 1)[1]),
                        "flags": parts[2].split(","),
                        "master_id": parts[3],
                        "slots": parts[8:],
                    }
                )
            return rows
        return []

    def primaries(self) -> list[int]:
        """Ports of the healthy primaries that own slots."""
        return sorted(
            int(str(n["port"]))
            for n in self.nodes()
            if "master" in n["flags"]  # type: ignore[operator]
            and "fail" not in n["flags"]  # type: ignore[operator]
            and n["slots"]
        )

    def server(self, port: int) -> RedisServer:
        return next(s for s in self.servers if s.port == port)

    def healthy(self) -> bool:
        """Every node up, 3 slot-owning primaries each with a connected replica, state ok."""
        try:
            if any(s.proc is None or _cluster_state(s) != "ok" for s in self.servers):
                return False
            rows = self.nodes()
            primaries = [r for r in rows if "master" in r["flags"] and r["slots"]]  # type: ignore[operator]
            replicas = [r for r in rows if "slave" in r["flags"]]  # type: ignore[operator]
            if len(primaries) != 3 or len(replicas) != 3:
                return False
            if any("fail" in r["flags"] or "fail?" in r["flags"] for r in rows):  # type: ignore[operator]
                return False
            for server in self.servers:
                with server.client(socket_timeout=0.5) as c:
                    info = c.info("replication")
                    if info.get("role") == "slave" and info.get("master_link_status") != "up":
                        return False
            with redis.RedisCluster(host=HOST, port=self.servers[0].port) as rc:
                for i in range(16):
                    rc.set(f"__probe__{i}", b"1", px=1000)
        except Exception:
            return False
        return True

    def restore(self, timeout: float = 30) -> None:
        """Restart any stopped node (it rejoins as a replica) and wait until healthy again."""
        for server in self.servers:
            if server.proc is None:
                server.start()
        _wait_until(self.healthy, timeout, "the cluster to heal")

    def stop(self) -> None:
        for server in self.servers:
            with contextlib.suppress(Exception):
                server.stop()


class SentinelHarness:
    """One primary, one replica and one sentinel (``down-after-milliseconds 1000``)."""

    SERVICE = "cc-primary"

    def __init__(self, workdir: Path, *, down_after_ms: int = 1000) -> None:
        self.workdir = workdir
        self.primary = RedisServer(workdir / "sentinel-primary")
        self.replica = RedisServer(workdir / "sentinel-replica")
        self.sentinel_port = free_port()
        self.sentinel_dir = workdir / f"sentinel-{self.sentinel_port}"
        self.sentinel_dir.mkdir(parents=True, exist_ok=True)
        self.down_after_ms = down_after_ms
        self.sentinel_proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis+sentinel://{HOST}:{self.sentinel_port}/{self.SERVICE}"

    @property
    def steady_url(self) -> str:
        """``url`` with a replica acknowledgement timeout of 2 s instead of 150 ms: for tests
        of confirmed writes without a failover, which a busy machine (a CI run) must not fail
        because the replica took 150 ms to confirm. Failover tests keep the default."""
        return f"{self.url}?replica_ack_timeout=2"

    @property
    def servers(self) -> list[RedisServer]:
        return [self.primary, self.replica]

    def sentinel(self, **kwargs: object) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.sentinel_port, **kwargs)  # type: ignore[arg-type]

    def start(self) -> SentinelHarness:
        self.primary.start()
        self.replica.extra = ("--replicaof", HOST, str(self.primary.port))
        self.replica.start()
        conf = self.sentinel_dir / "sentinel.conf"
        conf.write_text(
            f"port {self.sentinel_port}\n"
            f"bind {HOST}\n"
            f"dir {self.sentinel_dir}\n"
            f"logfile {self.sentinel_dir / 'sentinel.log'}\n"
            f"sentinel monitor {self.SERVICE} {HOST} {self.primary.port} 1\n"
            f"sentinel down-after-milliseconds {self.SERVICE} {self.down_after_ms}\n"
            f"sentinel failover-timeout {self.SERVICE} 10000\n"
            f"sentinel parallel-syncs {self.SERVICE} 1\n"
        )
        self.sentinel_proc = subprocess.Popen(
            [REDIS_SERVER, str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        _wait_until(self.ready, 30, "the sentinel to see the primary and its replica")
        return self

    def master_port(self) -> int | None:
        try:
            with self.sentinel(socket_timeout=0.5) as s:
                addr = s.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", self.SERVICE)
        except redis.RedisError:
            return None
        return int(addr[1]) if addr else None

    def server_on(self, port: int) -> RedisServer:
        return next(s for s in self.servers if s.port == port)

    def ready(self) -> bool:
        """Sentinel names a live primary that has one connected replica it knows about."""
        port = self.master_port()
        if port is None:
            return False
        try:
            with self.sentinel(socket_timeout=0.5) as s:
                replicas = s.sentinel_slaves(self.SERVICE)
            ok = [
                r
                for r in replicas
                if not r.get("is_sdown") and r.get("master-link-status", "ok") == "ok"
            ]
            with self.server_on(port).client(socket_timeout=0.5) as c:
                role = c.execute_command("ROLE")
            return len(ok) >= 1 and len(role[2]) >= 1
        except (redis.RedisError, StopIteration):
            return False

    def restore(self, timeout: float = 30) -> None:
        for server in self.servers:
            if server.proc is None:
                port = self.master_port()
                server.extra = ("--replicaof", HOST, str(port))
                server.start()
        _wait_until(self.ready, timeout, "the sentinel setup to heal")

    def stop(self) -> None:
        if self.sentinel_proc is not None:
            self.sentinel_proc.terminate()
            try:
                self.sentinel_proc.wait(10)
            except subprocess.TimeoutExpired:
                self.sentinel_proc.kill()
                self.sentinel_proc.wait(10)
            self.sentinel_proc = None
        for server in self.servers:
            with contextlib.suppress(Exception):
                server.stop()

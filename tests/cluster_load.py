"""Load and failure drivers shared by the cluster/Sentinel tests and the benchmark script.

Everything here talks to real redis-server processes started by the harness; threads stand
in for web workers. Counters are plain lists/ints guarded by a lock; nothing sleeps to
synchronize except polling other processes' state with a deadline.
"""

from __future__ import annotations

import random
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from redis.cluster import RedisCluster, key_slot

from cache_core import BackendError, RedisCache, TypedCache
from tests.redis_harness import HOST, REDIS_CLI, ReplicatedClusterHarness


def owner_ports(harness: ReplicatedClusterHarness) -> dict[int, int]:
    """slot -> port of the primary that owns it (from CLUSTER SLOTS of a live node)."""
    owners: dict[int, int] = {}
    for node in harness.nodes():
        flags = node["flags"]
        if "master" not in flags or "fail" in flags:  # type: ignore[operator]
            continue
        for spec in node["slots"]:  # type: ignore[attr-defined]
            if str(spec).startswith("["):
                continue  # a migrating/importing marker
            lo, _, hi = str(spec).partition("-")
            for slot in range(int(lo), int(hi or lo) + 1):
                owners[slot] = int(str(node["port"]))
    return owners


@dataclass
class LoadReport:
    calls: int = 0
    errors: list[BaseException] = field(default_factory=list)
    # (monotonic time, key) of every loader call during the measured phase
    loads: list[tuple[float, str]] = field(default_factory=list)


class GetOrSetLoad:
    """Threads calling ``TypedCache.get_or_set`` on a fixed key set until stopped."""

    def __init__(self, typed: TypedCache[str], keys: list[str], *, threads: int = 4) -> None:
        self.typed = typed
        self.keys = keys
        self.threads = threads
        self.report = LoadReport()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    def loader(self, key: str) -> Callable[[], str]:
        def load() -> str:
            with self._lock:
                self.report.loads.append((time.monotonic(), key))
            return f"value of {key}"

        return load

    def warm(self) -> None:
        for key in self.keys:
            self.typed.get_or_set(key, self.loader(key))
        with self._lock:
            self.report.loads.clear()

    def _work(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self._stop.is_set():
            key = rng.choice(self.keys)
            try:
                value = self.typed.get_or_set(key, self.loader(key))
                assert value == f"value of {key}", value
            except BaseException as exc:
                with self._lock:
                    self.report.errors.append(exc)
            with self._lock:
                self.report.calls += 1

    def start(self) -> GetOrSetLoad:
        self._workers = [
            threading.Thread(target=self._work, args=(i,), daemon=True) for i in range(self.threads)
        ]
        for t in self._workers:
            t.start()
        return self

    def stop(self) -> LoadReport:
        self._stop.set()
        for t in self._workers:
            t.join(30)
        return self.report


class Writers:
    """Threads that delete pre-set keys and set new ones, recording what was acknowledged."""

    def __init__(self, cache: RedisCache, threads: int = 4, per_thread: int = 5000) -> None:
        self.cache = cache
        self.threads = threads
        self.per_thread = per_thread
        self.lock = threading.Lock()
        self.acked_deletes: list[str] = []
        self.failed_deletes: list[str] = []
        self.acked_sets: list[str] = []
        self.failed_sets = 0
        self.failures: list[tuple[float, str]] = []
        self.stop = threading.Event()
        self.workers: list[threading.Thread] = []

    def prepare(self, admin: redis.Redis) -> None:
        pipe = admin.pipeline(transaction=False)
        for t in range(self.threads):
            for j in range(self.per_thread):
                pipe.set(self.cache.redis_key(f"d{t}:{j}"), b"old")
        pipe.execute()
        admin.wait(1, 2000)

    def _work(self, t: int) -> None:
        for j in range(self.per_thread):
            if self.stop.is_set():
                return
            try:
                self.cache.delete(f"d{t}:{j}")
                with self.lock:
                    self.acked_deletes.append(f"d{t}:{j}")
            except BackendError as exc:
                with self.lock:
                    self.failed_deletes.append(f"d{t}:{j}")
                    self.failures.append((time.monotonic(), type(exc).__name__))
            try:
                self.cache.set(f"s{t}:{j}", b"new")
                with self.lock:
                    self.acked_sets.append(f"s{t}:{j}")
            except BackendError:
                with self.lock:
                    self.failed_sets += 1
                # A client backs off after a failure (here 10 ms) instead of spinning through
                # its keys while the breaker fails calls fast.
                self.stop.wait(0.01)

    def start(self) -> None:
        self.workers = [
            threading.Thread(target=self._work, args=(t,), daemon=True) for t in range(self.threads)
        ]
        for w in self.workers:
            w.start()

    def finish(self) -> None:
        self.stop.set()
        for w in self.workers:
            w.join(30)


def promoted_replica(harness: ReplicatedClusterHarness, dead_port: int) -> int:
    """Port of the replica of the primary on ``dead_port``."""
    rows = harness.nodes()
    dead_id = next(r["id"] for r in rows if r["port"] == dead_port)
    return next(int(str(r["port"])) for r in rows if r["master_id"] == dead_id)


def wait_promoted(harness: ReplicatedClusterHarness, port: int, timeout: float = 15) -> float:
    """Poll until the node on ``port`` is a primary owning slots; return when it was seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with harness.server(port).client(socket_timeout=0.5) as c:
                role = c.execute_command("ROLE")
            if role[0] in (b"master", "master"):
                return time.monotonic()
        except redis.RedisError:
            pass
        time.sleep(0.005)
    raise TimeoutError(f"node {port} was not promoted within {timeout}s")


def tags_in_slots(slots: set[int], per_slot: int = 1) -> list[str]:
    """Hash tags whose slot is in ``slots`` (``per_slot`` tags for each)."""
    found: Counter[int] = Counter()
    tags: list[str] = []
    i = 0
    while len(tags) < per_slot * len(slots):
        tag = f"t{i}"
        i += 1
        slot = key_slot(tag.encode())
        if slot in slots and found[slot] < per_slot:
            found[slot] += 1
            tags.append(tag)
    return tags


def reshard(harness: ReplicatedClusterHarness, src_port: int, dst_port: int, slots: int) -> float:
    """Move ``slots`` slots (with their keys) from one primary to another; seconds taken."""
    rows = harness.nodes()
    src = next(r["id"] for r in rows if r["port"] == src_port)
    dst = next(r["id"] for r in rows if r["port"] == dst_port)
    start = time.monotonic()
    subprocess.run(
        [
            REDIS_CLI, "--cluster", "reshard", f"{HOST}:{dst_port}",
            "--cluster-from", str(src), "--cluster-to", str(dst),
            "--cluster-slots", str(slots), "--cluster-yes",
            "--cluster-pipeline", "100",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=600,
    )  # fmt: skip
    return time.monotonic() - start


def first_slots(harness: ReplicatedClusterHarness, port: int, count: int) -> set[int]:
    """The lowest ``count`` slots the primary on ``port`` owns (what reshard moves first)."""
    owners = owner_ports(harness)
    return set(sorted(s for s, p in owners.items() if p == port)[:count])


def cluster_admin(harness: ReplicatedClusterHarness) -> RedisCluster:
    return RedisCluster(host=HOST, port=harness.primaries()[0])


__all__ = [
    "BackendError",
    "GetOrSetLoad",
    "LoadReport",
    "RedisCache",
    "Writers",
    "cluster_admin",
    "first_slots",
    "owner_ports",
    "promoted_replica",
    "reshard",
    "tags_in_slots",
    "wait_promoted",
]

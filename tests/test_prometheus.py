"""The Prometheus exporter against the real prometheus_client (issue 17)."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from cache_core import (
    BloomFilter,
    CircuitBreaker,
    MemoryCache,
    MultiLevelCache,
    ProtectedCache,
    RedisCache,
    TypedCache,
)
from tests.conftest import wait_for
from tests.redis_harness import HOST, RedisServer, free_port

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from cache_core.contrib.prometheus import CacheCoreCollector  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, keyed by (sample name, sorted labels)."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _total(samples: dict[Any, float], name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, lbls), v in samples.items() if n == name and want <= set(lbls))


def test_import_cache_core_does_not_import_the_exporters() -> None:
    # redis-py itself imports opentelemetry when it is installed (its own instrumentation):
    # only what cache_core adds on top counts.
    code = (
        "import sys, redis; before = set(sys.modules); "
        "import cache_core, cache_core.contrib; "
        "bad = [m for m in set(sys.modules) - before "
        "       if m.startswith(('prometheus_client', 'opentelemetry'))]; "
        "sys.exit(str(bad) if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_scrape_text_equals_the_counts_the_test_produced(
    redis_client: redis.Redis, unique_prefix: str
) -> None:
    registry = prometheus_client.CollectorRegistry()
    registry.register(CacheCoreCollector())
    multi = MultiLevelCache(
        MemoryCache(), RedisCache(redis_client, prefix=unique_prefix), l1_ttl=60
    )
    users: TypedCache[int] = TypedCache(multi, name="prom-users")
    bloom = BloomFilter(1000, 0.01)
    bloom.update([f"u{i}" for i in range(10)])
    guard = ProtectedCache(TypedCache(MemoryCache(), name="prom-guard"), bloom)
    breaker = CircuitBreaker(name="prom-breaker")
    for i in range(10):
        users.get_or_set(f"u{i}", lambda i=i: i)  # 10 misses, 10 loads
    for _ in range(3):
        for i in range(10):
            users.get_or_set(f"u{i}", lambda: -1)  # 30 L1 hits
    users.get_or_set("u0", lambda: -1)  # and one more
    for i in range(4):
        guard.get_or_set(f"absent{i}", lambda: 1)  # rejected by the bloom filter
    breaker.record_failure(ConnectionError("down"))  # below threshold: still closed

    s = _samples(prometheus_client.generate_latest(registry).decode())
    req = "cache_core_requests_total"
    assert s[(req, (("cache", "prom-users"), ("level", "l1"), ("result", "hit")))] == 31
    assert s[(req, (("cache", "prom-users"), ("level", "l2"), ("result", "miss")))] == 10
    assert _total(s, req, cache="prom-users") == 41
    assert _total(s, req, cache=unique_prefix) == 0  # the MultiLevelCache is covered: no double
    assert s[(req, (("cache", "prom-guard"), ("level", "none"), ("result", "rejected")))] == 4
    assert s[("cache_core_loads_total", (("cache", "prom-users"),))] == 10
    hist = "cache_core_load_duration_seconds"
    assert s[(f"{hist}_count", (("cache", "prom-users"),))] == 10
    assert s[(f"{hist}_bucket", (("cache", "prom-users"), ("le", "+Inf")))] == 10
    assert s[("cache_core_breaker_state", (("breaker", "prom-breaker"), ("state", "closed")))] == 1
    assert s[("cache_core_bloom_capacity", (("cache", "prom-guard"),))] == 1000
    assert 0 < s[("cache_core_bloom_estimated_fpr", (("cache", "prom-guard"),))] < 1e-6
    names = {name for name, _ in s}
    assert all(n.startswith("cache_core_") for n in names)
    assert not any("key" in dict(lbls) for _, lbls in s)  # no per-key labels


# -- gunicorn, 4 workers x 8 threads, multi-process mode ----------------------------------------


class _Gunicorn:
    def __init__(self, port: int) -> None:
        self.port = port

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def ready(self) -> bool:
        try:
            return self.get("/metrics")[0] == 200
        except OSError:
            return False


@pytest.fixture
def gunicorn_app(
    redis_server: RedisServer, unique_prefix: str, tmp_path: Path
) -> Iterator[_Gunicorn]:
    pytest.importorskip("gunicorn")
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    port = free_port()
    log = tmp_path / "gunicorn.log"
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
        "CACHE_CORE_EXAMPLE_URL": redis_server.url,
        "CACHE_CORE_EXAMPLE_PREFIX": f"gunicorn-{unique_prefix}",
        "CACHE_CORE_METRICS_INTERVAL": "0.2",
    }
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "gunicorn", "-w", "4", "--threads", "8",
            "-b", f"{HOST}:{port}", "-c", "examples/gunicorn.conf.py",
            "examples.metrics_app:create_app()",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),  # a file, not a pipe nobody drains
    )  # fmt: skip
    server = _Gunicorn(port)
    try:
        assert wait_for(lambda: server.ready() or proc.poll() is not None, 60)
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.mark.slow
def test_gunicorn_4_workers_scrape_adds_up_every_worker(gunicorn_app: _Gunicorn) -> None:
    n = 800
    pids: set[str] = set()
    lock = threading.Lock()
    paths = [f"/users/{i % 40}" for i in range(n)]

    def client(part: list[str]) -> None:
        for path in part:
            status, headers, _ = gunicorn_app.get(path)
            assert status == 200
            with lock:
                pids.add(headers["X-Worker-Pid"])

    threads = [threading.Thread(target=client, args=(paths[i::16],)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(pids) >= 2  # the requests really were spread over several processes

    def scraped() -> dict[Any, float]:
        return _samples(gunicorn_app.get("/metrics")[2].decode())

    # Each worker syncs its counts every 0.2 s: wait until the scrape has them all.
    assert wait_for(lambda: _total(scraped(), "cache_core_requests_total", cache="users") == n, 15)
    s = scraped()
    assert _total(s, "cache_core_requests_total", cache="users") == n
    hits = _total(s, "cache_core_requests_total", cache="users", result="hit")
    misses = _total(s, "cache_core_requests_total", cache="users", result="miss")
    assert hits + misses == n
    loads = _total(s, "cache_core_loads_total", cache="users")
    assert 40 <= loads <= misses  # every key loaded at least once, never more than its misses
    assert _total(s, "cache_core_load_duration_seconds_count", cache="users") == loads

"""Redis URL forms accepted by ``RedisCache.from_url`` and ``CACHE_CORE_URL``, and loud failures.

Every misconfiguration of issue 15 either raises at construction or logs one WARNING that
names the fix; none degrades silently to the loader.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from cache_core import RedisCache, default_cache
from cache_core._default import reset_default_cache
from cache_core._urls import parse_url, redacted
from tests.redis_harness import HOST, RedisClusterHarness, RedisServer, free_port

# ------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    ("url", "kind", "hosts", "extra"),
    [
        ("redis://h:7000/2", "redis", (("h", 7000),), {}),
        ("redis://h", "redis", (("h", 6379),), {}),
        ("rediss://u:p@h:7000/0?ssl_cert_reqs=none", "redis", (("h", 7000),), {}),
        ("unix:///tmp/redis.sock?db=3", "redis", (), {}),
        ("redis://h:7000/?cluster=true", "cluster", (("h", 7000),), {}),
        ("redis+cluster://h1:7000,h2:7001/", "cluster", (("h1", 7000), ("h2", 7001)), {}),
        ("redis+cluster://h1,h2:7001", "cluster", (("h1", 6379), ("h2", 7001)), {}),
        (
            "rediss+cluster://:pw@h1:7000?socket_timeout=0.5",
            "cluster",
            (("h1", 7000),),
            {"ssl": True, "password": "pw", "socket_timeout": 0.5},
        ),
        (
            "redis+sentinel://s1:26379,s2/mymaster/3?socket_timeout=0.2",
            "sentinel",
            (("s1", 26379), ("s2", 26379)),
            {"db": 3, "socket_timeout": 0.2},
        ),
        ("redis+sentinel://[::1]:26380/m", "sentinel", (("::1", 26380),), {}),
    ],
)
def test_url_forms(url: str, kind: str, hosts: tuple[tuple[str, int], ...], extra: dict) -> None:
    target = parse_url(url)
    assert target.kind == kind
    assert target.hosts == hosts
    for name, value in extra.items():
        assert target.client_kwargs[name] == value


def test_sentinel_url_parts() -> None:
    t = parse_url("redis+sentinel://:nodepw@s1/svc/1?sentinel_password=spw&replica_ack_timeout=0.5")
    assert t.service == "svc"
    assert t.client_kwargs == {"password": "nodepw", "db": 1}
    assert t.sentinel_kwargs == {"password": "spw"}
    assert t.replica_ack_timeout == 0.5


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://h:1/0?bogus=1&sockettimeout=2", "unknown options bogus, sockettimeout"),
        ("redis+cluster://h:1?db_number=1", "unknown option db_number"),
        ("redis+sentinel://s/m?ssl_cert_reqs=none", "unknown option ssl_cert_reqs"),
        ("redis://h:1/0?socket_timeout=-1", "bad value '-1' for option socket_timeout"),
        ("redis://h:1/0?socket_timeout=1&socket_timeout=2", "given twice"),
        ("redis://h1:1,h2:2/0", "redis\\+cluster://h1:1,h2:2"),
        ("redis://h:1/abc", "bad database number 'abc'"),
        ("redis://h:1/2?db=3", "two databases"),
        ("redis+cluster://h:1/3", "only database 0"),
        ("redis+cluster://h:1?cluster=false", "cluster=false"),
        ("redis+cluster:///", "no seed"),
        ("redis+sentinel://s1:26379", "names no service"),
        ("redis+sentinel://s1/a/b/c", "service_name"),
        ("redis://h:99999/0", "bad port"),
        ("http://h:1/", "scheme must be one of"),
        ("redis://h:1/0#frag", "fragment"),
    ],
)
def test_bad_urls_are_refused_at_construction(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RedisCache.from_url(url)


def test_cluster_flag_conflicts_are_refused() -> None:
    with pytest.raises(ValueError, match="redis\\+sentinel"):
        RedisCache.from_url("redis+sentinel://s1/m", cluster=True)
    with pytest.raises(ValueError, match="unix://"):
        RedisCache.from_url("unix:///tmp/x.sock", cluster=True)


def test_passwords_never_reach_error_messages() -> None:
    assert redacted("redis://user:s3cret@h:1/0") == "redis://user:***@h:1/0"
    with pytest.raises(ValueError) as info:
        RedisCache.from_url("redis://user:s3cret@h:1/0?nope=1")
    assert "s3cret" not in str(info.value)


# ------------------------------------------------------------------------------ real servers


def test_redis_and_unix_urls_work(redis_workdir: Path, unique_prefix: str) -> None:
    sock = redis_workdir / f"{unique_prefix}.sock"
    server = RedisServer(redis_workdir / unique_prefix, extra=("--unixsocket", str(sock))).start()
    try:
        for url in (f"redis://{HOST}:{server.port}/1", f"unix://{sock}?db=1"):
            with RedisCache.from_url(url, prefix="u") as cache:
                cache.set("k", url.encode())
                assert cache.get("k") == url.encode()
        with server.client(db=1) as c:
            assert c.get("u:k") == f"unix://{sock}?db=1".encode()
    finally:
        server.stop()


def test_cluster_urls_work(redis_cluster: RedisClusterHarness) -> None:
    dead = free_port()
    ports = redis_cluster.ports
    for url in (
        f"redis+cluster://{HOST}:{dead},{HOST}:{ports[1]}",  # the first seed is down
        f"redis://{HOST}:{ports[0]}/0?cluster=true",
    ):
        with RedisCache.from_url(url, prefix="cu") as cache:
            assert cache.is_cluster
            cache.mset({f"k{i}": b"v" for i in range(20)})
            assert len(cache.mget([f"k{i}" for i in range(20)])) == 20
            assert cache.clear() == 20


def test_cache_core_url_can_ask_for_a_cluster(
    redis_cluster: RedisClusterHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CACHE_CORE_URL", f"redis+cluster://{HOST}:{redis_cluster.ports[2]}")
    reset_default_cache()
    try:
        cache = default_cache()
        assert isinstance(cache, RedisCache) and cache.is_cluster
        cache.set("d", b"1")
        assert cache.get("d") == b"1"
    finally:
        reset_default_cache()


def test_a_cluster_node_as_a_plain_url_is_refused(redis_cluster: RedisClusterHarness) -> None:
    with pytest.raises(ValueError, match=r"Redis Cluster node.*redis\+cluster://"):
        RedisCache.from_url(redis_cluster.url)


def test_a_plain_server_as_a_cluster_url_is_refused(redis_server: RedisServer) -> None:
    with pytest.raises(ValueError, match="not a Redis Cluster"):
        RedisCache.from_url(f"redis+cluster://{HOST}:{redis_server.port}")


def test_out_of_range_db_is_refused(redis_server: RedisServer) -> None:
    with pytest.raises(ValueError, match="no database 99"):
        RedisCache.from_url(f"redis://{HOST}:{redis_server.port}/99")


@pytest.fixture
def http_port() -> Iterator[int]:
    """A loopback TCP server that answers like a web server (the wrong port)."""
    srv = socket.socket()
    srv.bind((HOST, 0))
    srv.listen(8)
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                try:
                    conn.recv(4096)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield srv.getsockname()[1]
    stop.set()
    thread.join(2)
    srv.close()


def test_a_port_that_is_not_redis_is_refused(http_port: int) -> None:
    with pytest.raises(ValueError, match="check the port"):
        RedisCache.from_url(f"redis://{HOST}:{http_port}/0")


def test_nothing_listening_logs_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    with caplog.at_level("WARNING", logger="cache_core"):
        cache = RedisCache.from_url(f"redis://{HOST}:{port}/0", prefix="w")
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "check the host and port" in warnings[0].getMessage()
    cache.close()


def test_tls_url_builds_a_tls_client() -> None:
    cache = RedisCache.from_url(f"rediss://{HOST}:{free_port()}/0?ssl_cert_reqs=none")
    try:
        assert issubclass(
            cache.client.connection_pool.connection_class,  # type: ignore[union-attr]
            redis.SSLConnection,
        )
    finally:
        cache.close()

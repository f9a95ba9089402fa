"""RedisCache beyond the shared contract: namespaces, clear's safety, clients, cluster, faults."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from cache_core import BackendError, CacheMiss, RedisCache
from cache_core._redis_keys import escape_glob
from cache_core._redis_pending import PendingDeletes
from tests.redis_harness import RedisClusterHarness, RedisServer

NEIGHBOUR_PREFIXES = ["a", "ab", "aXb", "a*", "a?", "a[b]", "ab]", "a\\", "a\\x", "b", "a[b", "["]


def _commandstats(client: redis.Redis) -> dict[str, Any]:
    return {k.removeprefix("cmdstat_"): v for k, v in client.info("commandstats").items()}


@pytest.mark.parametrize("victim", NEIGHBOUR_PREFIXES)
def test_clear_never_touches_a_neighbours_keys(redis_client: redis.Redis, victim: str) -> None:
    caches = {p: RedisCache(redis_client, prefix=p) for p in NEIGHBOUR_PREFIXES}
    for prefix, cache in caches.items():
        cache.mset({f"k{i}": prefix.encode() for i in range(5)})
    redis_client.set("unprefixed", b"x")
    redis_client.config_resetstat()

    assert caches[victim].clear() == 5

    for prefix, cache in caches.items():
        expected = {} if prefix == victim else {f"k{i}": prefix.encode() for i in range(5)}
        assert cache.mget([f"k{i}" for i in range(5)]) == expected, prefix
    assert redis_client.get("unprefixed") == b"x"
    stats = _commandstats(redis_client)
    assert "scan" in stats
    assert not {"keys", "flushdb", "flushall", "del"} & stats.keys()


def test_escape_glob() -> None:
    assert escape_glob("a*b?c[d]e\\f") == "a\\*b\\?c\\[d\\]e\\\\f"
    assert escape_glob("plain:") == "plain:"


def test_clear_100k_keys_in_pages(redis_client: redis.Redis) -> None:
    cache = RedisCache(redis_client, prefix="big")
    pipe = redis_client.pipeline(transaction=False)
    for i in range(20_000):
        pipe.set(f"big:{i}", b"v")
    pipe.execute()
    redis_client.config_resetstat()
    assert cache.clear() == 20_000
    assert redis_client.dbsize() == 0
    stats = _commandstats(redis_client)
    assert stats["unlink"]["calls"] >= 20  # one UNLINK per SCAN page, never one huge DEL
    assert "keys" not in stats


def test_clear_with_empty_prefix_is_refused(redis_client: redis.Redis) -> None:
    redis_client.set("precious", b"1")
    with pytest.raises(ValueError, match="allow_clear_all"):
        RedisCache(redis_client).clear()
    assert redis_client.get("precious") == b"1"


def test_clear_all_when_explicitly_allowed(redis_client: redis.Redis) -> None:
    redis_client.mset({"a": b"1", "b": b"2"})
    redis_client.config_resetstat()
    assert RedisCache(redis_client, allow_clear_all=True).clear() == 2
    assert redis_client.dbsize() == 0
    assert not {"flushdb", "flushall", "keys"} & _commandstats(redis_client).keys()


def test_keys_are_stored_under_prefix_colon_key(redis_client: redis.Redis) -> None:
    RedisCache(redis_client, prefix="app").set("user:1", b"v")
    RedisCache(redis_client).set("bare", b"w")
    assert redis_client.get("app:user:1") == b"v"
    assert redis_client.get("bare") == b"w"
    assert RedisCache(redis_client, prefix="app").redis_key("x") == "app:x"


def test_sub_second_ttl_uses_px(redis_client: redis.Redis) -> None:
    cache = RedisCache(redis_client, prefix="p")
    cache.set("k", b"v", ttl=0.25)
    assert 0 < redis_client.pttl("p:k") <= 250
    cache.mset({"m": b"v"}, ttl=0.3)
    assert 0 < redis_client.pttl("p:m") <= 300
    cache.set("tiny", b"v", ttl=0.0001)  # rounds to the smallest TTL Redis has, 1 ms
    assert redis_client.pttl("p:tiny") in (-2, 0, 1)


def test_default_ttl_is_written(redis_client: redis.Redis) -> None:
    RedisCache(redis_client, prefix="p", default_ttl=30).set("k", b"v")
    assert 29_000 < redis_client.pttl("p:k") <= 30_000
    RedisCache(redis_client, prefix="p").set("forever", b"v")
    assert redis_client.pttl("p:forever") == -1


def test_constructor_rejects_bad_arguments(redis_client: redis.Redis) -> None:
    with pytest.raises(TypeError, match="client"):
        RedisCache("redis://localhost")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="prefix"):
        RedisCache(redis_client, prefix=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="url"):
        RedisCache.from_url(b"redis://127.0.0.1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="decode_responses"):
        RedisCache(redis.Redis(decode_responses=True))


def _named_connections(admin: redis.Redis, name: str, expect: int) -> int:
    # The server notices a closed socket asynchronously; poll briefly for the expected count.
    deadline = time.monotonic() + 2
    while True:
        count = sum(1 for c in admin.client_list() if c.get("name") == name)
        if count == expect or time.monotonic() > deadline:
            return count
        time.sleep(0.01)


def test_callers_client_is_never_closed(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    client = redis_server.client(client_name="callers-client")
    with RedisCache(client, prefix="own") as cache:
        cache.set("k", b"v")
    cache.close()
    assert _named_connections(redis_client, "callers-client", expect=1) == 1
    assert client.get("own:k") == b"v"  # still usable
    client.close()


def test_from_url_owns_and_closes_its_client(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    with RedisCache.from_url(redis_server.url, prefix="owned", client_name="owned-cache") as cache:
        cache.set("k", b"v")
        assert _named_connections(redis_client, "owned-cache", expect=1) == 1
        kwargs = cache.client.get_connection_kwargs()
        assert kwargs["socket_timeout"] == 0.25
        assert kwargs["socket_connect_timeout"] == 0.25
    assert _named_connections(redis_client, "owned-cache", expect=0) == 0


def test_from_url_kwargs_override_defaults(redis_server: RedisServer) -> None:
    with RedisCache.from_url(redis_server.url, socket_timeout=1.5) as cache:
        assert cache.client.get_connection_kwargs()["socket_timeout"] == 1.5


def test_redis_errors_are_wrapped_with_cause(redis_client: redis.Redis) -> None:
    redis_client.lpush("w:list", b"x")
    cache = RedisCache(redis_client, prefix="w")
    with pytest.raises(BackendError, match="GET") as info:
        cache.get("list")
    assert isinstance(info.value.__cause__, redis.ResponseError)
    assert not isinstance(info.value, redis.RedisError)


# -- faults: a stopped, a paused and a restarted server ----------------------------------------


ALL_CALLS = [
    ("get", ("k",)),
    ("set", ("k", b"v")),
    ("delete", ("k",)),
    ("exists", ("k",)),
    ("mget", (["a", "b"],)),
    ("mset", ({"a": b"1"}, 5)),
    ("mset", ({"a": b"1"},)),
    ("mdelete", (["a", "b"],)),
    ("clear", ()),
]


@pytest.mark.parametrize(("method", "args"), ALL_CALLS)
def test_stopped_server_fails_fast_with_backend_error(
    fault_server: RedisServer, method: str, args: tuple[Any, ...]
) -> None:
    cache = RedisCache.from_url(fault_server.url, prefix="f")
    cache.set("k", b"v")  # a pooled connection exists before the server goes away
    fault_server.stop()
    start = time.monotonic()
    with pytest.raises(BackendError) as info:
        getattr(cache, method)(*args)
    assert time.monotonic() - start < 1.0
    assert isinstance(info.value.__cause__, redis.RedisError)
    cache.close()


def test_bad_input_is_rejected_before_any_io(fault_server: RedisServer) -> None:
    cache = RedisCache.from_url(fault_server.url, prefix="f")
    fault_server.stop()
    with pytest.raises(TypeError):
        cache.set(1, b"v")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        cache.set("k", b"v", ttl=-1)
    with pytest.raises(TypeError):
        cache.mset({"k": "text"})  # type: ignore[dict-item]


def test_paused_server_fails_within_socket_timeout(fault_server: RedisServer) -> None:
    timeout = 0.3
    cache = RedisCache.from_url(fault_server.url, prefix="f", socket_timeout=timeout)
    cache.set("k", b"v")
    fault_server.pause()
    try:
        for call in (lambda: cache.get("k"), lambda: cache.set("k", b"v")):
            start = time.monotonic()
            with pytest.raises(BackendError):
                call()
            assert time.monotonic() - start <= timeout + 0.1
    finally:
        fault_server.resume()
    cache.close()


def test_same_cache_object_works_after_restart(fault_server: RedisServer) -> None:
    cache = RedisCache.from_url(fault_server.url, prefix="f")
    cache.set("before", b"v")
    fault_server.stop()
    with pytest.raises(BackendError):
        cache.get("before")
    fault_server.start()  # same port, empty dataset (save "")
    assert cache.get("before", None) is None
    cache.set("after", b"w")
    assert cache.get("after") == b"w"
    cache.close()


def test_threads_share_one_cache(redis_client: redis.Redis) -> None:
    cache = RedisCache(redis_client, prefix="thr")
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def work(t: int) -> None:
        try:
            barrier.wait()
            for i in range(200):
                cache.set(f"{t}:{i}", f"{t}:{i}".encode())
                assert cache.get(f"{t}:{i}") == f"{t}:{i}".encode()
        except BaseException as exc:  # counted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert redis_client.dbsize() == 1600


# -- Redis Cluster ------------------------------------------------------------------------------


def _keys_per_node(cluster: RedisClusterHarness, pattern: str) -> list[int]:
    counts = []
    for server in cluster.servers:
        with server.client() as c:
            counts.append(sum(1 for _ in c.scan_iter(match=pattern, count=1000)))
    return counts


def test_cluster_batch_ops_span_every_master(
    cluster_client: RedisCluster, redis_cluster: RedisClusterHarness
) -> None:
    cache = RedisCache(cluster_client, prefix="cl")
    items = {f"user:{i}": str(i).encode() for i in range(600)}
    cache.mset(items, ttl=60)
    per_node = _keys_per_node(redis_cluster, "cl:*")
    assert all(n > 0 for n in per_node), per_node  # the keys really live on all three masters
    assert cache.mget(items) == items
    assert cache.mdelete(list(items)[:300]) == 300
    cache.mset(dict(list(items.items())[:10]))  # MSET without TTL across slots
    assert len(cache.mget(items)) == 310


def test_cluster_clear_covers_every_primary(
    cluster_client: RedisCluster, redis_cluster: RedisClusterHarness
) -> None:
    cache = RedisCache(cluster_client, prefix="c*")
    neighbour = RedisCache(cluster_client, prefix="cx")
    cache.mset({f"k{i}": b"v" for i in range(2500)})
    neighbour.mset({f"k{i}": b"v" for i in range(50)})
    assert all(n > 0 for n in _keys_per_node(redis_cluster, "c\\*:*"))
    assert cache.clear() == 2500
    assert _keys_per_node(redis_cluster, "c\\*:*") == [0, 0, 0]
    assert len(neighbour.mget([f"k{i}" for i in range(50)])) == 50


def test_cluster_from_url(redis_cluster: RedisClusterHarness) -> None:
    with RedisCache.from_url(redis_cluster.url, prefix="u", cluster=True) as cache:
        assert cache.is_cluster
        cache.set("k", b"v", ttl=5)
        assert cache.get("k") == b"v"
        with pytest.raises(CacheMiss):
            cache.get("nope")


def test_clear_and_scan_keys_leave_the_librarys_own_keys(redis_client: redis.Redis) -> None:
    from cache_core import RedisBloomFilter
    from cache_core._lease_lock import LeaseLockFactory

    cache = RedisCache(redis_client, prefix="own")
    bloom = RedisBloomFilter(cache, "users", 1000)
    bloom.add("user:1")
    lock = LeaseLockFactory(cache).lock("user:1", 30)
    assert lock.try_acquire()
    cache.mset({"user:1": b"a", "user:2": b"b"})
    assert sorted(cache.scan_keys("*")) == ["user:1", "user:2"]
    assert cache.clear() == 2  # the two entries; not the lock, not the shared filter
    assert "user:1" in bloom
    assert redis_client.get(lock.lock_key) == lock.token.encode()
    assert list(cache.scan_keys("*")) == []


def test_a_write_only_cancels_deletes_that_failed_before_it() -> None:
    pending = PendingDeletes()  # RedisCache's book of deletes owed after an outage
    before = pending.seq  # a write starts here ...
    pending.remember(["k"])  # ... a delete of k fails while it is in flight ...
    pending.forget(["k"], before)  # ... the write lands: it must not cancel that delete
    assert len(pending) == 1
    pending.forget(["k"], pending.seq)  # a write that started after it does
    assert len(pending) == 0


def test_scan_keys_rejects_a_non_str_pattern(redis_client: redis.Redis) -> None:
    with pytest.raises(TypeError, match="match"):
        list(RedisCache(redis_client, prefix="p").scan_keys(b"*"))  # type: ignore[arg-type]

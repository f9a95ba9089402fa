"""Behind Sentinel: no acknowledged write is undone by a failover, and a crash costs ~1 s.

Real processes: one primary, one replica, one sentinel (``tests.redis_harness.SentinelHarness``,
``down-after-milliseconds 1000``). Figures are benchmarked in ``benchmarks/cluster_failover.py``.
"""

from __future__ import annotations

import os
import threading
import time

import pytest

from cache_core import BackendError, RedisCache, default_cache
from cache_core._default import reset_default_cache
from tests.cluster_load import Writers
from tests.conftest import wait_for
from tests.redis_harness import HOST, SentinelHarness


def test_sentinel_url_names_the_primary_and_confirms_writes(
    sentinel_setup: SentinelHarness, unique_prefix: str
) -> None:
    with RedisCache.from_url(sentinel_setup.steady_url, prefix=unique_prefix) as cache:
        guard = cache.sentinel
        assert guard is not None
        assert guard.master == f"{HOST}:{sentinel_setup.master_port()}"
        assert guard.required == 1  # the replica is connected: writes wait for it
        cache.set("k", b"v")
        assert cache.get("k") == b"v"
        assert cache.delete("k") is True
        port = sentinel_setup.master_port()
        replica = next(s for s in sentinel_setup.servers if s.port != port)
        with replica.client() as c:  # WAIT returned only once the replica had it
            assert c.exists(cache.redis_key("k")) == 0


def test_batch_writes_behind_sentinel_reach_the_replica(
    sentinel_setup: SentinelHarness, unique_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CACHE_CORE_URL", sentinel_setup.steady_url)
    monkeypatch.setenv("CACHE_CORE_PREFIX", unique_prefix)
    reset_default_cache()
    try:
        cache = default_cache()
        assert isinstance(cache, RedisCache) and cache.sentinel is not None
        cache.mset({"a": b"1", "b": b"2"})  # MSET
        cache.mset({"c": b"3", "d": b"4"}, ttl=60)  # the Lua script
        cache.mset_with_ttls({"e": (b"5", 60)})
        assert cache.mdelete(["a", "c"]) == 2
        port = sentinel_setup.master_port()
        replica = next(s for s in sentinel_setup.servers if s.port != port)
        with replica.client() as c:  # every write was confirmed by the replica before returning
            got = {k: c.get(cache.redis_key(k)) for k in "abcde"}
        assert got == {"a": None, "b": b"2", "c": None, "d": b"4", "e": b"5"}
        assert cache.sentinel.unconfirmed == 0
    finally:
        reset_default_cache()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_its_own_watcher(
    sentinel_setup: SentinelHarness, unique_prefix: str
) -> None:
    with RedisCache.from_url(sentinel_setup.steady_url, prefix=unique_prefix) as cache:
        cache.set("before", b"1")
        pid = os.fork()
        if pid == 0:  # the child: confirmed writes work and a watcher thread runs again
            code = 1
            try:
                cache.set("child", b"2")
                guard = cache.sentinel
                ok = cache.get("before") == b"1" and guard is not None
                ok = ok and guard._thread is not None and guard._thread.is_alive()
                code = 0 if ok else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert cache.get("child") == b"2"


def test_unknown_service_and_a_redis_port_as_sentinel_are_refused(
    sentinel_setup: SentinelHarness,
) -> None:
    with pytest.raises(ValueError, match="no service named 'nope'"):
        RedisCache.from_url(f"redis+sentinel://{HOST}:{sentinel_setup.sentinel_port}/nope")
    with pytest.raises(ValueError, match="not a Sentinel"):
        RedisCache.from_url(f"redis+sentinel://{HOST}:{sentinel_setup.primary.port}/x")
    with pytest.raises(ValueError, match="is a Redis Sentinel"):
        RedisCache.from_url(f"redis://{HOST}:{sentinel_setup.sentinel_port}/0")


def _demote_old_primary(harness: SentinelHarness, old: int, new: int) -> None:
    """Do now what Sentinel does ~10 s after a planned failover, then wait until healthy."""
    server = harness.server_on(old)
    if server.proc is None:
        server.extra = ("--replicaof", HOST, str(new))
        server.start()
    else:
        with server.client() as c:
            c.execute_command("REPLICAOF", HOST, new)
    harness.restore()


@pytest.mark.slow
def test_planned_failover_undoes_no_acknowledged_delete(
    sentinel_setup: SentinelHarness, unique_prefix: str
) -> None:
    harness = sentinel_setup
    old = harness.master_port()
    assert old is not None
    cache = RedisCache.from_url(harness.url, prefix=unique_prefix)
    writers = Writers(cache)
    with harness.server_on(old).client() as admin:
        writers.prepare(admin)
    try:
        writers.start()
        assert wait_for(lambda: len(writers.acked_deletes) > 200, 10)
        with harness.sentinel() as s:
            s.execute_command("SENTINEL FAILOVER", harness.SERVICE)
        asked = time.monotonic()
        assert wait_for(lambda: harness.master_port() not in (None, old), 15)
        new = harness.master_port()
        switched = time.monotonic()
        assert new is not None
        assert wait_for(lambda: cache.sentinel and cache.sentinel.master.endswith(f":{new}"), 5)
        count = len(writers.acked_deletes)
        assert wait_for(lambda: len(writers.acked_deletes) > count + 200, 10)
        writers.finish()
        cache.exists("x")  # any call replays the deletes that failed during the switch
        assert cache.pending_deletes == 0
        with harness.server_on(new).client() as primary:
            undone = [k for k in writers.acked_deletes if primary.exists(cache.redis_key(k))]
            lost = [k for k in writers.acked_sets if primary.get(cache.redis_key(k)) != b"new"]
            unreplayed = [k for k in writers.failed_deletes if primary.exists(cache.redis_key(k))]
        with harness.server_on(old).client() as former:  # where did the undone ones go?
            on_old = [k for k in undone if not former.exists(cache.redis_key(k))]
    finally:
        writers.finish()
        cache.close()
    print(
        f"\nacknowledged deletes {len(writers.acked_deletes)} (undone {len(undone)}), "
        f"failed deletes {len(writers.failed_deletes)}, acknowledged sets "
        f"{len(writers.acked_sets)} (lost {len(lost)}), failed sets {writers.failed_sets}"
    )
    if writers.failures:
        print(
            f"failover asked at 0, switch seen {switched - asked:.2f}s, writes failed from "
            f"{writers.failures[0][0] - asked:.2f}s to {writers.failures[-1][0] - asked:.2f}s: "
            f"{sorted(set(n for _, n in writers.failures))}"
        )
    _demote_old_primary(harness, old, new)
    assert undone == [], f"{undone} (deleted on the old primary only: {on_old})"
    assert lost == []
    # Known gap (README, "Sentinel"): a delete that *failed* during the switch is replayed, but
    # the replay can still land on the demoted primary and be lost with it (measured: from none
    # to most of the failed ones). Its caller was told it failed; acknowledged deletes are never
    # undone.
    print(f"failed deletes whose replay was lost with the old primary: {len(unreplayed)}")
    with harness.server_on(old).client() as demoted:  # after the resync: still deleted
        assert wait_for(lambda: demoted.info("replication")["master_link_status"] == "up", 10)
        assert not any(demoted.exists(cache.redis_key(k)) for k in writers.acked_deletes[:50])


@pytest.mark.slow
def test_crash_failover_is_back_soon_after_the_switch(
    sentinel_setup: SentinelHarness, unique_prefix: str
) -> None:
    harness = sentinel_setup
    old = harness.master_port()
    assert old is not None
    cache = RedisCache.from_url(harness.url, prefix=unique_prefix)
    successes: list[float] = []
    errors: list[float] = []
    stop = threading.Event()

    def probe(t: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                cache.set(f"p{t}:{i % 50}", b"x")
                cache.get(f"p{t}:{i % 50}")
                successes.append(time.monotonic())
            except BackendError:
                errors.append(time.monotonic())
                stop.wait(0.005)  # a client backs off instead of spinning on a failing call

    workers = [threading.Thread(target=probe, args=(t,), daemon=True) for t in range(3)]
    for w in workers:
        w.start()
    try:
        assert wait_for(lambda: len(successes) > 100, 10)
        harness.server_on(old).kill()
        killed = time.monotonic()
        assert wait_for(lambda: harness.master_port() not in (None, old), 20)
        switched = time.monotonic()
        assert wait_for(lambda: any(t > switched for t in successes), 10)
        # A call in flight at the kill may finish just after it: count from the first failure.
        first_failure = min(t for t in errors if t > killed)
        back = min(t for t in successes if t > first_failure)
        stop.set()
        for w in workers:
            w.join(10)
        new = harness.master_port()
    finally:
        stop.set()
        cache.close()
    print(
        f"\nkill->switch {switched - killed:.2f}s, switch->back {back - switched:+.2f}s, "
        f"errors {len(errors)}"
    )
    assert new is not None
    _demote_old_primary(harness, old, new)
    assert back - switched < 1.5

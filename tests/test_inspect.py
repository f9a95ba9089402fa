"""``python -m cache_core inspect`` against a real Redis (issue 17)."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from typing import Any

import redis

from cache_core import (
    BloomFilter,
    JSONSerializer,
    PickleSerializer,
    ProtectedCache,
    RedisBloomFilter,
    RedisCache,
    TypedCache,
    save_bloom,
)
from cache_core._inspect import format_text, inspect_redis
from cache_core._lease_lock import LeaseLockFactory
from tests.redis_harness import RedisServer

#: What inspect may send: reads of single keys and SCAN pages (never KEYS, never a write).
READ_ONLY = {
    "scan", "eval_ro", "memory|usage", "pttl", "type", "getrange", "time", "get", "bitcount"
}  # fmt: skip


def _commands(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def _populate(client: redis.Redis, prefix: str) -> None:
    cache = RedisCache(client, prefix=prefix)
    plain: TypedCache[Any] = TypedCache(cache, ttl_jitter=0)
    for i in range(20):
        plain.set(f"user:{i}", {"id": i}, ttl=30)  # JSON, < 1 min
    stale: TypedCache[Any] = TypedCache(cache, stale_ttl=60, ttl_jitter=0)
    for i in range(5):
        stale.set(f"meta:{i}", i, ttl=3600)  # JSON + metadata, physical TTL 61 min: 1-24 h
    pickled: TypedCache[Any] = TypedCache(
        cache, serializer=PickleSerializer(b"k" * 32), ttl_jitter=0
    )
    for i in range(3):
        pickled.set(f"pickled:{i}", {i}, ttl=300)  # 1-10 min
    cache.set("raw", b"not an envelope")  # no expiry
    bloom = BloomFilter(100, 0.01)
    bloom.update(["ghost"])
    guard = ProtectedCache(TypedCache(cache, serializer=JSONSerializer()), bloom, null_ttl=900)
    assert guard.get_or_set("ghost", lambda: None) is None  # a tombstone, 10-60 min
    shared = RedisBloomFilter(cache, "ids", 10_000, 0.01)
    shared.update([f"id:{i}" for i in range(2000)])
    save_bloom(cache, "snap", bloom)
    lock = LeaseLockFactory(cache).lock("user:7", 30)
    assert lock.try_acquire()
    nested = RedisCache(client, prefix=prefix + ":sessions")
    nested.set("s1", b"x", ttl=30)  # nested prefixes count like folders
    LeaseLockFactory(nested).lock("s1", 30).try_acquire()
    RedisCache(client, prefix=prefix + "x").set("neighbour", b"y")  # not under prefix:


def test_inspect_reports_counts_ttls_serializers_locks_and_blooms(
    redis_client: redis.Redis, unique_prefix: str
) -> None:
    _populate(redis_client, unique_prefix)
    before = _commands(redis_client)
    report = inspect_redis(redis_client, unique_prefix, url="redis://test")
    used = {k: v - before.get(k, 0) for k, v in _commands(redis_client).items()}
    used = {k: v for k, v in used.items() if v and k not in ("info", "client|no-touch")}
    assert set(used) <= READ_ONLY, used
    assert report.complete
    assert report.keys_seen == report.keys_estimated == 20 + 5 + 3 + 1 + 1 + 1
    assert report.memory_seen_bytes > 30 * 40
    assert report.entries == {
        "JSONSerializer": 20,
        "JSONSerializer + metadata": 5,
        "PickleSerializer": 3,
        "raw": 2,
        "tombstone (JSONSerializer)": 1,
    }
    assert report.ttl == {
        "no expiry": 1,
        "< 1 min": 21,
        "1-10 min": 3,
        "10-60 min": 1,
        "1-24 h": 5,
    }
    assert sorted(lock.key.rsplit("}:", 1)[-1] for lock in report.locks) == ["s1", "user:7"]
    for lock in report.locks:
        assert lock.lease_left_s is not None and 0 < lock.lease_left_s <= 30
        assert lock.age_s is not None and 0 <= lock.age_s <= 5  # taken just now
    (bloom,) = report.blooms
    assert bloom.capacity == 10_000 and bloom.num_hashes == 7
    assert abs(bloom.approx_count - 2000) < 60
    assert 0.1 < bloom.fill_ratio < 0.15 and bloom.estimated_fpr < 1e-5
    assert len(report.snapshots) == 1 and report.snapshots[0].endswith(":ptr")
    text = format_text(report)
    assert "keys:    31" in text and "lease locks held: 2" in text and "fill 1" in text


def test_sample_stops_early_and_estimates_the_totals(
    redis_client: redis.Redis, unique_prefix: str
) -> None:
    script = redis_client.register_script(
        "for i = 1, tonumber(ARGV[2]) do "
        "redis.call('SET', ARGV[1] .. i, 'vvvvvvvvvvvvvvvvvvvv', 'EX', 1200) end"
    )
    script(args=[f"{unique_prefix}:k:", 30_000])
    script(args=["other:k:", 30_000])  # half the keyspace is not ours
    ticks = iter(range(10**6))
    stderr = io.StringIO()
    report = inspect_redis(
        redis_client,
        unique_prefix,
        sample=3000,
        scan_count=500,
        stderr=stderr,
        clock=lambda: float(next(ticks)),  # one "second" per call: progress shows at once
    )
    assert not report.complete and report.keys_seen == 3000
    assert 0.7 * 30_000 < report.keys_estimated < 1.3 * 30_000, report
    per_key = report.memory_seen_bytes / report.keys_seen
    assert report.memory_estimated_bytes == round(report.memory_seen_bytes / report.scan_coverage)
    assert 40 < per_key < 200
    assert report.ttl == {"10-60 min": 3000}
    assert "inspect: sampling:" in stderr.getvalue()
    bounded = inspect_redis(
        redis_client,
        unique_prefix,
        sample=10,
        scan_count=500,
        clock=lambda: float(next(ticks)),
        library_budget=5,  # "seconds" of the ticking clock: a few SCAN pages
    )
    assert 0 < bounded.library_coverage < 0.5
    assert "of the keyspace scanned" in format_text(bounded)


def test_command_line_json_and_text(redis_server: RedisServer, unique_prefix: str) -> None:
    client = redis_server.client()
    try:
        client.flushdb()
        _populate(client, unique_prefix)
    finally:
        client.close()
    base = [sys.executable, "-m", "cache_core", "inspect", "--url", redis_server.url]
    out = subprocess.run(
        [*base, "--prefix", unique_prefix, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    data = json.loads(out.stdout)
    assert data["keys_seen"] == 31 and data["complete"] is True
    assert data["blooms"][0]["capacity"] == 10_000
    text = subprocess.run(
        [*base, "--prefix", unique_prefix, "--sample", "5", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert text.startswith("cache_core inspect redis://") and "keys:    ~" in text
    bad = subprocess.run(
        [*base[:-1], "redis://127.0.0.1:1/0", "--prefix", "x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "ConnectionError" in bad.stderr


def test_lock_age_comes_from_the_token_stamp(redis_client: redis.Redis, unique_prefix: str) -> None:
    seconds, micros = redis_client.time()
    now_ms = seconds * 1000 + micros // 1000
    cache = RedisCache(redis_client, prefix=unique_prefix)
    lock = LeaseLockFactory(cache).lock("old", 60)
    assert lock.try_acquire()
    redis_client.set(lock.lock_key, f"{now_ms - 7500:x}-feedface", px=60_000)  # taken 7.5 s ago
    legacy = LeaseLockFactory(cache).lock("legacy", 60)
    assert legacy.try_acquire()
    redis_client.set(legacy.lock_key, "0123456789abcdef", px=60_000)  # a token without a stamp
    ages = {
        lock.key.rsplit(":", 1)[-1]: lock.age_s
        for lock in inspect_redis(redis_client, unique_prefix).locks
    }
    assert ages["legacy"] is None
    assert ages["old"] is not None and 7.5 <= ages["old"] < 9.5


def test_a_read_only_acl_user_without_scripts_gets_the_same_report(
    redis_server: RedisServer, redis_client: redis.Redis, unique_prefix: str
) -> None:
    """EVAL_RO refused (an ACL user limited to reads): inspect falls back to plain commands."""
    _populate(redis_client, unique_prefix)
    user = f"inspector-{unique_prefix}"
    redis_client.acl_setuser(
        user,
        enabled=True,
        passwords=["+pw"],
        keys=["*"],
        commands=["+@read", "+time", "+memory|usage", "+hello", "+ping"],
    )
    try:
        reader = redis_server.client(username=user, password="pw")
        with contextlib.suppress(redis.ResponseError):
            reader.eval_ro("return 1", 0)
            raise AssertionError("the user should not be allowed to run scripts")
        limited = inspect_redis(reader, unique_prefix)
        reader.close()
    finally:
        redis_client.acl_deluser(user)
    full = inspect_redis(redis_client, unique_prefix)
    assert (limited.keys_seen, limited.entries, limited.ttl) == (
        full.keys_seen,
        full.entries,
        full.ttl,
    )
    assert limited.memory_seen_bytes == full.memory_seen_bytes
    assert len(limited.locks) == 2 and len(limited.blooms) == 1


def test_sampled_runs_bound_the_library_pass_by_default() -> None:
    from cache_core._inspect import SAMPLED_LIBRARY_BUDGET, _budget

    assert _budget(None, 10_000) == SAMPLED_LIBRARY_BUDGET == 1.0
    assert _budget(None, None) is None  # a full run scans everything
    assert _budget(float("inf"), 10_000) is None
    assert _budget(2.5, None) == 2.5

"""Sharing a bloom filter through Redis: bit positions, the live filter, versioned snapshots."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest
import redis
from bitarray import bitarray
from redis.cluster import RedisCluster

from cache_core import (
    BackendError,
    BloomFilter,
    BloomSnapshot,
    CacheMiss,
    RedisBloomFilter,
    RedisCache,
    load_bloom,
    save_bloom,
)
from cache_core._backend import lib
from cache_core._bloom import bit_positions
from cache_core._protocols import BloomTarget
from tests._bloom_helpers import BACKENDS, NATIVE_ONLY, native_usable, other_backend
from tests.redis_harness import RedisServer

KEYS = [f"user:{i}" for i in range(2000)] + ["", "é", b"\x00nul\x00", bytearray(b"ba")]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _peer(backend: str) -> str:
    """The other backend, for interoperability checks.

    With the C core off (not built, or CACHE_CORE_PURE_PYTHON=1) the same backend: the Redis
    layout is still checked against a local filter; cross-backend runs happen where both exist.
    """
    return other_backend(backend) if native_usable() else backend


def local(backend: str, keys: list[Any] = KEYS, capacity: int = 3000, **kw: Any) -> BloomFilter:
    bf = BloomFilter(capacity, 0.01, backend=backend, **kw)
    bf.update(keys)
    return bf


def count_commands(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}


# -- positions ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_positions_set_exactly_the_bits_of_a_local_filter(backend: str) -> None:
    bf = local(backend, seed=7)
    pos = bit_positions(KEYS, bf.num_bits, bf.num_hashes, 7, backend=backend)
    assert len(pos) == len(KEYS) * bf.num_hashes
    bits = bitarray(bf.num_bits, endian="little")
    bits.setall(0)
    for p in pos:
        bits[p] = 1
    assert bits.tobytes() == bf.to_bytes()[-len(bits.tobytes()) :]


@pytest.mark.parametrize("num_bits", [1, 7, 8, 1000, 2**33 + 3, 2**40])
def test_positions_agree_between_backends(num_bits: int) -> None:
    if lib is None or not native_usable():
        pytest.skip("needs the C core (not built, or off: CACHE_CORE_PURE_PYTHON=1)")
    native = bit_positions(KEYS, num_bits, 5, 3, backend="native")
    assert native == bit_positions(KEYS, num_bits, 5, 3, backend="python")
    assert all(0 <= p < num_bits for p in native)


def test_positions_arguments_are_checked() -> None:
    with pytest.raises(TypeError, match="keys"):
        bit_positions("abc", 100, 3, 0)
    with pytest.raises(ValueError, match="num_bits"):
        bit_positions(["a"], 0, 3, 0)
    with pytest.raises(TypeError, match="num_bits"):
        bit_positions(["a"], 1.5, 3, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_hashes"):
        bit_positions(["a"], 100, 0, 0)
    with pytest.raises(TypeError, match="num_hashes"):
        bit_positions(["a"], 100, True, 0)
    with pytest.raises(ValueError, match="seed"):
        bit_positions(["a"], 100, 3, -1)
    with pytest.raises(TypeError, match="key"):
        bit_positions([1], 100, 3, 0)  # type: ignore[list-item]
    assert bit_positions([], 100, 3, 0) == []


@pytest.mark.parametrize("backend", NATIVE_ONLY)
def test_c_positions_refuses_bad_lengths(backend: str) -> None:
    """Every length and offset is checked in C: nothing is written on a refusal."""
    from cache_core._backend import ffi

    buf = b"abcdef"
    ends = ffi.new("uint64_t[]", [3, 6])
    out = ffi.new("uint64_t[]", 8)
    fn = lib.cc_bloom_positions
    assert fn(100, 4, 0, buf, 6, ends, 2, out, 8) == 2
    assert list(out) != [0] * 8
    out2 = ffi.new("uint64_t[]", 8)
    assert fn(100, 4, 0, buf, 6, ends, 2, out2, 7) == lib.CC_EINVAL  # out too small
    assert fn(0, 4, 0, buf, 6, ends, 2, out2, 8) == lib.CC_EINVAL  # nbits 0
    assert fn(2**40 + 1, 4, 0, buf, 6, ends, 2, out2, 8) == lib.CC_EINVAL
    assert fn(100, 0, 0, buf, 6, ends, 2, out2, 8) == lib.CC_EINVAL  # k 0
    assert fn(100, 4097, 0, buf, 6, ends, 2, out2, 8) == lib.CC_EINVAL
    assert fn(100, 2**31, 0, buf, 6, ends, 3, out2, 8) == lib.CC_EINVAL  # nkeys*k overflows
    assert fn(100, 4, 0, buf, 5, ends, 2, out2, 8) == lib.CC_EKEYS  # end beyond the buffer
    bad = ffi.new("uint64_t[]", [4, 3])
    assert fn(100, 4, 0, buf, 6, bad, 2, out2, 8) == lib.CC_EKEYS  # decreasing
    assert fn(100, 4, 0, ffi.NULL, 6, ends, 2, out2, 8) == lib.CC_EINVAL
    assert fn(100, 4, 0, buf, 6, ffi.NULL, 2, out2, 8) == lib.CC_EINVAL
    assert fn(100, 4, 0, buf, 6, ends, 2, ffi.NULL, 8) == lib.CC_EINVAL
    assert list(out2) == [0] * 8
    assert fn(100, 4, 0, ffi.NULL, 0, ffi.NULL, 0, ffi.NULL, 0) == 0


# -- live filter -------------------------------------------------------------------------


@pytest.fixture(params=["redis", "cluster"])
def target(request: pytest.FixtureRequest, unique_prefix: str) -> Any:
    if request.param == "redis":
        return RedisCache(request.getfixturevalue("redis_client"), prefix=unique_prefix)
    return RedisCache(request.getfixturevalue("cluster_client"), prefix=unique_prefix)


@pytest.mark.parametrize("part_bits", [2**26, 1024, 256], ids=["one-part", "parts", "small-parts"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_live_filter_is_byte_identical_to_a_local_one(
    target: Any, backend: str, part_bits: int
) -> None:
    rbf = RedisBloomFilter(target, "ids", 3000, 0.01, backend=backend, part_bits=part_bits)
    rbf.update(KEYS[:1000])
    for key in KEYS[1000:1010]:
        rbf.add(key)
    rbf.update(KEYS[1010:])
    assert all(rbf.contains_many(KEYS))
    assert all(key in rbf for key in KEYS[:50])
    want = local(_peer(backend))
    assert rbf.to_bytes() == want.to_bytes()
    assert rbf.to_local(backend=backend) == want
    absent = [f"absent:{i}" for i in range(2000)]
    fp = sum(rbf.contains_many(absent))
    assert fp == sum(want.contains_many(absent))  # the same false positives, too
    assert fp < 60
    assert abs(rbf.approx_count - want.approx_count) == 0


def test_redis_value_is_the_local_payload(redis_client: redis.Redis) -> None:
    """With one part the Redis string *is* the payload of to_bytes(): no conversion at all."""
    rbf = RedisBloomFilter(redis_client, "raw", 3000, 0.01)
    rbf.update(KEYS)
    bf = local("python")
    assert rbf.params == bf.params
    payload = bf.payload()
    assert payload == bf.to_bytes()[-((rbf.num_bits + 7) // 8) :]
    stored = redis_client.get(rbf.redis_keys[1])
    assert stored is not None
    assert stored.ljust(len(payload), b"\0") == payload
    assert BloomFilter.from_payload(rbf.params, stored.ljust(len(payload), b"\0")) == bf


def test_shared_filters_are_bloom_targets(redis_client: redis.Redis) -> None:
    """What a penetration guard accepts: the local filter, the live one and the snapshot."""
    snap = BloomSnapshot(redis_client, "target")
    snap.save(local("python", KEYS[:10]))
    for bloom in (local("python"), RedisBloomFilter(redis_client, "target", 100), snap):
        assert isinstance(bloom, BloomTarget)


@pytest.mark.parametrize("backend", BACKENDS)
def test_from_local_and_merge_keep_concurrent_adds(target: Any, backend: str) -> None:
    src = local(backend, KEYS[:1000])
    rbf = RedisBloomFilter.from_local(target, "merged", src, part_bits=4096)
    rbf.add("added-live")
    rbf.merge_local(local(_peer(backend), KEYS[1000:]))  # ORs: nothing is overwritten
    want = local(backend)
    want.add("added-live")
    assert rbf.to_local() == want


def test_empty_filter_and_unknown_keys(target: Any) -> None:
    rbf = RedisBloomFilter(target, "empty", 100, 0.01)
    assert "x" not in rbf
    assert rbf.contains_many(["a", "b"]) == [False, False]
    assert rbf.contains_many([]) == []
    rbf.update([])
    assert rbf.to_local() == BloomFilter(100, 0.01)
    assert rbf.approx_count == 0


def test_reopen_with_other_parameters_is_refused(target: Any) -> None:
    RedisBloomFilter(target, "p", 1000, 0.01, seed=1).add("k")
    for kwargs in ({"capacity": 1001}, {"error_rate": 0.02}, {"seed": 2}, {"part_bits": 4096}):
        args = {"capacity": 1000, "error_rate": 0.01, "seed": 1, **kwargs}
        with pytest.raises(ValueError, match="other parameters"):
            RedisBloomFilter(target, "p", **args)
    same = RedisBloomFilter(target, "p", 1000, 0.01, seed=1)
    assert "k" in same
    opened = RedisBloomFilter.open(target, "p")
    assert (opened.capacity, opened.error_rate, opened.seed) == (1000, 0.01, 1)
    assert "k" in opened
    with pytest.raises(CacheMiss):
        RedisBloomFilter.open(target, "never-created")


def test_foreign_meta_is_refused(redis_client: redis.Redis) -> None:
    rbf = RedisBloomFilter(redis_client, "f", 100)
    redis_client.set(rbf.redis_keys[0], b"not json")
    with pytest.raises(ValueError, match="something else"):
        RedisBloomFilter(redis_client, "f", 100)


def test_delete_removes_every_key(target: Any) -> None:
    rbf = RedisBloomFilter(target, "d", 3000, part_bits=1024)
    rbf.update(KEYS)
    assert rbf.delete()
    assert not any(target.client.exists(k) for k in rbf.redis_keys)
    assert not rbf.delete()


def test_keys_share_one_slot(cluster_client: RedisCluster) -> None:
    from redis.crc import key_slot

    rbf = RedisBloomFilter(RedisCache(cluster_client, prefix="app"), "users", 5000, part_bits=8)
    snap = BloomSnapshot(RedisCache(cluster_client, prefix="app"), "users{x}", chunk_size=10)
    slots = {key_slot(k.encode()) for k in rbf.redis_keys}
    assert len(slots) == 1
    assert len({key_slot(k.encode()) for k in [snap.pointer_key, *snap.chunk_keys("v", 9)]}) == 1
    with pytest.raises(ValueError, match="slot"):
        RedisBloomFilter(RedisCache(cluster_client, prefix="a{}"), "users", 10)


def test_namespaced_by_the_cache_prefix(redis_client: redis.Redis) -> None:
    a = RedisBloomFilter(RedisCache(redis_client, prefix="a"), "ids", 100)
    b = RedisBloomFilter(RedisCache(redis_client, prefix="b"), "ids", 100)
    a.add("only-in-a")
    assert "only-in-a" not in b
    assert all(k.startswith("a:") for k in a.redis_keys)


def _run_child(code: str, url: str, *extra_env: tuple[str, str]) -> str:
    env = {**os.environ, **dict(extra_env)}
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), url],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("child_pure", [False, True], ids=["child-native", "child-python"])
def test_live_filter_shared_between_processes(
    redis_server: RedisServer, redis_client: redis.Redis, child_pure: bool
) -> None:
    """Another process adds; this one sees the key at once (and the reverse)."""
    here = RedisBloomFilter(RedisCache(redis_client, prefix="x"), "ids", 5000, part_bits=4096)
    here.add("from-parent")
    code = """
        import sys, redis
        from cache_core import RedisBloomFilter, RedisCache, NATIVE
        cache = RedisCache(redis.Redis.from_url(sys.argv[1]), prefix="x")
        bf = RedisBloomFilter.open(cache, "ids")
        assert "from-parent" in bf
        bf.update(["from-child", "also-from-child"])
        print(NATIVE)
    """
    env = ("CACHE_CORE_PURE_PYTHON", "1" if child_pure else "0")
    assert _run_child(code, redis_server.url, env).strip() == str(not child_pure and bool(lib))
    assert "from-child" in here
    assert here.contains_many(["also-from-child", "never"]) == [True, False]


def test_live_filter_redis_errors_are_backend_errors(fault_server: RedisServer) -> None:
    cache = RedisCache.from_url(fault_server.url, prefix="f")
    rbf = RedisBloomFilter(cache, "ids", 100)
    fault_server.stop()
    try:
        for op in (
            lambda: rbf.add("a"),
            lambda: "a" in rbf,
            lambda: rbf.contains_many(["a"]),
            rbf.to_local,
            lambda: RedisBloomFilter(cache, "ids2", 100),
        ):
            with pytest.raises(BackendError):
                op()
    finally:
        fault_server.start()
        cache.close()


def test_live_filter_arguments_are_checked(redis_client: redis.Redis) -> None:
    with pytest.raises(TypeError, match="target"):
        RedisBloomFilter("redis://x", "n", 10)
    with pytest.raises(TypeError, match="name"):
        RedisBloomFilter(redis_client, 5, 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        RedisBloomFilter(redis_client, "", 10)
    with pytest.raises(ValueError, match="capacity"):
        RedisBloomFilter(redis_client, "n", 0)
    with pytest.raises(TypeError, match="capacity"):
        RedisBloomFilter(redis_client, "n", "10")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="error_rate"):
        RedisBloomFilter(redis_client, "n", 10, 1.5)
    with pytest.raises(ValueError, match="seed"):
        RedisBloomFilter(redis_client, "n", 10, seed=-1)
    with pytest.raises(ValueError, match="part_bits"):
        RedisBloomFilter(redis_client, "n", 10, part_bits=12)
    with pytest.raises(ValueError, match="part_bits"):
        RedisBloomFilter(redis_client, "n", 10, part_bits=2**33)
    with pytest.raises(TypeError, match="part_bits"):
        RedisBloomFilter(redis_client, "n", 10, part_bits=8.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="backend"):
        RedisBloomFilter(redis_client, "n", 10, backend="rust")
    with pytest.raises(ValueError, match="decode_responses"):
        RedisBloomFilter(redis.Redis(decode_responses=True), "n", 10)
    rbf = RedisBloomFilter(redis_client, "n", 10)
    with pytest.raises(TypeError, match="keys"):
        rbf.update("abc")
    with pytest.raises(TypeError, match="key"):
        rbf.add(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bf"):
        rbf.merge_local({"a"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="differ"):
        rbf.merge_local(BloomFilter(11))


# -- snapshots ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_snapshot_round_trip_between_backends(target: Any, backend: str) -> None:
    bf = local(backend)
    version = save_bloom(target, "snap", bf, chunk_size=1000)
    loaded = load_bloom(target, "snap", backend=_peer(backend))
    assert loaded.backend == _peer(backend)
    assert loaded.to_bytes() == bf.to_bytes()
    snap = BloomSnapshot(target, "snap")
    snap.load()
    assert snap.version == version


def test_snapshot_is_chunked(redis_client: redis.Redis) -> None:
    bf = BloomFilter(1_000_000, 0.01)  # ~1.2 MB: two 1 MiB chunks by default
    bf.update([f"k{i}" for i in range(1000)])
    snap = BloomSnapshot(redis_client, "big")
    version = snap.save(bf)
    size = len(bf.to_bytes())
    keys = snap.chunk_keys(version, 2)
    lengths = [redis_client.strlen(k) for k in keys]
    assert lengths == [2**20, size - 2**20]
    assert redis_client.get(snap.pointer_key) == f"ccbs1 {version} 2 {size} {2**20}".encode()
    assert all(redis_client.pttl(k) == -1 for k in keys)  # published: no pending TTL left
    assert load_bloom(redis_client, "big") == bf


def test_refresh_if_changed_costs_one_get_when_unchanged(redis_client: redis.Redis) -> None:
    BloomSnapshot(redis_client, "s").save(local("python"))
    reader = BloomSnapshot(redis_client, "s")
    assert reader.refresh_if_changed()
    redis_client.config_resetstat()
    for _ in range(5):
        assert not reader.refresh_if_changed()
    counts = count_commands(redis_client)
    counts.pop("config|resetstat", None)
    counts.pop("info", None)
    assert counts == {"get": 5}


def test_old_version_expires_after_the_switch(redis_client: redis.Redis) -> None:
    snap = BloomSnapshot(redis_client, "s", chunk_size=500, old_version_ttl=30)
    v1 = snap.save(local("python"))
    n = -(-len(local("python").to_bytes()) // 500)
    v2 = snap.save(local("python", KEYS[:10]))
    assert v1 != v2
    old = [redis_client.pttl(k) for k in snap.chunk_keys(v1, n)]
    assert all(0 < p <= 30_000 for p in old)
    assert BloomSnapshot(redis_client, "s").load() == local("python", KEYS[:10])


def test_snapshot_shared_between_processes(redis_server: RedisServer) -> None:
    client = redis_server.client()
    reader = BloomSnapshot(RedisCache(client, prefix="app"), "ids", backend="python")
    reader.save(local("python", ["before"]))
    assert not reader.refresh_if_changed()  # its own save is already current
    code = """
        import sys, redis
        from cache_core import BloomFilter, BloomSnapshot, RedisCache
        snap = BloomSnapshot(RedisCache(redis.Redis.from_url(sys.argv[1]), prefix="app"), "ids")
        bf = snap.load()
        assert "before" in bf
        bf.add("from-child")
        print(snap.save(bf))
    """
    version = _run_child(code, redis_server.url).strip()
    assert "from-child" not in reader
    assert reader.refresh_if_changed()
    assert reader.version == version
    assert "from-child" in reader and "before" in reader
    assert not reader.refresh_if_changed()
    client.close()


@pytest.mark.parametrize(
    "damage", ["flip-byte", "truncate-chunk", "drop-chunk", "extra-bytes", "bad-pointer"]
)
def test_damaged_snapshot_raises_and_keeps_the_current_filter(
    redis_client: redis.Redis, damage: str
) -> None:
    writer = BloomSnapshot(redis_client, "s", chunk_size=1000)
    reader = BloomSnapshot(redis_client, "s")
    good = local("python", KEYS[:100])
    writer.save(good)
    reader.load()
    newer = local("python")
    version = writer.save(newer)
    n = -(-len(newer.to_bytes()) // 1000)
    keys = writer.chunk_keys(version, n)
    if damage == "flip-byte":
        chunk = bytearray(redis_client.get(keys[1]) or b"")
        chunk[10] ^= 0xFF
        redis_client.set(keys[1], bytes(chunk))
    elif damage == "truncate-chunk":
        redis_client.set(keys[-1], (redis_client.get(keys[-1]) or b"")[:-3])
    elif damage == "drop-chunk":
        redis_client.delete(keys[0])
    elif damage == "extra-bytes":
        redis_client.append(keys[-1], b"xx")
    else:
        redis_client.set(writer.pointer_key, b"ccbs1 zz 1")
    old_version = reader.version
    with pytest.raises(ValueError):
        reader.refresh_if_changed()
    assert reader.filter == good
    assert reader.version == old_version
    with pytest.raises(ValueError):
        BloomSnapshot(redis_client, "s").load()


def test_a_version_retired_mid_read_is_followed_to_the_new_one(redis_client: redis.Redis) -> None:
    writer = BloomSnapshot(redis_client, "s", chunk_size=1000)
    writer.save(local("python", ["v1"]))
    stale_pointer = redis_client.get(writer.pointer_key)
    assert stale_pointer is not None
    writer.save(local("python", ["v2"]))
    for key in redis_client.scan_iter(match="*:v:*"):  # v1's grace period is over
        if key.decode().split(":v:")[1].split(":")[0] in stale_pointer.decode():
            redis_client.delete(key)
    reader = BloomSnapshot(redis_client, "s")
    bf, _ = reader._fetch(stale_pointer)  # it read the old pointer just before the switch
    assert "v2" in bf


def test_local_adds_survive_a_refresh(redis_client: redis.Redis) -> None:
    writer = BloomSnapshot(redis_client, "s")
    writer.save(local("python", ["a"]))
    reader = BloomSnapshot(redis_client, "s")
    reader.load()
    reader.add("set-here")
    reader.update(["set-here-too"])
    writer.save(local("python", ["b"]))
    assert reader.refresh_if_changed()
    assert reader.contains_many(["a", "b", "set-here", "set-here-too"]) == [
        False, True, True, True
    ]  # fmt: skip


def test_local_adds_kept_for_refresh_are_bounded(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from cache_core import _bloom_snapshot

    monkeypatch.setattr(_bloom_snapshot, "MAX_LOCAL_ADDS", 5)
    writer = BloomSnapshot(redis_client, "cap")
    writer.save(local("python", ["a"]))
    reader = BloomSnapshot(redis_client, "cap")
    reader.load()
    with caplog.at_level("WARNING", logger="cache_core"):
        reader.update([f"k{i}" for i in range(4)])
        reader.update([f"k{i}" for i in range(4, 10)])
        reader.add("k10")
    assert len(reader._local_adds) == 5
    assert caplog.text.count("unsaved local adds") == 1  # warned once, not per add
    assert all(f"k{i}" in reader for i in range(11))  # the current filter has them all


def test_snapshot_errors(redis_client: redis.Redis, fault_server: RedisServer) -> None:
    snap = BloomSnapshot(redis_client, "none")
    with pytest.raises(CacheMiss):
        snap.load()
    assert not snap.refresh_if_changed()
    with pytest.raises(RuntimeError, match="load"):
        _ = "x" in snap
    with pytest.raises(ValueError, match="nothing to save"):
        snap.save()
    with pytest.raises(TypeError, match="bf"):
        snap.save({"a"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="chunk_size"):
        BloomSnapshot(redis_client, "s", chunk_size=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk_size"):
        BloomSnapshot(redis_client, "s", chunk_size=0)
    with pytest.raises(ValueError, match="old_version_ttl"):
        BloomSnapshot(redis_client, "s", old_version_ttl=0)
    with pytest.raises(TypeError, match="old_version_ttl"):
        BloomSnapshot(redis_client, "s", old_version_ttl=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="target"):
        BloomSnapshot(object(), "s")
    with pytest.raises(ValueError, match="name"):
        BloomSnapshot(redis_client, "")
    cache = RedisCache.from_url(fault_server.url, prefix="f")
    dead = BloomSnapshot(cache, "s")
    fault_server.stop()
    try:
        with pytest.raises(BackendError):
            dead.save(local("python", ["a"]))
        with pytest.raises(BackendError):
            dead.refresh_if_changed()
    finally:
        fault_server.start()
        cache.close()

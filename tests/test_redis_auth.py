"""Password- and ACL-protected Redis through ``RedisCache.from_url`` (issue 8).

One private redis-server with ``--requirepass`` and two ACL users restricted to the ``app:*``
keys. What the library sends (read from ``INFO commandstats`` over the whole surface, the
distributed lock included), which is what a restricted user must be allowed:

* connection: ``HELLO`` (redis-py negotiates the protocol; AUTH rides on it);
* Cache / BatchCache: ``GET SET MGET MSET UNLINK EXISTS PTTL SCAN`` (PTTL: the multi-level
  cache's promotion; SCAN + UNLINK: ``clear``);
* ``TypedCache(distributed_lock=True)``: ``EVALSHA`` and ``SCRIPT|LOAD`` (redis-py's Script
  falls back to SCRIPT LOAD on NOSCRIPT), ``BLPOP`` for followers, and inside the Lua scripts
  ``SET GET DEL INCR PEXPIRE RPUSH EXISTS`` (Redis checks script calls against the ACL too).

``tight`` below is exactly that list; the test passing under it documents it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from cache_core import BackendError, CacheMiss, MemoryCache, MultiLevelCache, RedisCache, TypedCache
from tests.redis_harness import HOST, RedisServer, _wait_until

PASSWORD = "s3cret"
CACHE_COMMANDS = "+hello +get +set +mget +mset +unlink +exists +pttl +scan"
LOCK_COMMANDS = "+evalsha +script|load +blpop +del +incr +pexpire +rpush"
USERS = {
    # The suggestion: every command but the dangerous ones, keys under app:* only.
    "broad": ("cacheuser", "pw", "~app:* &* +@all -@dangerous"),
    # Only what the library sends (see the module docstring).
    "tight": ("tightuser", "pw2", f"~app:* resetchannels -@all {CACHE_COMMANDS} {LOCK_COMMANDS}"),
}


class PasswordRedisServer(RedisServer):
    """A RedisServer whose readiness ping and admin clients authenticate."""

    password = PASSWORD

    def _ping(self) -> bool:
        try:
            with redis.Redis(
                host=HOST, port=self.port, password=self.password, socket_timeout=0.5
            ) as c:
                return bool(c.ping())
        except redis.RedisError:
            return False

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.port, password=self.password, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PasswordRedisServer]:
    workdir: Path = tmp_path_factory.mktemp("redis-auth")
    server = PasswordRedisServer(workdir, extra=("--requirepass", PASSWORD))
    server.start()
    with server.client() as admin:
        for name, secret, rules in USERS.values():
            admin.execute_command(
                "ACL", "SETUSER", name, "reset", "on", f">{secret}", *rules.split()
            )
    yield server
    server.stop()


@pytest.fixture
def admin(auth_server: PasswordRedisServer) -> Iterator[redis.Redis]:
    client = auth_server.client()
    client.flushdb()
    client.execute_command("ACL", "LOG", "RESET")
    yield client
    client.close()


def _url(server: RedisServer, userinfo: str) -> str:
    return f"redis://{userinfo}@{HOST}:{server.port}/0"


def _acl_denials(admin: redis.Redis) -> int:
    """How many commands the server refused for ACL reasons since the log was reset."""
    return sum(int(entry[b"count"]) for entry in admin.execute_command("ACL", "LOG"))


def _exercise_surface(cache: RedisCache, admin: redis.Redis, kp: str) -> None:
    """Every Cache / BatchCache call, checked against what Redis actually holds."""
    cache.set("k1", b"v1")
    cache.set("k2", b"v2", ttl=30)
    assert cache.get("k1") == b"v1"
    assert admin.get(kp + "k1") == b"v1"
    assert 0 < admin.pttl(kp + "k2") <= 30_000
    assert cache.exists("k1") and not cache.exists("nope")
    with pytest.raises(CacheMiss):
        cache.get("nope")
    assert cache.get("nope", b"d") == b"d"
    assert cache.mget(["k1", "k2", "nope"]) == {"k1": b"v1", "k2": b"v2"}
    cache.mset({"m1": b"1", "m2": b"2"})
    cache.mset({"t1": b"x", "t2": b"y"}, ttl=0.5)
    assert admin.pttl(kp + "m1") == -1
    assert 0 < admin.pttl(kp + "t1") <= 500
    assert cache.mget(["m1", "m2", "t1", "t2"]) == {"m1": b"1", "m2": b"2", "t1": b"x", "t2": b"y"}
    assert cache.get_with_ttl("k2") is not None
    assert set(cache.mget_with_ttl(["k1", "k2"])) == {"k1", "k2"}
    assert cache.delete("k1") is True and cache.delete("k1") is False
    assert cache.mdelete(["m1", "m2", "nope"]) == 2
    assert cache.clear() == 3  # k2, t1, t2
    assert cache.mget(["k2", "t1", "t2"]) == {}


# ------------------------------------------------------------------------------ requirepass


def test_requirepass_url_works_for_the_whole_surface(
    auth_server: PasswordRedisServer, admin: redis.Redis
) -> None:
    with RedisCache.from_url(_url(auth_server, f":{PASSWORD}"), prefix="pw") as cache:
        _exercise_surface(cache, admin, "pw:")
        # The multi-level cache's promotion path (GET + PTTL pipeline) authenticates too.
        # (Invalidation off: the invalidation of this direct write could drop the promotion.)
        ml = MultiLevelCache(MemoryCache(), cache, l1_ttl=5, invalidation=False)
        cache.set("p", b"promoted", ttl=10)
        assert ml.get("p") == b"promoted" and ml.l1.get("p") == b"promoted"
        # The invalidation listener's own connection authenticates too.
        listening = MultiLevelCache(MemoryCache(), cache, l1_ttl=5)
        assert listening.l1_trusted
        listening.close()


@pytest.mark.parametrize(
    ("userinfo", "what"),
    [(":wrong", "wrong password"), ("", "no password"), ("cacheuser:nope", "wrong user password")],
)
def test_bad_credentials_fail_fast_with_a_clear_backend_error(
    auth_server: PasswordRedisServer, admin: redis.Redis, userinfo: str, what: str
) -> None:
    url = _url(auth_server, userinfo) if userinfo else auth_server.url
    admin.set("pw:k", b"secret value")
    with RedisCache.from_url(url, prefix="pw") as cache:
        for op in (
            lambda: cache.get("k"),
            lambda: cache.set("k", b"v"),
            lambda: cache.mget(["k"]),
            cache.clear,
        ):
            start = time.monotonic()
            with pytest.raises(BackendError, match=r"(?i)authenticat") as info:
                op()
            elapsed = time.monotonic() - start
            assert elapsed < 1.0, f"{what}: took {elapsed:.2f}s"
            assert isinstance(info.value.__cause__, redis.AuthenticationError), what
    assert admin.get("pw:k") == b"secret value"  # nothing written or cleared


def test_typed_cache_over_a_wrong_password_answers_from_the_loader(
    auth_server: PasswordRedisServer, admin: redis.Redis
) -> None:
    with RedisCache.from_url(_url(auth_server, ":wrong"), prefix="pw") as cache:
        typed: TypedCache[int] = TypedCache(cache)
        calls = []
        assert typed.get_or_set("k", lambda: calls.append(1) or 7) == 7
        assert calls == [1]
        # the read and the store (nothing was stored meanwhile, so no re-check read)
        assert typed.stats().backend_errors == 2
        with pytest.raises(BackendError):
            typed.get("k")


# ------------------------------------------------------------------------------ ACL users


@pytest.fixture(params=sorted(USERS))
def acl_user(request: pytest.FixtureRequest) -> tuple[str, str]:
    name, secret, _ = USERS[request.param]
    return name, secret


def test_acl_user_works_inside_its_key_pattern(
    auth_server: PasswordRedisServer, admin: redis.Redis, acl_user: tuple[str, str]
) -> None:
    name, secret = acl_user
    neighbours = {"other:k": b"1", "appx:k": b"2", "app": b"3", "ap:k": b"4"}
    admin.mset(neighbours)
    with RedisCache.from_url(_url(auth_server, f"{name}:{secret}"), prefix="app") as cache:
        _exercise_surface(cache, admin, "app:")
        assert name in {c["user"] for c in admin.client_list()}  # really connected as the user
        cache.set("again", b"1")
        assert cache.clear() == 1
    # clear() touched app:* only.
    assert {k: admin.get(k) for k in neighbours} == neighbours
    assert _acl_denials(admin) == 0


def test_acl_user_outside_its_key_pattern_gets_noperm(
    auth_server: PasswordRedisServer, admin: redis.Redis, acl_user: tuple[str, str]
) -> None:
    name, secret = acl_user
    admin.set("other:k", b"theirs")
    with RedisCache.from_url(_url(auth_server, f"{name}:{secret}"), prefix="other") as cache:
        for op in (
            lambda: cache.get("k"),
            lambda: cache.set("k", b"mine"),
            lambda: cache.set("k", b"mine", ttl=5),
            lambda: cache.delete("k"),
            lambda: cache.exists("k"),
            lambda: cache.mget(["k"]),
            lambda: cache.mset({"k": b"mine"}),
            lambda: cache.mdelete(["k"]),
            cache.clear,  # SCAN lists the key (ACL does not filter SCAN), UNLINK is refused
        ):
            start = time.monotonic()
            with pytest.raises(BackendError, match="NoPermissionError") as info:
                op()
            assert time.monotonic() - start < 1.0
            assert isinstance(info.value.__cause__, redis.exceptions.NoPermissionError)
    assert admin.get("other:k") == b"theirs"
    assert _acl_denials(admin) == 9


def test_distributed_lock_under_the_acl_user(
    auth_server: PasswordRedisServer, admin: redis.Redis, acl_user: tuple[str, str]
) -> None:
    """Leader and follower (two caches = two processes' worth of state) under the ACL user.

    The follower registers in Redis and blocks in BLPOP; the leader's release wakes it and it
    returns the leader's value without running its own loader.
    """
    name, secret = acl_user
    url = _url(auth_server, f"{name}:{secret}")
    with RedisCache.from_url(url, prefix="app") as c1, RedisCache.from_url(url, prefix="app") as c2:
        leader: TypedCache[int] = TypedCache(c1, distributed_lock=True, lock_timeout=5)
        follower: TypedCache[int] = TypedCache(c2, distributed_lock=True, lock_timeout=5)
        in_loader = threading.Event()
        go = threading.Event()
        follower_calls: list[int] = []
        results: dict[str, object] = {}

        def slow_loader() -> int:
            in_loader.set()
            assert go.wait(5)
            return 42

        def run(name: str, cache: TypedCache[int], fn: object) -> None:
            try:
                results[name] = cache.get_or_set("k", fn, ttl=30)  # type: ignore[arg-type]
            except BaseException as exc:  # reported below
                results[name] = exc

        t1 = threading.Thread(target=run, args=("leader", leader, slow_loader))
        t1.start()
        assert in_loader.wait(5)
        lock_keys = admin.keys("app:__cc_lock__:*")
        assert len(lock_keys) == 1, lock_keys
        t2 = threading.Thread(
            target=run, args=("follower", follower, lambda: follower_calls.append(1) or -1)
        )
        t2.start()
        # The follower lives in "another process": its readiness is a counter in Redis.
        waiters = admin.keys("app:__cc_waiters__:*")
        _wait_until(
            lambda: (ks := admin.keys("app:__cc_waiters__:*")) and admin.get(ks[0]) == b"1",
            5,
            f"the follower to register ({waiters})",
        )
        go.set()
        t1.join(10)
        t2.join(10)
        assert results == {"leader": 42, "follower": 42}
        assert follower_calls == []
        assert follower.stats().lock_waits == 1
        assert admin.keys("app:__cc_lock__:*") == []
        assert [k for k in admin.keys("*") if not k.startswith(b"app:")] == []
    assert _acl_denials(admin) == 0

"""Build the redis-py client a URL asks for, and refuse or flag a misconfiguration at once.

A wrong URL must not degrade silently to the loader. ``check_server`` asks the server who it
is (one ``HELLO`` without arguments: it changes nothing and any ACL user may run it) when a
plain client is built:

- a Redis Cluster node behind a ``redis://`` URL, or a Sentinel port given as a Redis URL:
  ``ValueError`` naming the URL to write instead;
- a database number the server does not have: ``ValueError``;
- something that answers but does not speak Redis: ``ValueError``;
- nothing answers (refused, timeout) or the credentials are refused: one WARNING naming what to
  check; the cache is built (Redis may simply not be up yet) and its calls fail fast through
  the breaker.
"""

from __future__ import annotations

import logging
from typing import Any, Final, NamedTuple

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import (
    AuthenticationError,
    InvalidResponse,
    RedisClusterException,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.sentinel import Sentinel

from ._redis_dispatch import REDIS_ERRORS, wrap_redis_error
from ._sentinel import PinningSentinelPool, SentinelGuard
from ._urls import Target, parse_url

__all__ = [
    "FROM_URL_DEFAULTS",
    "Connected",
    "build_client",
    "check_client",
    "check_server",
    "connect_url",
]

log = logging.getLogger("cache_core")

#: Client settings used by ``RedisCache.from_url``: redis-py's defaults (5 s timeouts, 3 retries
#: with backoff) turn one call against a dead Redis into seconds. One retry, on connection errors
#: only, lets a pooled connection that a server restart broke reconnect transparently; a timeout
#: is not retried, so a paused server costs one ``socket_timeout``.
FROM_URL_DEFAULTS: Final[dict[str, Any]] = {
    "socket_timeout": 0.25,
    "socket_connect_timeout": 0.25,
}


class Connected(NamedTuple):
    """What ``connect_url`` built: the client, the Sentinel guard (if any), and where it
    points (host and port, credentials left out: for the default breaker's name)."""

    client: redis.Redis | RedisCluster
    guard: SentinelGuard | None
    where: str


def check_client(client: object) -> redis.Redis | RedisCluster:
    """``client`` if a byte cache can use it, else TypeError / ValueError naming ``client``."""
    if not isinstance(client, redis.Redis | RedisCluster):
        raise TypeError(
            f"client must be a redis.Redis or redis.cluster.RedisCluster, "
            f"not {type(client).__name__}"
        )
    if client.get_connection_kwargs().get("decode_responses"):
        raise ValueError(
            "client must be built with decode_responses=False: cached values are bytes"
        )
    return client


def connect_url(url: str, *, cluster: bool, client_kwargs: dict[str, Any]) -> Connected:
    """The client for a URL (see ``RedisCache.from_url``), the caller's keywords over ours.

    A bad URL or a misconfiguration is a ``ValueError``; a Redis error while connecting (the
    cluster's seeds) a ``BackendError``.
    """
    target = parse_url(url)
    if cluster and target.kind == "sentinel":
        raise ValueError("cluster=True does not go with a redis+sentinel:// URL")
    if cluster and target.kind == "redis":
        scheme, rest = url.split("://", 1)
        if scheme.lower() == "unix":
            raise ValueError("cluster=True needs a redis:// or rediss:// URL, not unix://")
        target = parse_url(f"{scheme}+cluster://{rest}")
    retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
    kwargs: dict[str, Any] = {**FROM_URL_DEFAULTS, "retry": retry}
    kwargs.update(client_kwargs)
    try:
        client, guard = build_client(target, kwargs)
    except ValueError:
        raise
    except REDIS_ERRORS as exc:
        raise wrap_redis_error("connect", exc) from exc
    where = target.display.rsplit("@", 1)[-1].split("://", 1)[-1]
    return Connected(client, guard, where)


def build_client(
    target: Target, kwargs: dict[str, Any]
) -> tuple[redis.Redis | RedisCluster, SentinelGuard | None]:
    """The client for ``target``, with ``kwargs`` (defaults, then the caller's) applied."""
    if target.kind == "redis":
        client = redis.Redis.from_url(target.plain_url, **kwargs)
        check_server(client, target.display)
        return client, None
    if target.kind == "cluster":
        options = {**target.client_kwargs, **kwargs}
        options.setdefault("require_full_coverage", False)
        node: Any = ClusterNode
        seeds = [node(host, port) for host, port in target.hosts]
        try:
            return RedisCluster(startup_nodes=seeds, **options), None
        except RedisClusterException as exc:
            if "cluster mode is not enabled" in str(exc).lower():
                raise ValueError(
                    f"{target.display} is not a Redis Cluster (cluster mode is disabled on the "
                    "node); for a single server write redis://host:port/db"
                ) from exc
            raise
    options = {**target.client_kwargs, **kwargs}
    sentinel_kwargs = {**target.sentinel_kwargs}
    for name in ("socket_timeout", "socket_connect_timeout"):
        if name in options:
            sentinel_kwargs.setdefault(name, options[name])
    make_sentinel: Any = Sentinel
    sentinel = make_sentinel(list(target.hosts), sentinel_kwargs=sentinel_kwargs)
    _check_sentinels(sentinel, target)
    client = sentinel.master_for(
        target.service,
        redis_class=redis.Redis,
        connection_pool_class=PinningSentinelPool,
        **options,
    )
    # WAIT is answered only after its timeout when a replica lags: keep it well inside the
    # socket timeout, or the confirmation itself reads as an outage.
    ack = target.replica_ack_timeout
    socket_timeout = options.get("socket_timeout")
    if isinstance(socket_timeout, int | float) and socket_timeout > 0:
        ack = min(ack, max(0.01, float(socket_timeout) * 0.6))
    guard = SentinelGuard(sentinel, target.service, client, ack_timeout=ack)
    return client, guard


def _check_sentinels(sentinel: Sentinel, target: Target) -> None:
    """Refuse a Sentinel URL whose hosts are Redis servers or whose service is unknown."""
    answered = False
    for node in sentinel.sentinels:
        try:
            masters: Any = node.sentinel_masters()
        except ResponseError as exc:
            raise ValueError(
                f"{target.display}: {node.connection_pool.connection_kwargs.get('host')}:"
                f"{node.connection_pool.connection_kwargs.get('port')} is not a Sentinel "
                f"({exc}); for a single server write redis://host:port/db"
            ) from exc
        except RedisError:
            continue
        answered = True
        if target.service in masters:
            return
        known = ", ".join(sorted(masters)) or "none"
        raise ValueError(
            f"{target.display}: Sentinel monitors no service named {target.service!r} "
            f"(it monitors: {known})"
        )
    if not answered:
        log.warning(
            "cache_core: no sentinel of %s answers; check the hosts and ports (calls fail "
            "until one does)",
            target.display,
        )


def check_server(client: redis.Redis, display: str) -> None:
    """Ask a plain client's server who it is; refuse a cluster node, a sentinel or a bad db."""
    try:
        info = _hello(client)
    except ResponseError as exc:
        text = str(exc)
        if "DB index is out of range" in text or "invalid DB index" in text:
            db = client.get_connection_kwargs().get("db")
            raise ValueError(
                f"{display}: the server has no database {db} (DB index is out of range); use a "
                "db number below its `databases` setting (default 16)"
            ) from exc
        # A user without HELLO (NoPermissionError), a server older than 6: nothing to learn.
        log.debug("cache_core: %s refused HELLO at construction: %s", display, text)
        return
    except AuthenticationError as exc:
        log.warning(
            "cache_core: %s refused the credentials (%s); check the user and password in the URL",
            display,
            exc,
        )
        return
    except InvalidResponse as exc:
        raise ValueError(
            f"{display} answered something that is not the Redis protocol ({exc}); check the port"
        ) from exc
    except RedisTimeoutError as exc:
        log.warning(
            "cache_core: %s did not answer within the socket timeout (%s); check the host and "
            "port (is this a Redis port?) - calls fail fast through the breaker until it answers",
            display,
            exc,
        )
        return
    except RedisConnectionError as exc:
        if "protocol" in str(exc).lower():
            raise ValueError(
                f"{display} does not speak the Redis protocol ({exc}); check the port"
            ) from exc
        log.warning(
            "cache_core: cannot reach %s (%s); check the host and port - the cache is built and "
            "its calls fail fast through the breaker until Redis answers",
            display,
            exc,
        )
        return
    mode = info.get("mode", "standalone")
    if mode == "cluster":
        raise ValueError(
            f"{display} is a Redis Cluster node; a plain client would get MOVED for most keys. "
            f"Write redis+cluster://host:port (several seeds: redis+cluster://h1:p1,h2:p2)"
        )
    if mode == "sentinel":
        raise ValueError(
            f"{display} is a Redis Sentinel, not a Redis server. Write "
            "redis+sentinel://host:port/service_name[/db]"
        )


def _hello(client: redis.Redis) -> dict[str, str]:
    """The server's ``HELLO`` map (``mode``: standalone, cluster or sentinel), as text."""
    raw: Any = client.execute_command("HELLO")  # type: ignore[no-untyped-call]
    if isinstance(raw, list):
        raw = dict(zip(raw[::2], raw[1::2], strict=False))
    out: dict[str, str] = {}
    for key, value in dict(raw).items():
        k = key.decode() if isinstance(key, bytes) else str(key)
        out[k] = value.decode() if isinstance(value, bytes) else str(value)
    return out

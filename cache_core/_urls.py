"""Redis URLs a user would write, parsed once and checked before any client is built.

Grammar (``[...]`` optional; every form takes ``?name=value&...`` options)::

    redis://[user:password@]host[:port][/db]          one server (TLS: rediss://)
    unix://[user:password@]/path/to/redis.sock[?db=N]  one server on a Unix socket
    redis+cluster://[user:password@]h1:p1[,h2:p2...][/] Redis Cluster, any seeds (TLS: rediss+cluster://)
    redis+sentinel://[user:password@]s1:p1[,s2:p2...]/service_name[/db]
                                                        the primary that Sentinel names (TLS to
                                                        the Redis nodes: rediss+sentinel://)

``redis://host:port/?cluster=true`` is the same as ``redis+cluster://host:port``. Several hosts
in a ``redis://`` URL are refused (say ``redis+cluster://`` or ``redis+sentinel://``), and so is
any option this module does not know: a typo fails at construction, not at the first call.
Seed and sentinel ports default to 6379 and 26379. The password of a Sentinel URL is the Redis
nodes' password; ``sentinel_password=`` (and ``sentinel_username=``) authenticate to the
sentinels themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

__all__ = ["Target", "parse_url", "redacted"]

Kind = Literal["redis", "cluster", "sentinel"]

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError("expected true or false")


def _positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise ValueError("expected a finite number > 0")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("expected an integer >= 1")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("expected an integer >= 0")
    return value


def _protocol(text: str) -> int:
    value = int(text)
    if value not in (2, 3):
        raise ValueError("expected 2 or 3")
    return value


#: Connection options every form accepts, with their parsers (redis-py keyword names).
_COMMON: Final[dict[str, Callable[[str], Any]]] = {
    "socket_timeout": _positive_float,
    "socket_connect_timeout": _positive_float,
    "socket_keepalive": _bool,
    "health_check_interval": _non_negative_int,
    "max_connections": _positive_int,
    "client_name": str,
    "protocol": _protocol,
}
_TLS: Final[dict[str, Callable[[str], Any]]] = {
    "ssl_cert_reqs": str,
    "ssl_ca_certs": str,
    "ssl_ca_path": str,
    "ssl_certfile": str,
    "ssl_keyfile": str,
    "ssl_check_hostname": _bool,
}
#: Options that are ours, not redis-py keywords (removed from the client's keywords).
_SENTINEL_ONLY: Final[dict[str, Callable[[str], Any]]] = {
    "sentinel_username": str,
    "sentinel_password": str,
    "replica_ack_timeout": _positive_float,
}
_SCHEMES: Final[dict[str, tuple[Kind, bool]]] = {
    "redis": ("redis", False),
    "rediss": ("redis", True),
    "unix": ("redis", False),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
}


@dataclass(frozen=True)
class Target:
    """What a URL asks for: the kind of deployment, its addresses, and client keywords."""

    kind: Kind
    #: the URL with any password replaced by ``***`` (for logs and error messages)
    display: str
    #: ``(host, port)`` of the server, the cluster seeds or the sentinels (empty for unix://)
    hosts: tuple[tuple[str, int], ...] = ()
    #: Sentinel's name for the monitored primary
    service: str = ""
    #: keywords for the redis-py client (or, for Sentinel, for the connections to Redis)
    client_kwargs: dict[str, Any] = field(default_factory=dict)
    #: keywords for the connections to the sentinels themselves
    sentinel_kwargs: dict[str, Any] = field(default_factory=dict)
    #: Sentinel: how long a write waits for a replica to confirm it (``WAIT``), seconds
    replica_ack_timeout: float = 0.15
    #: redis:// and rediss:// only: the URL to hand to ``redis.Redis.from_url``, options removed
    plain_url: str = ""


def redacted(url: str) -> str:
    """``url`` with the password (if any) replaced by ``***``."""
    head, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc_end = len(rest)
    for ch in "/?#":
        pos = rest.find(ch)
        if pos != -1:
            netloc_end = min(netloc_end, pos)
    netloc, tail = rest[:netloc_end], rest[netloc_end:]
    userinfo, at, hostpart = netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{head}://{user}:***@{hostpart}{tail}"


def _hosts(netloc: str, default_port: int, url: str) -> tuple[tuple[str, int], ...]:
    hosts: list[tuple[str, int]] = []
    for part in netloc.split(","):
        part = part.strip()
        if not part:
            raise ValueError(f"empty host in Redis URL {url!r}")
        if part.startswith("["):  # [ipv6]:port
            host, _, rest = part[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else ""
        else:
            host, _, port_text = part.rpartition(":") if ":" in part else (part, "", "")
        try:
            port = int(port_text) if port_text else default_port
        except ValueError:
            raise ValueError(f"bad port {port_text!r} in Redis URL {url!r}") from None
        if not 0 < port < 65536:
            raise ValueError(f"bad port {port} in Redis URL {url!r}")
        hosts.append((unquote(host), port))
    return tuple(hosts)


def _db(text: str, url: str) -> int:
    try:
        db = int(text)
    except ValueError:
        raise ValueError(f"bad database number {text!r} in Redis URL {url!r}") from None
    if db < 0:
        raise ValueError(f"bad database number {db} in Redis URL {url!r}")
    return db


def parse_url(url: str) -> Target:
    """Check ``url`` and say what it asks for; ``ValueError`` names anything wrong in it."""
    if not isinstance(url, str):
        raise TypeError(f"url must be str, not {type(url).__name__}")
    display = redacted(url)
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in _SCHEMES:
        raise ValueError(
            f"unsupported Redis URL {display!r}: the scheme must be one of "
            + ", ".join(f"{s}://" for s in _SCHEMES)
        )
    kind, tls = _SCHEMES[scheme]
    parts = urlsplit(url)
    if parts.fragment:
        raise ValueError(f"Redis URL {display!r} has a #fragment; remove it")
    values = _options(parts.query, _known_options(scheme, kind, tls), display)
    auth, netloc = _auth(parts.netloc, tls)
    if kind == "redis" and values.pop("cluster", False):
        kind = "cluster"
    if kind == "redis":
        return _redis_target(url, scheme, netloc, parts.path, values, display)
    if kind == "cluster":
        return _cluster_target(netloc, parts.path, values, auth, display)
    return _sentinel_target(netloc, parts.path, values, auth, display)


def _known_options(scheme: str, kind: Kind, tls: bool) -> dict[str, Callable[[str], Any]]:
    """The options a URL of this scheme may carry, with their parsers."""
    known: dict[str, Callable[[str], Any]] = {**_COMMON, "db": _non_negative_int}
    if kind == "cluster" or (kind == "redis" and scheme != "unix"):
        known["cluster"] = _bool
    if tls:
        known.update(_TLS)
    if kind == "sentinel":
        known.update(_SENTINEL_ONLY)
    return known


def _options(query: str, known: dict[str, Callable[[str], Any]], display: str) -> dict[str, Any]:
    """The ``?name=value`` options, parsed; an unknown, repeated or bad one is a ValueError."""
    options = parse_qsl(query, keep_blank_values=True)
    unknown = sorted({name for name, _ in options if name not in known})
    if unknown:
        raise ValueError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} in Redis URL "
            f"{display!r}; known options: {', '.join(sorted(known))}"
        )
    values: dict[str, Any] = {}
    for name, text in options:
        if name in values:
            raise ValueError(f"option {name} given twice in Redis URL {display!r}")
        try:
            values[name] = known[name](text)
        except ValueError as exc:
            raise ValueError(
                f"bad value {text!r} for option {name} in Redis URL {display!r}: {exc}"
            ) from None
    return values


def _auth(netloc: str, tls: bool) -> tuple[dict[str, Any], str]:
    """Client keywords from the ``user:password@`` part (and TLS), and the netloc without it."""
    auth: dict[str, Any] = {}
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, colon, password = userinfo.partition(":")
        if user:
            auth["username"] = unquote(user)
        if colon:
            auth["password"] = unquote(password)
    if tls:
        auth["ssl"] = True
    return auth, netloc


def _redis_target(
    url: str, scheme: str, netloc: str, path: str, values: dict[str, Any], display: str
) -> Target:
    """One server (TCP or a Unix socket): redis-py parses the plain URL itself."""
    if scheme == "unix":
        if not path:
            raise ValueError(f"Redis URL {display!r} names no socket path")
        return Target("redis", display, (), client_kwargs={}, plain_url=_strip_query(url))
    if "," in netloc:
        raise ValueError(
            f"Redis URL {display!r} names several hosts: for a Redis Cluster write "
            f"redis+cluster://{netloc}, for Sentinel redis+sentinel://{netloc}/service_name"
        )
    path = path.strip("/")
    if path:
        db = _db(path, display)
        if "db" in values and values["db"] != db:
            raise ValueError(f"Redis URL {display!r} names two databases ({db} and db=)")
    hosts = _hosts(netloc, 6379, display) if netloc else ()
    return Target("redis", display, hosts, client_kwargs={}, plain_url=_strip_query(url))


def _cluster_target(
    netloc: str, path: str, values: dict[str, Any], auth: dict[str, Any], display: str
) -> Target:
    """Redis Cluster: the seeds, database 0 only."""
    if values.pop("cluster", True) is False:
        raise ValueError(f"Redis URL {display!r} is a cluster URL with cluster=false")
    path = path.strip("/")
    db = values.pop("db", None)
    if (path and _db(path, display) != 0) or (db not in (None, 0)):
        raise ValueError(
            f"Redis URL {display!r} names a database other than 0: Redis Cluster has "
            "only database 0"
        )
    if not netloc:
        raise ValueError(f"Redis URL {display!r} names no seed node")
    return Target(
        "cluster", display, _hosts(netloc, 6379, display), client_kwargs={**auth, **values}
    )


def _sentinel_target(
    netloc: str, path: str, values: dict[str, Any], auth: dict[str, Any], display: str
) -> Target:
    """Sentinel: the sentinels, the service name and the keywords for each side."""
    segments = [s for s in path.split("/") if s]
    if not segments:
        raise ValueError(
            f"Redis URL {display!r} names no service: write "
            "redis+sentinel://host:26379/service_name[/db]"
        )
    if len(segments) > 2:
        raise ValueError(f"Redis URL {display!r}: expected /service_name[/db] as the path")
    service = unquote(segments[0])
    if len(segments) == 2:
        db = _db(segments[1], display)
        if "db" in values and values["db"] != db:
            raise ValueError(f"Redis URL {display!r} names two databases ({db} and db=)")
        values["db"] = db
    if not netloc:
        raise ValueError(f"Redis URL {display!r} names no sentinel")
    sentinel_kwargs: dict[str, Any] = {}
    for ours, theirs in (("sentinel_username", "username"), ("sentinel_password", "password")):
        if ours in values:
            sentinel_kwargs[theirs] = values.pop(ours)
    for name in ("socket_timeout", "socket_connect_timeout", "protocol"):
        if name in values:
            sentinel_kwargs[name] = values[name]
    ack = values.pop("replica_ack_timeout", 0.15)
    return Target(
        "sentinel",
        display,
        _hosts(netloc, 26379, display),
        service=service,
        client_kwargs={**auth, **values},
        sentinel_kwargs=sentinel_kwargs,
        replica_ack_timeout=ack,
    )


def _strip_query(url: str) -> str:
    """A plain URL whose checked options redis-py parses itself (``cluster=`` removed)."""
    base, _, query = url.partition("?")
    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "cluster"]
    return f"{base}?{urlencode(kept)}" if kept else base

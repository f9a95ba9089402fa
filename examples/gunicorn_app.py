"""Values in Redis behind an L1 in every gunicorn worker, kept coherent by invalidation.

Run it::

    CACHE_CORE_EXAMPLE_URL=redis://127.0.0.1:6379/0 \\
        gunicorn -w 4 --threads 8 --preload -b 127.0.0.1:8080 examples.gunicorn_app:app

Routes::

    GET  /v/<key>             the value (404 if none) and the pid of the worker that answered
    POST /v/<key>?value=X     store X through this worker's cache
    GET  /health              {"pid": ..., "l1_trusted": ...}

The truth is Redis: a value written through one worker, or with ``redis-cli SET <prefix>:<key>``,
reaches every worker's L1 through the invalidation listener within milliseconds, although the
L1 keeps entries for ``l1_ttl`` (60 s by default). ``CACHE_CORE_EXAMPLE_WARM=k1,k2`` reads those
keys at import: with ``--preload`` that warms the master's L1 before it forks the workers, which
must not serve it (they start with an empty L1, bypassed until their own listener subscribes).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from cache_core import MemoryCache, MultiLevelCache, RedisCache

URL_ENV = "CACHE_CORE_EXAMPLE_URL"
PREFIX_ENV = "CACHE_CORE_EXAMPLE_PREFIX"
L1_TTL_ENV = "CACHE_CORE_EXAMPLE_L1_TTL"
WARM_ENV = "CACHE_CORE_EXAMPLE_WARM"
INVALIDATION_ENV = "CACHE_CORE_EXAMPLE_INVALIDATION"  # "0": l1_ttl alone bounds staleness

StartResponse = Callable[[str, list[tuple[str, str]]], Any]

_ROUTE = re.compile(r"^/v/([A-Za-z0-9_.-]{1,100})$")


def build_cache() -> MultiLevelCache:
    l2 = RedisCache.from_url(
        os.environ.get(URL_ENV, "redis://127.0.0.1:6379/0"),
        prefix=os.environ.get(PREFIX_ENV, "gunicorn-example"),
    )
    return MultiLevelCache(
        MemoryCache(),
        l2,
        l1_ttl=float(os.environ.get(L1_TTL_ENV, "60")),
        invalidation=os.environ.get(INVALIDATION_ENV, "1") != "0",
    )


cache = build_cache()
for _key in filter(None, os.environ.get(WARM_ENV, "").split(",")):
    cache.get(_key, None)


def _json(start_response: StartResponse, status: str, body: object) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    method = environ.get("REQUEST_METHOD", "GET")
    if path == "/health":
        return _json(start_response, "200 OK", {"pid": os.getpid(), "l1_trusted": cache.l1_trusted})
    match = _ROUTE.match(path)
    if match is None:
        return _json(start_response, "404 Not Found", {"error": "no such route"})
    key = match.group(1)
    if method == "POST":
        value = parse_qs(environ.get("QUERY_STRING", "")).get("value", [""])[0]
        cache.set(key, value.encode())
        return _json(start_response, "200 OK", {"pid": os.getpid()})
    data = cache.get(key, None)
    if data is None:
        return _json(start_response, "404 Not Found", {"pid": os.getpid()})
    return _json(start_response, "200 OK", {"value": data.decode(), "pid": os.getpid()})

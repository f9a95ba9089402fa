"""A threaded WSGI app whose views read through ``@memoize`` over an L1 + Redis cache.

Run it (Redis URL from the environment)::

    CACHE_CORE_EXAMPLE_URL=redis://127.0.0.1:6379/0 \\
        waitress-serve --threads 16 --call examples.wsgi_app:create_app

Routes::

    GET  /users/<id>                 a user (404 if none); cached 60 s
    GET  /users/<id>/orders?limit=N  the user's latest orders; cached 30 s
    POST /users/<id>/rename?name=X   writes the "database", then invalidates the cached user
    GET  /stats                      database calls so far, and each view's cache_info()

The "database" sleeps 20 ms per query (the work a cache saves) and counts its calls, so a burst
of requests shows how many reached it: one per distinct user, however many threads asked.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from cache_core import MemoryCache, MultiLevelCache, RedisCache, memoize

URL_ENV = "CACHE_CORE_EXAMPLE_URL"
PREFIX_ENV = "CACHE_CORE_EXAMPLE_PREFIX"

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
App = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class Database:
    """A stand-in for a slow database: 100 users, a fixed query latency, a call counter."""

    def __init__(self, latency: float = 0.020) -> None:
        self.latency = latency
        self._lock = threading.Lock()
        self._calls = 0
        self._names = {i: f"user-{i}" for i in range(1, 101)}

    @property
    def calls(self) -> int:
        with self._lock:
            return self._calls

    def _query(self) -> None:
        with self._lock:
            self._calls += 1
        time.sleep(self.latency)  # the query itself

    def user(self, user_id: int) -> dict[str, Any] | None:
        self._query()
        name = self._names.get(user_id)
        return None if name is None else {"id": user_id, "name": name}

    def orders(self, user_id: int, limit: int) -> list[dict[str, Any]]:
        self._query()
        return [{"order": user_id * 1000 + n, "user": user_id} for n in range(limit)]

    def rename(self, user_id: int, name: str) -> None:
        with self._lock:
            self._names[user_id] = name


def _json(start_response: StartResponse, status: str, body: object) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


def create_app(
    url: str | None = None, *, prefix: str | None = None, db: Database | None = None
) -> App:
    """Build the app: ``url`` (default: ``$CACHE_CORE_EXAMPLE_URL``) names the shared Redis."""
    url = url or os.environ.get(URL_ENV, "redis://127.0.0.1:6379/0")
    prefix = prefix or os.environ.get(PREFIX_ENV, "example")
    db = db or Database()
    # L1 per process (hot keys without a network round trip) over Redis shared by every worker.
    redis_cache = RedisCache.from_url(url, prefix=prefix)  # owns its client: app.close()
    cache = MultiLevelCache(MemoryCache(maxsize=10_000), redis_cache, l1_ttl=5)

    @memoize(cache, ttl=60, namespace="example:user")
    def get_user(user_id: int) -> dict[str, Any] | None:
        return db.user(user_id)

    @memoize(cache, ttl=30, namespace="example:orders")
    def get_orders(user_id: int, limit: int = 10) -> list[dict[str, Any]]:
        return db.orders(user_id, limit)

    routes: list[tuple[str, re.Pattern[str], Callable[..., list[bytes]]]] = []

    def route(method: str, pattern: str) -> Callable[[Callable[..., list[bytes]]], Any]:
        def add(view: Callable[..., list[bytes]]) -> Callable[..., list[bytes]]:
            routes.append((method, re.compile(pattern + "$"), view))
            return view

        return add

    @route("GET", r"/users/(\d+)")
    def user_view(start_response: StartResponse, query: dict[str, list[str]], uid: str) -> Any:
        user = get_user(int(uid))
        if user is None:
            return _json(start_response, "404 Not Found", {"error": "no such user"})
        return _json(start_response, "200 OK", user)

    @route("GET", r"/users/(\d+)/orders")
    def orders_view(start_response: StartResponse, query: dict[str, list[str]], uid: str) -> Any:
        limit = int(query.get("limit", ["10"])[0])
        return _json(start_response, "200 OK", get_orders(int(uid), limit=limit))

    @route("POST", r"/users/(\d+)/rename")
    def rename_view(start_response: StartResponse, query: dict[str, list[str]], uid: str) -> Any:
        db.rename(int(uid), query["name"][0])
        get_user.invalidate(int(uid))  # write, then invalidate: the next read reloads
        return _json(start_response, "200 OK", {"renamed": int(uid)})

    @route("GET", r"/stats")
    def stats_view(start_response: StartResponse, query: dict[str, list[str]]) -> Any:
        return _json(
            start_response,
            "200 OK",
            {
                "db_calls": db.calls,
                "get_user": get_user.cache_info()._asdict(),
                "get_orders": get_orders.cache_info()._asdict(),
            },
        )

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "")
        query = parse_qs(environ.get("QUERY_STRING", ""))
        for want, pattern, view in routes:
            match = pattern.match(path)
            if match and want == method:
                return view(start_response, query, *match.groups())
        return _json(start_response, "404 Not Found", {"error": "no route"})

    app.db = db  # type: ignore[attr-defined]
    app.close = redis_cache.close  # type: ignore[attr-defined]
    app.get_user = get_user  # type: ignore[attr-defined]
    app.get_orders = get_orders  # type: ignore[attr-defined]
    return app

"""A WSGI app that exports cache_core's metrics to Prometheus, for a multi-process server.

Run it under gunicorn with 4 worker processes of 8 threads each (Redis URL from the
environment; the multi-process directory must exist and be empty at start)::

    export PROMETHEUS_MULTIPROC_DIR=$(mktemp -d)
    CACHE_CORE_EXAMPLE_URL=redis://127.0.0.1:6379/0 \\
        gunicorn -w 4 --threads 8 -c examples/gunicorn.conf.py 'examples.metrics_app:create_app()'

Routes::

    GET /users/<id>   a user, read through TypedCache "users" (L1 + Redis, lease lock); the
                      response header X-Worker-Pid says which worker answered
    GET /metrics      Prometheus text: every worker's counts added up

Scrape config (prometheus.yml)::

    scrape_configs:
      - job_name: my-app
        static_configs:
          - targets: ["127.0.0.1:8000"]
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from cache_core import MemoryCache, MultiLevelCache, RedisCache, TypedCache
from cache_core.contrib import prometheus

URL_ENV = "CACHE_CORE_EXAMPLE_URL"
PREFIX_ENV = "CACHE_CORE_EXAMPLE_PREFIX"
INTERVAL_ENV = "CACHE_CORE_METRICS_INTERVAL"

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
_USER = re.compile(r"/users/(\d+)$")


def create_app() -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """Build the app in each worker (after gunicorn forked it)."""
    prometheus.install(interval=float(os.environ.get(INTERVAL_ENV, "1.0")))
    redis_cache = RedisCache.from_url(
        os.environ.get(URL_ENV, "redis://127.0.0.1:6379/0"),
        prefix=os.environ.get(PREFIX_ENV, "example-metrics"),
    )
    users: TypedCache[dict[str, Any]] = TypedCache(
        MultiLevelCache(MemoryCache(maxsize=10_000), redis_cache, l1_ttl=5),
        name="users",
        distributed_lock=True,
    )
    pid = str(os.getpid())

    def load_user(user_id: int) -> dict[str, Any]:
        time.sleep(0.005)  # the database query a hit saves
        return {"id": user_id, "name": f"user-{user_id}"}

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            body, content_type = prometheus.render()
            start_response("200 OK", [("Content-Type", content_type)])
            return [body]
        match = _USER.match(path)
        if match is None:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"no route\n"]
        user_id = int(match.group(1))
        user = users.get_or_set(f"user:{user_id}", lambda: load_user(user_id), ttl=60)
        data = json.dumps(user).encode()
        start_response(
            "200 OK",
            [("Content-Type", "application/json"), ("X-Worker-Pid", pid)],
        )
        return [data]

    return app

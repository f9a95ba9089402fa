"""A Flask app whose Flask-Caching backend is ``cache_core.contrib.flask.RedisCache``.

Run it under a threaded server (Redis URL from the environment)::

    CACHE_CORE_EXAMPLE_URL=redis://127.0.0.1:6379/0 \\
        waitress-serve --listen 127.0.0.1:8080 --threads 16 --call examples.flask_app:create_app

Routes::

    GET /users/<id>      @cache.memoize(60): one 50 ms "query" per user while it is cached
    GET /report/<name>   the backend's get_or_set: one query per cold name, however many
                         requests (and worker processes) ask at the same moment
    GET /hit             the backend's inc (Flask-Caching's Cache does not proxy it): one
                         INCRBY on a Redis integer, an exact count across threads
    GET /stats           how many queries ran (a counter in the cache, shared by the workers)
"""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from flask_caching import Cache

from cache_core.contrib.flask import RedisCache

URL_ENV = "CACHE_CORE_EXAMPLE_URL"
PREFIX_ENV = "CACHE_CORE_EXAMPLE_PREFIX"


def create_app(
    url: str | None = None, *, prefix: str | None = None, query_seconds: float = 0.05
) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=os.environ.get("FLASK_SECRET_KEY", "example-only-" + "x" * 40),
        CACHE_TYPE="cache_core.contrib.flask.RedisCache",
        CACHE_REDIS_URL=url or os.environ.get(URL_ENV, "redis://127.0.0.1:6379/0"),
        CACHE_KEY_PREFIX=prefix or os.environ.get(PREFIX_ENV, "flask-example"),
        CACHE_DEFAULT_TIMEOUT=60,
        CACHE_OPTIONS={"l1": {"maxsize": 10_000, "ttl": 5}},
    )
    cache = Cache(app)
    backend: RedisCache = app.extensions["cache"][cache]

    def run_query(what: str) -> dict[str, Any]:
        backend.inc("queries")
        time.sleep(query_seconds)  # the expensive work the cache saves
        return {"what": what, "rows": len(what) * 10}

    @cache.memoize(60)
    def load_user(user_id: int) -> dict[str, Any]:
        return {"id": user_id, **run_query(f"user {user_id}")}

    @app.get("/users/<int:user_id>")
    def user(user_id: int) -> ResponseReturnValue:
        return jsonify(load_user(user_id))

    @app.get("/report/<name>")
    def report(name: str) -> ResponseReturnValue:
        return jsonify(backend.get_or_set(f"report:{name}", lambda: run_query(name), 60))

    @app.get("/hit")
    def hit() -> ResponseReturnValue:
        return jsonify(hits=backend.inc("hits"))

    @app.get("/stats")
    def stats() -> ResponseReturnValue:
        return jsonify(queries=cache.get("queries") or 0, hits=cache.get("hits") or 0)

    return app

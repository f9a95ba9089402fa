"""The example WSGI app under a real threaded server (waitress) and a burst of HTTP requests."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from examples.wsgi_app import Database, create_app
from tests.redis_harness import HOST, RedisServer

waitress = pytest.importorskip("waitress")


class Served:
    def __init__(self, app: Any, port: int) -> None:
        self.app = app
        self.port = port

    def request(self, method: str, path: str) -> tuple[int, Any]:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
        try:
            conn.request(method, path)
            response = conn.getresponse()
            return response.status, json.loads(response.read())
        finally:
            conn.close()


@pytest.fixture
def served(redis_server: RedisServer, unique_prefix: str) -> Iterator[Served]:
    app = create_app(redis_server.url, prefix=f"wsgi-{unique_prefix}", db=Database(latency=0.05))
    # create_server binds and listens before returning: connections made before run() starts
    # wait in the backlog, so no readiness wait is needed.
    server = waitress.create_server(app, host=HOST, port=0, threads=16)
    loop = threading.Thread(target=server.run, daemon=True)
    loop.start()
    try:
        yield Served(app, server.effective_port)
    finally:
        # Close from inside the server's own loop thread (the trigger runs thunks there), so
        # the loop sees an empty socket map and returns.
        server.trigger.pull_trigger(server.close)
        loop.join(timeout=10)
        server.task_dispatcher.shutdown()
        app.close()
    assert not loop.is_alive()


def _burst(served: Served, paths: list[str]) -> list[tuple[int, Any]]:
    barrier = threading.Barrier(len(paths))
    results: list[tuple[int, Any]] = [(0, None)] * len(paths)

    def fetch(i: int) -> None:
        barrier.wait()
        results[i] = served.request("GET", paths[i])

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(len(paths))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_burst_for_one_user_reaches_the_database_once(served: Served) -> None:
    results = _burst(served, ["/users/7"] * 48)
    assert results == [(200, {"id": 7, "name": "user-7"})] * 48
    status, stats = served.request("GET", "/stats")
    assert status == 200
    assert stats["db_calls"] == 1
    assert stats["get_user"] == {"hits": 47, "misses": 1, "errors": 0}


def test_burst_for_many_users_reaches_the_database_once_per_user(served: Served) -> None:
    ids = [i % 12 + 1 for i in range(48)]
    results = _burst(served, [f"/users/{i}" for i in ids] + ["/users/500"] * 4)
    assert results[:48] == [(200, {"id": i, "name": f"user-{i}"}) for i in ids]
    assert results[48:] == [(404, {"error": "no such user"})] * 4  # "no such user" is cached too
    orders = _burst(served, ["/users/3/orders?limit=2"] * 8 + ["/users/3/orders?limit=3"] * 8)
    assert orders[0] == (200, [{"order": 3000, "user": 3}, {"order": 3001, "user": 3}])
    assert {len(body) for _, body in orders} == {2, 3}
    _, stats = served.request("GET", "/stats")
    assert stats["db_calls"] == 12 + 1 + 2
    assert stats["get_user"]["misses"] == 13 and stats["get_user"]["hits"] == 52 - 13


def test_write_then_invalidate(served: Served) -> None:
    assert served.request("GET", "/users/5") == (200, {"id": 5, "name": "user-5"})
    assert served.request("POST", "/users/5/rename?name=Ada") == (200, {"renamed": 5})
    results = _burst(served, ["/users/5"] * 16)
    assert results == [(200, {"id": 5, "name": "Ada"})] * 16
    _, stats = served.request("GET", "/stats")
    assert stats["db_calls"] == 2

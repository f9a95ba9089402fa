"""The Django and Flask example apps under a real threaded server (waitress) and HTTP bursts.

The Django example runs in a child process (its settings are process-wide); the Flask one is
served in-process. Each burst of concurrent requests for one cold report must reach the
"database" once.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.redis_harness import HOST, RedisServer, free_port

waitress = pytest.importorskip("waitress")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def request(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def burst(port: int, path: str, n: int) -> list[tuple[int, bytes]]:
    start = threading.Barrier(n)
    results: list[tuple[int, bytes]] = [(0, b"")] * n

    def fetch(i: int) -> None:
        start.wait()
        results[i] = request(port, path)

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((HOST, port)) == 0


@pytest.fixture
def django_example(redis_server: RedisServer, unique_prefix: str) -> Iterator[int]:
    pytest.importorskip("django")
    port = free_port()
    env = {
        **os.environ,
        "CACHE_CORE_EXAMPLE_URL": redis_server.url,
        "CACHE_CORE_EXAMPLE_PREFIX": f"exdj{unique_prefix}",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "waitress",
            f"--listen={HOST}:{port}",
            "--threads=16",
            "examples.django_app.app:application",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        # Another process's readiness has no event to wait on: poll its port.
        assert wait_for(lambda: listening(port) or proc.poll() is not None, timeout=30)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_django_example_under_waitress(django_example: int) -> None:
    results = burst(django_example, "/report/sales", 32)
    assert {status for status, _ in results} == {200}
    assert {body for _, body in results} == {b'{"report": "sales", "rows": 50}'}
    hits = [json.loads(body)["hits"] for _, body in burst(django_example, "/hit", 16)]
    assert sorted(hits) == list(range(1, 17))  # incr is atomic: no count lost or repeated
    first = request(django_example, "/page")
    assert first[0] == 200
    assert request(django_example, "/page") == first  # cache_page served the stored response
    status, body = request(django_example, "/stats")
    assert status == 200
    assert json.loads(body) == {"queries": 1, "hits": 16}


@pytest.fixture
def flask_example(redis_server: RedisServer, unique_prefix: str) -> Iterator[tuple[int, Any]]:
    pytest.importorskip("flask_caching")
    from examples.flask_app import create_app

    app = create_app(redis_server.url, prefix=f"exfl{unique_prefix}")
    server = waitress.create_server(app, host=HOST, port=0, threads=16)
    loop = threading.Thread(target=server.run, daemon=True)
    loop.start()
    try:
        yield server.effective_port, app
    finally:
        server.trigger.pull_trigger(server.close)
        loop.join(timeout=10)
        server.task_dispatcher.shutdown()
    assert not loop.is_alive()


def test_flask_example_under_waitress(flask_example: tuple[int, Any]) -> None:
    port, _ = flask_example
    results = burst(port, "/report/sales", 32)
    assert {status for status, _ in results} == {200}
    assert {json.loads(body)["rows"] for _, body in results} == {50}
    assert request(port, "/users/7")[0] == 200
    assert request(port, "/users/7") == request(port, "/users/7")
    hits = [json.loads(body)["hits"] for _, body in burst(port, "/hit", 16)]
    assert sorted(hits) == list(range(1, 17))
    status, body = request(port, "/stats")
    assert status == 200
    assert json.loads(body) == {"queries": 2, "hits": 16}  # one report, one user

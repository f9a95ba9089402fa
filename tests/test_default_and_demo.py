"""default_cache() selection and the demo entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from cache_core import MemoryCache, RedisCache, default_cache
from cache_core._default import reset_default_cache
from tests.redis_harness import RedisServer


@pytest.fixture(autouse=True)
def fresh_default(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("CACHE_CORE_URL", raising=False)
    monkeypatch.delenv("CACHE_CORE_PREFIX", raising=False)
    reset_default_cache()
    yield
    reset_default_cache()


def test_default_is_an_in_process_cache_shared_by_callers() -> None:
    cache = default_cache()
    assert isinstance(cache, MemoryCache)
    assert default_cache() is cache


def test_redis_url_selects_redis(
    monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer
) -> None:
    monkeypatch.setenv("CACHE_CORE_URL", redis_server.url)
    cache = default_cache()
    assert isinstance(cache, RedisCache)
    assert cache.prefix == "cache_core"
    cache.set("k", b"v")
    assert cache.get("k") == b"v"
    monkeypatch.setenv("CACHE_CORE_PREFIX", "myapp")
    reset_default_cache()
    assert default_cache().prefix == "myapp"  # type: ignore[attr-defined]


def test_non_redis_url_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHE_CORE_URL", "http://example.invalid/")
    with pytest.raises(ValueError, match="CACHE_CORE_URL"):
        default_cache()


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CACHE_CORE_URL"}
    return subprocess.run(
        [sys.executable, "-m", "cache_core", "demo", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def test_demo_runs_on_the_embedded_cache() -> None:
    out = _demo()
    assert out.returncode == 0, out.stderr
    assert "stampede" in out.stdout
    assert "get_or_set             loader calls:   1" in out.stdout
    assert "L1 hits: 990   L2 hits (promoted to L1): 10   misses: 0" in out.stdout


def test_demo_runs_on_redis_and_cleans_up(redis_server: RedisServer) -> None:
    out = _demo("--url", redis_server.url)
    assert out.returncode == 0, out.stderr
    assert "get_or_set             loader calls:   1" in out.stdout
    with redis_server.client() as client:
        assert list(client.scan_iter(match="cache_core_demo:*")) == []

"""Shared pieces of the bloom/hashing tests (no conftest.py: that file belongs to another suite).

Every bloom test runs over both backends. The native case is skipped only when the C core is not
built and CACHE_CORE_REQUIRE_NATIVE is not "1" (CI sets it, so a broken build fails there), or
when CACHE_CORE_PURE_PYTHON=1 deliberately switches it off (`make test-pure`).
"""

from __future__ import annotations

import os

import pytest

from cache_core import _backend

REQUIRE_NATIVE = os.environ.get("CACHE_CORE_REQUIRE_NATIVE") == "1"

if _backend.NATIVE:
    _native_marks: list[pytest.MarkDecorator] = []
elif _backend.PURE_PYTHON_FORCED:
    _native_marks = [pytest.mark.skip(reason="CACHE_CORE_PURE_PYTHON=1 disables the C core")]
elif REQUIRE_NATIVE:
    _native_marks = []  # let the tests fail: the C core is required but missing
else:
    _native_marks = [pytest.mark.skip(reason="C core not built (cache_core.NATIVE is False)")]

BACKENDS = [pytest.param("native", marks=_native_marks, id="native"), "python"]
NATIVE_ONLY = [pytest.param("native", marks=_native_marks, id="native")]


def other_backend(backend: str) -> str:
    return "python" if backend == "native" else "native"


def native_usable() -> bool:
    return _backend.NATIVE

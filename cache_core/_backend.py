"""Which implementation of the bloom/hashing core is active: the C core or pure Python.

``CACHE_CORE_PURE_PYTHON=1`` forces the fallback even when the C core is built (tests and
debugging); ``CACHE_CORE_REQUIRE_NATIVE=1`` turns a missing or broken C core into an ImportError
at import time instead of a silent fallback (CI sets it, as PyYAML/msgpack-style switches do).
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["NATIVE", "PURE_PYTHON_FORCED", "ffi", "lib"]

PURE_PYTHON_FORCED = os.environ.get("CACHE_CORE_PURE_PYTHON") == "1"
_REQUIRED = os.environ.get("CACHE_CORE_REQUIRE_NATIVE") == "1"

ffi: Any = None
lib: Any = None
_import_error: ImportError | None = None

try:
    from ._native import ffi as _ffi
    from ._native import lib as _lib

    ffi, lib = _ffi, _lib
except ImportError as exc:  # not built (no compiler, non-editable checkout run from the tree)
    _import_error = exc

if lib is None and _REQUIRED:
    raise ImportError(
        "CACHE_CORE_REQUIRE_NATIVE=1 but the C core cache_core._native cannot be imported; "
        "rebuild with `pip install -e .` and a C compiler"
    ) from _import_error

NATIVE_AVAILABLE: bool = lib is not None
"""The C core is importable (regardless of CACHE_CORE_PURE_PYTHON)."""

NATIVE: bool = NATIVE_AVAILABLE and not PURE_PYTHON_FORCED
"""The C core is what BloomFilter(backend=None) and hash128 use."""


def native_unavailable_reason() -> str:
    """Explain why backend="native" cannot be used, for error messages."""
    if lib is None:
        return f"the C core cache_core._native is not built ({_import_error})"
    return "the C core is disabled by CACHE_CORE_PURE_PYTHON=1"

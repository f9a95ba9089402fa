"""Stand-ins for a database call that the typed-layer tests count (they live here, not in the
package: ``cache_core._demo`` keeps its own for the demo)."""

from __future__ import annotations

import threading
import time
from typing import Any


class CountingLoader:
    """A stand-in for a database call: returns its argument, counts its calls exactly under
    threads, and sleeps ``delay`` seconds first (only to widen a window, never to line up)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, value: Any = None) -> Any:
        with self._lock:
            self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        return value


class GatedLoader:
    """A loader that holds every call until the test releases it: ``started`` is set once the
    first call is running, ``release`` lets every call return ``value`` (or raise ``error``)."""

    def __init__(self, value: Any = None, *, error: BaseException | None = None) -> None:
        self.value = value
        self.error = error
        self.calls = 0
        self.started = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()

    def __call__(self) -> Any:
        with self._lock:
            self.calls += 1
        self.started.set()
        assert self.release.wait(10), "the test never released the loader"
        if self.error is not None:
            raise self.error
        return self.value

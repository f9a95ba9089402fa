"""CircuitBreaker: stop calling a backend that is down, and probe it again later.

closed ──(failure_threshold consecutive outage errors,   ──▶ open ──(probe delay)──▶ half-open
          or one timeout)
  ▲                                                        ▲                          │
  └───────────────(the probe call succeeds)────────────────┴──(the probe fails)───────┘

While open, a call costs one clock read and a raised ``CircuitOpenError``: no connection attempt,
no socket timeout (a paused Redis still accepts TCP connections, so without a breaker every
call would wait the full timeout). In half-open exactly one caller probes; the others keep
getting ``CircuitOpenError`` until it answers.

Logs (logger ``cache_core.breaker``): one WARNING when an outage starts (closed -> open, with the
error that tripped it) and one when it ends (-> closed, with its length); the probes in between
(open -> half-open) and failed probes (half-open -> open) are DEBUG, so a long outage costs two
warning lines whatever its length. ``metrics_snapshot()`` (state, transitions) feeds the
metrics registry.

A timeout opens the breaker at once (``timeout_threshold=1``): a paused server answers nothing,
and every further call would wait its own full timeout, so a process pays one timeout, not one
per request. The probe delay is ``reset_timeout`` times a random factor in [0.4, 0.9], drawn at
each opening, so the processes of one deployment do not probe in lockstep and the caches are in
use again within ``0.9 * reset_timeout`` (plus one request) of the backend's return.

Only outage errors count: a Redis that answers with an error (WRONGTYPE, NOSCRIPT, ...) is up.
Routing errors of a Redis Cluster (``MOVED``, ``ASK``, ``TRYAGAIN`` during a slot migration, and
redis-py's ``ClusterError("TTL exhausted")`` after too many of them) are neither: the node
answered, the slot is moving; they leave the breaker as it is (see ``is_routing``).
"""

from __future__ import annotations

import logging
import random as _random
import threading
import time
from collections.abc import Callable
from typing import Final, Literal

from redis.exceptions import (
    AskError,
    ClusterError,
    MaxConnectionsError,
    RedisClusterException,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ._fork import after_fork_in_child
from ._metrics import REGISTRY, BreakerStats
from ._validate import check_callable, check_int, check_number
from .errors import BackendError, CircuitOpenError

__all__ = [
    "CircuitBreaker",
    "check_breaker",
    "is_outage",
    "is_routing",
    "is_timeout",
    "is_unreachable",
]

log = logging.getLogger("cache_core.breaker")

State = Literal["closed", "open", "half_open"]
CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half_open"

_OUTAGE_ERRORS: Final = (
    RedisConnectionError,
    RedisTimeoutError,
    ClusterError,
    RedisClusterException,
    OSError,
)


def is_routing(exc: BaseException | None) -> bool:
    """Whether ``exc`` says a cluster slot is moving (retry or re-route), not that a node failed.

    ``MOVED``/``ASK`` (redis-py follows them), ``TRYAGAIN`` (a multi-key command on a slot that
    is half migrated) and ``ClusterError("TTL exhausted")``, which redis-py raises when its own
    redirections and TRYAGAIN retries ran out during a migration.
    """
    if isinstance(exc, AskError | TryAgainError):  # MovedError is an AskError
        return True
    return (
        type(exc) is ClusterError  # not ClusterDownError: that one is a node without its slots
        and "TTL exhausted" in str(exc)
    )


def is_timeout(exc: BaseException | None) -> bool:
    """Whether ``exc`` is a timeout: the backend accepted the request and answered nothing."""
    return isinstance(exc, RedisTimeoutError | TimeoutError)


def is_outage(exc: BaseException | None) -> bool:
    """Whether ``exc`` says the backend is unreachable or unhealthy (not a command error)."""
    return isinstance(exc, _OUTAGE_ERRORS) and not is_routing(exc)


def is_unreachable(exc: BackendError) -> bool:
    """Whether ``exc`` means this process cannot reach the backend at all right now: its
    breaker is open, or the driver failed to connect (running out of pooled connections is
    local congestion, not an outage)."""
    if isinstance(exc, CircuitOpenError):
        return True
    cause = exc.__cause__
    return is_outage(cause) and not isinstance(cause, MaxConnectionsError)


def check_breaker(value: object, name: str = "breaker") -> CircuitBreaker | None:
    """``value`` if it is a ``CircuitBreaker`` or None, else TypeError naming ``name``."""
    if value is not None and not isinstance(value, CircuitBreaker):
        raise TypeError(f"{name} must be a CircuitBreaker or None, not {type(value).__name__}")
    return value


class CircuitBreaker:
    """Consecutive-failure circuit breaker with a single half-open probe.

    Defaults suit a web request: open after 5 consecutive outage errors or 1 timeout, probe
    again 0.4-0.9 s later (``reset_timeout`` 1 s, jittered per opening). One breaker guards one
    backend; it is thread-safe and cheap when closed (two attribute reads per call).
    """

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        reset_timeout: float = 1.0,
        timeout_threshold: int = 1,
        clock: Callable[[], float] = time.monotonic,
        random: Callable[[], float] = _random.random,
        name: str = "redis",
    ) -> None:
        check_int(failure_threshold, "failure_threshold", minimum=1)
        check_number(reset_timeout, "reset_timeout", positive=True)
        check_int(timeout_threshold, "timeout_threshold", minimum=1)
        check_callable(clock, "clock")
        check_callable(random, "random")
        self.failure_threshold = failure_threshold
        self.reset_timeout = float(reset_timeout)
        self.timeout_threshold = timeout_threshold
        self.name = name
        self._clock = clock
        self._random = random
        self._timeouts = 0
        self._probe_delay = self.reset_timeout
        self._lock = threading.Lock()
        after_fork_in_child(self._after_fork_in_child)
        self._state: State = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self._open_message = ""
        self.opened_count = 0
        self.rejected = 0
        # metrics (issue 17): entries into each state, under the lock; the outage start time
        self._transitions = {OPEN: 0, HALF_OPEN: 0, CLOSED: 0}
        self._outage_started = 0.0
        REGISTRY.add_breaker(self)

    def metrics_snapshot(self) -> BreakerStats:
        """State and transition counts now (for the metrics registry)."""
        with self._lock:
            return BreakerStats(self.name, self._state, dict(self._transitions), self.rejected)

    @property
    def state(self) -> State:
        return self._state

    @property
    def probe_delay(self) -> float:
        """Seconds between the last opening and its probe (jittered per opening)."""
        return self._probe_delay

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker({self.name!r}, state={self._state}, failures={self._failures}, "
            f"threshold={self.failure_threshold}, reset_timeout={self.reset_timeout})"
        )

    def _after_fork_in_child(self) -> None:
        # The thread that held the lock, or was probing, does not exist in the child: a probe
        # "in flight" there would keep the breaker half-open forever.
        self._lock = threading.Lock()
        self._probing = False

    def allow(self) -> None:
        """Return if a call may go ahead; raise ``CircuitOpenError`` if it may not."""
        if self._state is CLOSED:
            return
        with self._lock:
            if self._state is OPEN:
                if self._clock() - self._opened_at < self._probe_delay:
                    self.rejected += 1
                    raise CircuitOpenError(self._open_message)
                self._state = HALF_OPEN
                self._transitions[HALF_OPEN] += 1
                self._probing = True
                log.debug("cache_core: breaker %r half-open, probing the backend", self.name)
                return
            if self._state is HALF_OPEN:
                if self._probing:
                    self.rejected += 1
                    raise CircuitOpenError(
                        f"circuit breaker {self.name!r} is half-open and a probe is in flight"
                    )
                self._probing = True
                return
            # closed again since the unlocked read: go ahead

    def record_success(self) -> None:
        if self._state is CLOSED and self._failures == 0:
            return
        with self._lock:
            if self._state is OPEN:
                # A call let through before the breaker opened answered late (Redis was
                # stopped mid-flight): the outage is not over. Only the half-open probe closes
                # the breaker; closing here made one outage log two (issue 17).
                return
            self._failures = 0
            self._timeouts = 0
            self._probing = False
            if self._state is not CLOSED:
                self._state = CLOSED
                self._transitions[CLOSED] += 1
                log.warning(
                    "cache_core: breaker %r closed, backend is back after %.1fs",
                    self.name,
                    max(self._clock() - self._outage_started, 0.0),
                )

    def spawn(self, name: str) -> CircuitBreaker:
        """A new closed breaker with this one's settings (one per cluster node or primary)."""
        return CircuitBreaker(
            failure_threshold=self.failure_threshold,
            reset_timeout=self.reset_timeout,
            timeout_threshold=self.timeout_threshold,
            clock=self._clock,
            random=self._random,
            name=name,
        )

    def record_failure(self, exc: BaseException) -> None:
        """Count ``exc`` if it is an outage; any other error counts as the backend answering.

        A routing error (``is_routing``) changes nothing: it frees a probe and is not counted.
        """
        if is_routing(exc):
            self.abandon()
            return
        if not is_outage(exc):
            self.record_success()
            return
        with self._lock:
            self._failures += 1
            if is_timeout(exc):
                self._timeouts += 1
            self._probing = False
            if self._state is HALF_OPEN or (
                self._state is CLOSED
                and (
                    self._failures >= self.failure_threshold
                    or self._timeouts >= self.timeout_threshold
                )
            ):
                starts = self._state is CLOSED  # a failed probe re-opens: same outage
                self._state = OPEN
                self._transitions[OPEN] += 1
                self._opened_at = self._clock()
                self._probe_delay = self.reset_timeout * (0.4 + 0.5 * self._random())
                self.opened_count += 1
                # Built once per opening: rejected calls only raise it (the hot path).
                self._open_message = (
                    f"circuit breaker {self.name!r} is open after {self._failures} consecutive "
                    f"failures ({type(exc).__name__}); retrying after {self._probe_delay:.2g}s"
                )
                if not starts:
                    log.debug("cache_core: breaker %r probe failed (%s), open", self.name, exc)
                    return
                self._outage_started = self._opened_at
                log.warning(
                    "cache_core: breaker %r open after %d consecutive failures (%s: %s); "
                    "calls fail fast for %.2gs",
                    self.name,
                    self._failures,
                    type(exc).__name__,
                    exc,
                    self._probe_delay,
                )

    def abandon(self) -> None:
        """A call ended without an answer either way (e.g. KeyboardInterrupt): free the probe."""
        if self._probing:
            with self._lock:
                self._probing = False

    def reset(self) -> None:
        """Force the breaker closed (e.g. after an operator fixed the backend)."""
        with self._lock:
            if self._state is not CLOSED:
                self._transitions[CLOSED] += 1
            self._state = CLOSED
            self._failures = 0
            self._timeouts = 0
            self._probing = False

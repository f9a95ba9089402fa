"""ReadThroughOptions: the stampede and avalanche options of a read-through, in one frozen value.

``TypedCache(...)`` takes them as keywords (or as ``options=``), ``get_or_set`` overrides them
per call, ``memoize`` passes them through: every one of those builds or derives one of these, so
each option is validated in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from ._jitter import check_jitter
from ._validate import MISSING, check_bool, ttl_seconds

__all__ = ["ReadThroughOptions"]


@dataclass(frozen=True, slots=True)
class ReadThroughOptions:
    """How ``get_or_set`` protects a key (see ``TypedCache``).

    ``distributed_lock`` (False): a miss takes a lease lock in the shared cache before loading,
    so one process loads and the others wait for its value. ``lock_timeout`` (10 s): the lease,
    and the longest a follower waits. ``early_refresh`` (None): XFetch β. ``stale_ttl`` (None):
    seconds an entry stays readable past its TTL while one reader refreshes it.
    ``stale_if_error`` (True): a failed refresh serves the stale value. ``ttl_jitter`` (0.1):
    every TTL written is shortened by a random fraction below this.

    Invalid values raise TypeError / ValueError naming the option. A ``timedelta`` is accepted
    for ``lock_timeout`` and ``stale_ttl`` and stored as seconds.
    """

    distributed_lock: bool = False
    lock_timeout: float = 10.0
    early_refresh: float | None = None
    stale_ttl: float | None = None
    stale_if_error: bool = True
    ttl_jitter: float = 0.1

    def __post_init__(self) -> None:
        check_bool(self.distributed_lock, "distributed_lock")
        check_bool(self.stale_if_error, "stale_if_error")
        timeout = ttl_seconds(self.lock_timeout, None, "lock_timeout")
        if timeout is None:
            raise TypeError("lock_timeout must be a number of seconds, not None")
        object.__setattr__(self, "lock_timeout", timeout)
        object.__setattr__(self, "early_refresh", _beta(self.early_refresh))
        object.__setattr__(self, "stale_ttl", ttl_seconds(self.stale_ttl, None, "stale_ttl"))
        object.__setattr__(self, "ttl_jitter", check_jitter(self.ttl_jitter))

    @property
    def wants_meta(self) -> bool:
        """Whether entries carry XFetch / stale metadata (early refresh or stale reads on)."""
        return self.early_refresh is not None or self.stale_ttl is not None

    def overridden(
        self,
        *,
        distributed_lock: bool | None = None,
        lock_timeout: float | None = None,
        early_refresh: Any = MISSING,
        stale_ttl: Any = MISSING,
        stale_if_error: bool | None = None,
        ttl_jitter: float | None = None,
    ) -> ReadThroughOptions:
        """These options with the ones given replaced (validated). Not given: None, or
        ``MISSING`` for the two whose None means "off" (``early_refresh``, ``stale_ttl``);
        ``MISSING`` is accepted for the others too. Nothing given: ``self``."""
        args = (
            distributed_lock,
            lock_timeout,
            early_refresh,
            stale_ttl,
            stale_if_error,
            ttl_jitter,
        )
        # Per-call overrides repeat: each distinct set is validated once. The key holds the
        # types (1 == True == 1.0 must not share an entry) and the base by identity (checked:
        # an id can be reused once its object is gone).
        key = (id(self), args, tuple(map(type, args)))
        try:
            base, options = _OVERRIDDEN[key]
        except KeyError:
            pass
        except TypeError:  # an unhashable value: not an option value, validation says why
            return self._override(args)
        else:
            if base is self:
                return options
        options = self._override(args)
        if len(_OVERRIDDEN) >= _OVERRIDDEN_MAX:
            _OVERRIDDEN.clear()
        _OVERRIDDEN[key] = (self, options)
        return options

    def _override(self, args: tuple[Any, ...]) -> ReadThroughOptions:
        unset = (None, None, MISSING, MISSING, None, None)
        given: dict[str, Any] = {
            name: value
            for name, value, not_given in zip(self.names(), args, unset, strict=True)
            if value is not not_given and value is not MISSING
        }
        return replace(self, **given) if given else self

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, in order."""
        return tuple(f.name for f in fields(cls))

    def differs_from_defaults(self) -> list[str]:
        """The names of the options set to something other than their default."""
        default = _DEFAULT
        return [n for n in self.names() if getattr(self, n) != getattr(default, n)]


#: Options derived by ``overridden``, by (base, the arguments given): bounded, cleared when full.
_OVERRIDDEN: dict[tuple[Any, ...], tuple[ReadThroughOptions, ReadThroughOptions]] = {}
_OVERRIDDEN_MAX = 1024


def _beta(early_refresh: object) -> float | None:
    if early_refresh is None:
        return None
    if isinstance(early_refresh, bool) or not isinstance(early_refresh, int | float):
        raise TypeError(
            f"early_refresh must be None or a float beta > 0, not {type(early_refresh).__name__}"
        )
    beta = float(early_refresh)
    if not 0.0 < beta < float("inf"):
        raise ValueError(f"early_refresh must be a finite beta > 0, got {early_refresh!r}")
    return beta


_DEFAULT = ReadThroughOptions()

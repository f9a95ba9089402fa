"""TTL jitter against avalanches: keys written together must not expire together.

Every TTL the typed layer writes is shortened by a random fraction in ``[0, jitter)``: never
lengthened, so an entry never lives longer than asked.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["check_jitter", "jittered"]


def check_jitter(jitter: object, name: str = "ttl_jitter") -> float:
    if isinstance(jitter, bool) or not isinstance(jitter, int | float):
        raise TypeError(f"{name} must be a float in [0, 1), not {type(jitter).__name__}")
    if not 0.0 <= float(jitter) < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {jitter!r}")
    return float(jitter)


def jittered(seconds: float, jitter: float, random: Callable[[], float]) -> float:
    """``seconds`` shortened by a random fraction below ``jitter``."""
    if jitter == 0.0:
        return seconds
    return seconds * (1.0 - jitter * random())

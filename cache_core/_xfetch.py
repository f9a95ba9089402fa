"""XFetch: probabilistic early recomputation (Vattani, Chierichetti, Lowenstein, PVLDB 2015).

A reader recomputes a value before it expires with a probability that grows as expiry
approaches and with the cost of the last recompute: recompute when
``now - delta * beta * ln(U) >= expiry``, U uniform in (0, 1]. Equivalently the probability at
time ``now`` is ``exp(-(expiry - now) / (beta * delta))``. No lock is needed for the
expectation to work; the typed layer still routes the refresh through its singleflight (and the
lease lock when enabled) so one caller refreshes while the others keep the current value.
"""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["should_refresh_early"]


def should_refresh_early(
    now: float, expires_at: float, delta: float, beta: float, random: Callable[[], float]
) -> bool:
    """True when this read should recompute the value now."""
    if delta <= 0.0 or beta <= 0.0:
        return now >= expires_at
    u = 1.0 - random()  # random() is in [0, 1): u is in (0, 1], so log(u) is defined
    return now - delta * beta * math.log(u) >= expires_at

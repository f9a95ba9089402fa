"""Deletes (and failed writes) that could not reach Redis, remembered and replayed.

When Redis is unreachable a delete, or a write that may not have landed, still raises its
``BackendError``, but the key is remembered here as an invalidation that is owed. Every command
of the cache replays the owed deletes before it runs (and raises while it cannot), so this
cache never serves the key's old value; a write that starts after the delete failed supersedes
it (the delete is forgotten once the write lands). Each delete carries a sequence number, so a
write only cancels the deletes that failed before it started.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Final

from ._fork import after_fork_in_child

__all__ = ["MAX_PENDING_DELETES", "PendingDeletes"]

#: A bound on what an outage may leave owed: past it, deletes are logged and dropped.
MAX_PENDING_DELETES: Final = 100_000

log = logging.getLogger("cache_core")


class PendingDeletes:
    """The owed deletes of one cache: ``keys`` maps key -> sequence number of its failure.

    ``keys`` is read without the lock on every command (a non-empty dict means "replay
    first"); it is only ever changed in place, under the lock.
    """

    def __init__(self) -> None:
        self.keys: dict[str, int] = {}
        self._seq = 0
        self._lock = threading.Lock()
        self._replay_lock = threading.Lock()
        after_fork_in_child(self._after_fork_in_child)

    def _after_fork_in_child(self) -> None:
        # A replay (network I/O under the lock) may have been running in a thread that the
        # child does not have. The pending deletes themselves stay: still owed.
        self._lock = threading.Lock()
        self._replay_lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def seq(self) -> int:
        """The number of the latest failure: a write that starts now supersedes up to here."""
        return self._seq

    def remember(self, keys: Iterable[str]) -> None:
        """Owe a delete of each key (numbered after every delete owed so far)."""
        with self._lock:
            pending = self.keys
            room = MAX_PENDING_DELETES - len(pending)
            for key in keys:
                if room <= 0:
                    log.error(
                        "cache_core: more than %d deletes pending during the outage; "
                        "%r will not be replayed",
                        MAX_PENDING_DELETES,
                        key,
                    )
                    break
                if key not in pending:
                    room -= 1
                self._seq += 1
                pending[key] = self._seq

    def forget(self, keys: Iterable[str], upto: int) -> None:
        """Deletes of these keys numbered ``upto`` or lower are done or superseded by a write.

        A delete that failed after the write started (a higher number) stays pending.
        """
        with self._lock:
            pending = self.keys
            for key in keys:
                seq = pending.get(key)
                if seq is not None and seq <= upto:
                    del pending[key]

    def replay(self, unlink: Callable[[list[str]], object]) -> None:
        """Run ``unlink`` on every owed key, then forget them; its errors propagate.

        Blocking, not skip-if-busy: a thread that went ahead while another replays could write
        a key that the replay's UNLINK then removes.
        """
        with self._replay_lock:
            with self._lock:
                batch = list(self.keys)
                upto = self._seq
            if not batch:
                return
            try:
                unlink(batch)
            except Exception as exc:
                log.debug("cache_core: replaying %d deletes failed: %s", len(batch), exc)
                raise
            self.forget(batch, upto)
            log.info(
                "cache_core: replayed %d invalidations (failed writes and deletes) from an outage",
                len(batch),
            )

    def lock(self) -> threading.Lock:
        """The lock that guards ``keys`` (for one-time set-up under the same lock)."""
        return self._lock

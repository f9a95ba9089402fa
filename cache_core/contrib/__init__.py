"""Framework integrations: ``cache_core.contrib.django`` and ``cache_core.contrib.flask``.

Each module imports its framework; this package imports neither, so ``import cache_core`` (and
``import cache_core.contrib``) never pulls Django or Flask in. Install the extras
``cache_core[django]`` / ``cache_core[flask]`` to use them.
"""

from __future__ import annotations

__all__: list[str] = []

"""``python -m cache_core demo``."""

import sys

from ._demo import main

sys.exit(main())

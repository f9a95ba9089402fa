"""``python -m cache_core demo`` and ``python -m cache_core inspect --url URL --prefix P``."""

import sys

if sys.argv[1:2] == ["inspect"]:
    from ._inspect import main as inspect_main

    sys.exit(inspect_main())

from ._demo import main

sys.exit(main())

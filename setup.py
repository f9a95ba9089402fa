"""Build wiring for the optional C core (cffi modules cannot be declared in pyproject.toml).

Two extensions: the cffi bloom/hash core (``native/build_native.py``) and ``cache_core._plain``,
the codec's exact-type walk (a plain CPython extension: it inspects Python objects). Both are
optional unless ``CACHE_CORE_REQUIRE_NATIVE=1``.
This file must not import cache_core: it runs before the package exists.
"""

import os

from setuptools import Extension, setup

setup(
    cffi_modules=["native/build_native.py:ffibuilder"],
    ext_modules=[
        Extension(
            "cache_core._plain",
            sources=["native/plain.c"],
            extra_compile_args=["-O3", "-Wall", "-Wextra"],
            optional=os.environ.get("CACHE_CORE_REQUIRE_NATIVE") != "1",
        )
    ],
)

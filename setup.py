"""Build wiring for the optional C core (cffi modules cannot be declared in pyproject.toml).

This file must not import cache_core: it runs before the package exists.
"""

from setuptools import setup

setup(cffi_modules=["native/build_native.py:ffibuilder"])

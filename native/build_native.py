"""cffi builder for ``cache_core._native`` (out-of-line API mode), wired by setup.py.

The cdef is read from the header between its CDEF markers, so the C declarations exist once.
``optional=True`` lets ``pip install`` succeed without a compiler (the package then runs on the
pure-Python fallback); ``CACHE_CORE_REQUIRE_NATIVE=1`` turns a failed compile into an error, and
CI sets it. ``CACHE_CORE_SANITIZE=1`` builds with AddressSanitizer + UBSan (native/sanitize.sh).
This file runs from the repository root before the package exists: it must not import cache_core.
"""

from __future__ import annotations

import os
import re

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
HEADER = os.path.join(HERE, "cache_core_native.h")
# setup.py runs from the repository root; setuptools wants relative source paths.
SOURCES = ["native/cache_core_native.c"]
DEPENDS = ["native/cache_core_native.h"]


def _cdef() -> str:
    with open(HEADER, encoding="utf-8") as f:
        text = f.read()
    match = re.search(r"/\* CDEF-BEGIN \*/(.*?)/\* CDEF-END \*/", text, re.S)
    if match is None:
        raise RuntimeError(f"{HEADER}: CDEF markers not found")
    return match.group(1)


def _flags() -> tuple[list[str], list[str]]:
    compile_args = ["-O3", "-std=c11", "-Wall", "-Wextra", "-fvisibility=hidden"]
    link_args: list[str] = []
    if os.environ.get("CACHE_CORE_SANITIZE") == "1":
        san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
        compile_args = [*compile_args[1:], "-O1", "-g", "-fno-sanitize-recover=all", *san]
        link_args += san
    return compile_args, link_args


ffibuilder = FFI()
ffibuilder.cdef(_cdef())
_compile_args, _link_args = _flags()
ffibuilder.set_source(
    "cache_core._native",
    '#include "cache_core_native.h"',
    sources=SOURCES,
    include_dirs=["native"],
    depends=DEPENDS,
    extra_compile_args=_compile_args,
    extra_link_args=_link_args,
    optional=os.environ.get("CACHE_CORE_REQUIRE_NATIVE") != "1",
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)

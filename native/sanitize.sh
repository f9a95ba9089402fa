#!/bin/sh
# Build the C core with AddressSanitizer + UBSan, run the native bloom/hash tests under it, then
# rebuild the normal optimized extension so the venv is left as it was.
# Usage: sh native/sanitize.sh [PYTHON]   (the Makefile passes .venv/bin/python)
# Exits non-zero on any sanitizer report or test failure.
set -eu

PY=${1:-.venv/bin/python}
cd "$(dirname "$0")/.."

# `setup.py build_ext` runs with the venv's own setuptools, which must understand pyproject.toml's
# PEP 639 license field (setuptools >= 77); a fresh venv ships an older one.
if ! "$PY" -c 'import setuptools, sys; sys.exit(int(setuptools.__version__.split(".")[0]) < 77)'; then
    "$PY" -m pip install -q 'setuptools>=77'
fi

restore() {
    status=$?
    echo "sanitize: rebuilding the optimized C core"
    if ! "$PY" setup.py -q build_ext --inplace --force >/dev/null; then
        echo "sanitize: FAILED to rebuild the optimized C core" >&2
        status=1
    fi
    rm -rf native/_sanitize_build
    exit $status
}
trap restore EXIT

echo "sanitize: building the C core with -fsanitize=address,undefined"
CACHE_CORE_SANITIZE=1 CACHE_CORE_REQUIRE_NATIVE=1 "$PY" setup.py -q build_ext --inplace --force \
    --build-temp native/_sanitize_build >/dev/null

LIBASAN=$(gcc -print-file-name=libasan.so)
if [ ! -e "$LIBASAN" ]; then
    echo "sanitize: libasan.so not found (install gcc's libasan)" >&2
    exit 1
fi

# Python itself is not instrumented, so ASan must be preloaded; leak checking is off because the
# interpreter keeps its allocations until exit. halt_on_error makes any UBSan report fatal
# (the build also uses -fno-sanitize-recover), so pytest — or the fuzz child — exits non-zero.
export LD_PRELOAD="$LIBASAN"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
# Route every Python allocation (ffi.new arrays included) through malloc, so ASan puts redzones
# around small buffers too instead of them living unchecked inside pymalloc arenas.
export PYTHONMALLOC=malloc
export CACHE_CORE_REQUIRE_NATIVE=1
unset CACHE_CORE_PURE_PYTHON || true

"$PY" -c 'import cache_core, sys; sys.exit(0 if cache_core.NATIVE else "C core not loaded")'
# --capture=sys: sanitizer reports go straight to fd 2; fd capture would lose them on abort.
"$PY" -m pytest -q -p no:cacheprovider --capture=sys tests/test_hashing.py tests/test_bloom.py \
    tests/test_bloom_params.py tests/test_bloom_native.py tests/test_bloom_fuzz.py \
    tests/test_bloom_threads.py
# The other callers of the C core: bit positions for the Redis-resident filter, and the fuzzers.
"$PY" -m pytest -q -p no:cacheprovider --capture=sys tests/test_bloom_share.py tests/test_fuzz.py \
    -k "positions or from_bytes or child"
echo "sanitize: clean"

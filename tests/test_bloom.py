"""BloomFilter behaviour, over both backends: sizing, accuracy, keys, validation, set operations."""

from __future__ import annotations

import copy
import functools
import math
import os
import pickle
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import cache_core
from cache_core import NATIVE, BloomFilter
from tests._bloom_helpers import BACKENDS, other_backend


@pytest.fixture(params=BACKENDS, scope="module")
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make(backend: str, capacity: int = 1000, error_rate: float = 0.01, **kw: int) -> BloomFilter:
    return BloomFilter(capacity, error_rate, backend=backend, **kw)


# ---------------------------------------------------------------------- sizing and accuracy


@pytest.mark.parametrize(
    ("n", "p"), [(1, 0.5), (1000, 0.01), (100_000, 0.01), (12_345, 0.001), (10, 1e-9)]
)
def test_parameters_follow_the_formula(backend: str, n: int, p: float) -> None:
    bf = make(backend, n, p)
    optimum = -n * math.log(p) / math.log(2) ** 2
    assert bf.num_bits == math.ceil(optimum)
    # Memory within 2% of the optimum m (ceil() alone adds < 1 bit, which dominates tiny filters).
    assert bf.num_bits - optimum < max(1, 0.02 * optimum)
    assert bf.num_hashes == max(1, round(bf.num_bits / n * math.log(2)))
    assert (bf.capacity, bf.error_rate, bf.seed, bf.backend) == (n, p, 0, backend)


def test_one_percent_is_9_585_bits_per_key(backend: str) -> None:
    bf = make(backend, 1_000_000, 0.01)
    assert bf.num_bits == 9_585_059
    assert bf.num_hashes == 7


def test_no_false_negatives_and_fpr_at_capacity(backend: str) -> None:
    n, p = 100_000, 0.01
    bf = make(backend, n, p)
    present = [f"user:{i}" for i in range(n)]
    absent = [f"absent:{i}" for i in range(n)]
    bf.update(present)
    assert all(bf.contains_many(present))
    assert all(k in bf for k in present[::97])
    fpr = sum(bf.contains_many(absent)) / n
    assert fpr <= 1.3 * p, f"measured FPR {fpr:.4%} above 1.3 x {p:.2%}"
    assert fpr > 0.5 * p  # a filter with far too few false positives is wasting memory
    assert abs(bf.approx_count - n) <= 0.03 * n


def test_approx_count(backend: str) -> None:
    bf = make(backend, 10_000)
    assert bf.approx_count == 0
    bf.update(f"k{i}" for i in range(5000))
    assert 4800 <= bf.approx_count <= 5200
    bf.update(f"k{i}" for i in range(5000))  # duplicates do not count
    assert 4800 <= bf.approx_count <= 5200


def test_approx_count_saturated_is_finite(backend: str) -> None:
    bf = make(backend, 1, 0.5)  # 2 bits
    bf.update(f"k{i}" for i in range(100))
    assert isinstance(bf.approx_count, int)
    assert bf.approx_count >= 1


# ---------------------------------------------------------------------- keys


def test_str_and_bytes_like_keys_set_the_same_bits(backend: str) -> None:
    a, b, c, d = (make(backend) for _ in range(4))
    a.add("héllo")
    b.add("héllo".encode())
    c.add(bytearray("héllo".encode()))
    d.add(memoryview(b"xx" + "héllo".encode())[2:])
    assert a == b == c == d
    for key in ("héllo", "héllo".encode(), bytearray("héllo".encode())):
        assert key in a


@pytest.mark.parametrize("key", [1, None, 1.5, ["a"], ("a",), object()])
def test_bad_key_types(backend: str, key: object) -> None:
    bf = make(backend)
    with pytest.raises(TypeError, match="key must be str or bytes-like"):
        bf.add(key)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key must be str or bytes-like"):
        assert key not in bf
    with pytest.raises(TypeError, match="key must be str or bytes-like"):
        bf.update(["ok", key])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="key must be str or bytes-like"):
        bf.contains_many([b"ok", key])  # type: ignore[list-item]


def test_lone_surrogate_key_is_a_value_error(backend: str) -> None:
    bf = make(backend)
    for call in (
        bf.add,
        bf.__contains__,
        lambda k: bf.update([k]),
        lambda k: bf.contains_many([k]),
    ):
        with pytest.raises(ValueError, match="cannot be encoded as UTF-8"):
            call("x\udcffy")


@pytest.mark.parametrize("keys", ["abc", b"abc"])
def test_single_str_is_not_an_iterable_of_keys(backend: str, keys: object) -> None:
    bf = make(backend)
    with pytest.raises(TypeError, match="keys must be an iterable"):
        bf.update(keys)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="keys must be an iterable"):
        bf.contains_many(keys)  # type: ignore[arg-type]


def test_batch_paths_agree_with_single_key_paths(backend: str) -> None:
    """Covers the NUL-joined path, the offsets path (keys holding NUL) and mixed key types."""
    batches: list[list[str | bytes | bytearray | memoryview]] = [
        ["a", "b", "", "c"],  # empty keys, NUL-joined
        ["", ""],
        [""],
        ["x\0y", "z", "\0", "\0\0"],  # NUL inside keys -> offsets
        [b"a\0", b"", bytearray(b"\0b"), memoryview(b"c")],  # bytes -> offsets
        ["日本", b"bytes", bytearray(b"ba"), memoryview(b"mv")],  # mixed, no NUL
    ]
    for keys in batches:
        single, batch = make(backend), make(backend)
        for key in keys:
            single.add(key)
        batch.update(keys)
        assert single == batch, keys
        assert batch.contains_many(keys) == [True] * len(keys)
        probes = [*keys, "nope", b"\0nope", ""]
        assert make(backend).contains_many(probes) == [False] * len(probes)
        assert batch.contains_many(probes) == [k in batch for k in probes]


def test_empty_and_generator_batches(backend: str) -> None:
    bf = make(backend)
    bf.update([])
    bf.update(iter(()))
    assert bf.contains_many([]) == []
    bf.update(f"g{i}" for i in range(10))
    assert bf.contains_many(f"g{i}" for i in range(10)) == [True] * 10
    assert all(type(x) is bool for x in bf.contains_many(["g1", "zz"]))


def test_big_batches_are_sliced_consistently(backend: str) -> None:
    """Batches beyond one C call's slice (8192 keys) — with a NUL key in a later slice."""
    keys: list[str | bytes] = [f"big:{i}" for i in range(20_000)]
    keys[15_000] = "has\0nul"
    keys[19_999] = b"bytes key"
    batch, single = make(backend, 20_000), make(backend, 20_000)
    batch.update(keys)
    for key in keys[::50] + keys[14_990:15_010] + keys[-5:]:
        single.add(key)
    assert batch.contains_many(keys) == [True] * len(keys)
    assert (batch | single) == batch
    probes = [f"nope:{i}" for i in range(20_000)]
    assert batch.contains_many(probes) == [p in batch for p in probes]


def test_a_key_with_nul_is_not_two_keys(backend: str) -> None:
    bf = make(backend, 10_000, 0.0001)
    bf.update(["a\0b"])
    assert "a\0b" in bf
    assert bf.contains_many(["a", "b"]) == [False, False]


# ---------------------------------------------------------------------- validation


@pytest.mark.parametrize("capacity", [0, -1])
def test_capacity_must_be_positive(backend: str, capacity: int) -> None:
    with pytest.raises(ValueError, match="capacity must be > 0"):
        make(backend, capacity)


@pytest.mark.parametrize("capacity", [1.0, "10", None, True])
def test_capacity_must_be_int(backend: str, capacity: object) -> None:
    with pytest.raises(TypeError, match="capacity must be an int"):
        BloomFilter(capacity, backend=backend)  # type: ignore[arg-type]


@pytest.mark.parametrize("rate", [0, 0.0, 1, 1.0, 1.5, -0.1, math.nan, math.inf, -math.inf])
def test_error_rate_must_be_in_open_unit_interval(backend: str, rate: float) -> None:
    with pytest.raises(ValueError, match="error_rate must be in"):
        make(backend, 10, rate)


@pytest.mark.parametrize("rate", ["0.1", None, True])
def test_error_rate_must_be_a_number(backend: str, rate: object) -> None:
    with pytest.raises(TypeError, match="error_rate must be a float"):
        BloomFilter(10, rate, backend=backend)  # type: ignore[arg-type]


def test_seed_validation(backend: str) -> None:
    with pytest.raises(ValueError, match="seed"):
        make(backend, seed=-1)
    with pytest.raises(ValueError, match="seed"):
        make(backend, seed=2**32)
    with pytest.raises(TypeError, match="seed"):
        BloomFilter(10, seed="1", backend=backend)  # type: ignore[arg-type]
    assert make(backend, seed=2**32 - 1).seed == 2**32 - 1


def test_size_limit(backend: str) -> None:
    with pytest.raises(ValueError, match="more than the limit"):
        make(backend, 2**40, 0.01)


@pytest.mark.parametrize("name", ["c", "NATIVE", "", "Python", 1])
def test_unknown_backend(name: object) -> None:
    with pytest.raises(ValueError, match="backend must be"):
        BloomFilter(10, backend=name)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="backend must be"):
        BloomFilter.from_bytes(BloomFilter(10).to_bytes(), backend=name)  # type: ignore[arg-type]


def test_default_backend_follows_native_flag() -> None:
    assert BloomFilter(10).backend == ("native" if NATIVE else "python")
    assert isinstance(BloomFilter(10), BloomFilter)


# ---------------------------------------------------------------------- set operations


def test_union_holds_both_key_sets(backend: str) -> None:
    a, b = make(backend), make(backend)
    a.update(f"a{i}" for i in range(300))
    b.update(f"b{i}" for i in range(300))
    u = a | b
    assert u.backend == backend
    assert all(u.contains_many([f"a{i}" for i in range(300)] + [f"b{i}" for i in range(300)]))
    assert "b0" not in a  # operands untouched (a 1% filter: b0 happens not to collide)
    both = make(backend)
    both.update([f"a{i}" for i in range(300)] + [f"b{i}" for i in range(300)])
    assert u == both  # OR of the bits == filter of the union


def test_intersection(backend: str) -> None:
    a, b = make(backend), make(backend)
    common = [f"c{i}" for i in range(200)]
    a.update([*common, *(f"a{i}" for i in range(200))])
    b.update([*common, *(f"b{i}" for i in range(200))])
    i = a & b
    assert all(i.contains_many(common))
    only_a = sum(i.contains_many([f"a{j}" for j in range(200)]))
    assert only_a < 20  # mostly gone; a few survive through shared bits
    assert i.approx_count < a.approx_count


def test_inplace_operators(backend: str) -> None:
    a, b = make(backend), make(backend)
    a.add("x")
    b.add("y")
    ref = a
    a |= b
    assert a is ref and "x" in a and "y" in a
    a &= b
    assert a is ref and "y" in a and "x" not in a


def test_cross_backend_set_operations_and_equality(backend: str) -> None:
    pytest.importorskip("cache_core._native")
    if not NATIVE:
        pytest.skip("needs both backends")
    a = make(backend)
    b = make(other_backend(backend))
    a.update(["1", "2"])
    b.update(["2", "3"])
    assert (a | b).backend == backend
    assert all((a | b).contains_many(["1", "2", "3"]))
    assert "2" in (a & b)
    b.add("1")
    a.add("3")
    assert a == b and b == a


@pytest.mark.parametrize(
    "kwargs", [{"capacity": 2000}, {"error_rate": 0.001}, {"seed": 1}], ids=["size", "k", "seed"]
)
def test_incompatible_set_operations(backend: str, kwargs: dict[str, float]) -> None:
    a = make(backend)
    b = make(backend, **{"capacity": 1000, "error_rate": 0.01, **kwargs})  # type: ignore[arg-type]
    for op in ("__or__", "__and__", "__ior__", "__iand__"):
        with pytest.raises(ValueError, match="cannot combine bloom filters"):
            getattr(a, op)(b)


def test_set_operations_with_non_filters(backend: str) -> None:
    a = make(backend)
    for other in (1, {"x"}, None, b"bytes"):
        with pytest.raises(TypeError):
            a | other
        with pytest.raises(TypeError):
            a & other
    assert a != "not a filter"
    assert (a == 1) is False


def test_equality_needs_same_params_and_bits(backend: str) -> None:
    assert make(backend) == make(backend)
    assert make(backend) != make(backend, seed=1)
    assert make(backend) != make(backend, 1001)  # same num_hashes, different capacity
    a, b = make(backend), make(backend)
    a.add("x")
    assert a != b
    with pytest.raises(TypeError):
        hash(a)


def test_copy_is_independent(backend: str) -> None:
    a = make(backend)
    a.add("x")
    for c in (a.copy(), copy.copy(a), copy.deepcopy(a), pickle.loads(pickle.dumps(a))):
        assert c == a and c is not a and c.backend == backend
        c.add("y")
        assert "y" in c and "y" not in a
        assert c != a


def test_repr(backend: str) -> None:
    bf = make(backend, 100)
    bf.add("x")
    text = repr(bf)
    assert f"backend='{backend}'" in text
    assert "capacity=100" in text and "num_hashes=7" in text and "approx_count=1" in text


# ---------------------------------------------------------------------- environment switches


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **env}
    full_env.pop("CACHE_CORE_PURE_PYTHON", None) if "CACHE_CORE_PURE_PYTHON" not in env else None
    return subprocess.run(
        [sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=60
    )


def test_pure_python_switch() -> None:
    code = (
        "import cache_core as c\n"
        "assert c.NATIVE is False, c.NATIVE\n"
        "assert c.BloomFilter(10).backend == 'python'\n"
        "try:\n"
        "    c.BloomFilter(10, backend='native')\n"
        "except ValueError as e:\n"
        "    assert 'unavailable' in str(e), e\n"
        "else:\n"
        "    raise SystemExit('native allowed under CACHE_CORE_PURE_PYTHON=1')\n"
    )
    proc = _run(code, CACHE_CORE_PURE_PYTHON="1", CACHE_CORE_REQUIRE_NATIVE="0")
    assert proc.returncode == 0, proc.stderr


def test_missing_c_core_falls_back_or_fails_when_required(tmp_path: Path) -> None:
    """A checkout without the compiled module runs on pure Python; REQUIRE_NATIVE makes it fail."""
    pkg = Path(cache_core.__file__).parent
    shutil.copytree(pkg, tmp_path / "cache_core", ignore=shutil.ignore_patterns("_native*"))
    code = "import cache_core as c; print(c.NATIVE, c.BloomFilter(10).backend)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CACHE_CORE_")}
    # -S skips site and its .pth files (the editable install's import hook would find the real
    # package); the dependencies come back through PYTHONPATH, after the stripped copy.
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), sysconfig.get_paths()["purelib"]])
    run = functools.partial(
        subprocess.run,
        [sys.executable, "-S", "-c", code],
        cwd=tmp_path,  # not the repository root, whose cache_core/ holds the built module
        capture_output=True,
        text=True,
        timeout=60,
    )
    proc = run(env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "python"]
    proc = run(env={**env, "CACHE_CORE_REQUIRE_NATIVE": "1"})
    assert proc.returncode != 0
    assert "CACHE_CORE_REQUIRE_NATIVE=1" in proc.stderr

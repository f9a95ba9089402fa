"""Fuzzing the decoders of untrusted bytes (issue 8).

Bytes read back from a cache are untrusted: another program, an older release or an attacker
with write access to Redis may have put them there. Every decoder must turn bad input into its
one documented exception and never crash the process:

* ``BloomFilter.from_bytes`` (both backends): ``ValueError`` (``TypeError`` for non-bytes);
* the value envelope ``cache_core._envelope.unpack``: ``SerializationError``;
* each serializer's ``loads``: ``SerializationError``;
* ``TypedCache.get``: ``SerializationError``; ``TypedCache.get_or_set``: never raises, answers
  from the loader and repairs the entry.

Hypothesis drives the in-process cases; one large seeded batch runs in a child process so a
segfault in the C core fails a test instead of killing the run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cache_core import (
    BloomFilter,
    CompressedSerializer,
    JSONSerializer,
    MemoryCache,
    PickleSerializer,
    SerializationError,
    TypedCache,
    _serializers,
)
from cache_core._envelope import FLAG_META, FLAG_TOMBSTONE, MAGIC, VERSION, pack, unpack
from tests._bloom_helpers import BACKENDS

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HEADER = struct.Struct("<4sHHQdIIQQ")  # the bloom header, then a CRC32
CRC = struct.Struct("<I")
SECRET = b"fuzz-secret"


def _serializers_under_test() -> dict[str, Any]:
    return {
        "json": JSONSerializer(),
        "pickle": PickleSerializer(SECRET),
        "compressed-json": CompressedSerializer(JSONSerializer(), threshold=8),
        "compressed-pickle": CompressedSerializer(PickleSerializer(SECRET), threshold=8),
    }


SERIALIZERS = _serializers_under_test()


@pytest.fixture(params=BACKENDS, scope="module")
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# ------------------------------------------------------------------------------ bloom filter


def _resign(blob: bytes) -> bytes:
    """Recompute the CRC so a mutation reaches the checks behind it."""
    if len(blob) < HEADER.size + CRC.size:
        return blob
    header, payload = blob[: HEADER.size], blob[HEADER.size + CRC.size :]
    return header + CRC.pack(zlib.crc32(payload, zlib.crc32(header))) + payload


@st.composite
def bloom_blobs(draw: st.DrawFn) -> bytes:
    """A valid serialized filter of random parameters and contents."""
    bf = BloomFilter(
        draw(st.integers(1, 400)),
        draw(st.sampled_from([0.5, 0.1, 0.01, 1e-4])),
        seed=draw(st.integers(0, 2**32 - 1)),
        backend="python",
    )
    bf.update(draw(st.lists(st.binary(min_size=1, max_size=8), max_size=40)))
    return bf.to_bytes()


@st.composite
def mutated(draw: st.DrawFn, blobs: st.SearchStrategy[bytes]) -> bytes:
    """A blob with a few random overwrites, insertions, deletions or a truncation."""
    data = bytearray(draw(blobs))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["overwrite", "insert", "delete", "truncate", "extend"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "overwrite" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[pos:]
        else:
            data += draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


_U64_EXTREMES = [0, 1, 2, 7, 8, 2**31 - 1, 2**32 - 1, 2**32, 2**40, 2**40 + 1, 2**63, 2**64 - 1]
_U32_EXTREMES = [0, 1, 2, 4096, 4097, 2**31, 2**32 - 1]
_RATES = [0.0, -0.0, 1.0, -1.0, 5e-324, 1e-300, 0.5, 1 - 1e-16, math.nan, math.inf, -math.inf]


@st.composite
def forged_headers(draw: st.DrawFn) -> bytes:
    """A valid blob whose header fields are set to extreme values, with a correct CRC."""
    blob = draw(bloom_blobs())
    fields = list(HEADER.unpack_from(blob))
    payload = blob[HEADER.size + CRC.size :]
    for index in draw(st.sets(st.integers(1, 8), min_size=1, max_size=4)):
        if index == 1 or index == 2:  # version, flags: u16
            fields[index] = draw(st.sampled_from([0, 1, 2, 0xFFFF]))
        elif index == 4:
            fields[index] = draw(st.sampled_from(_RATES) | st.floats())
        elif index in (5, 6):  # seed, num_hashes: u32
            fields[index] = draw(st.sampled_from(_U32_EXTREMES) | st.integers(0, 2**32 - 1))
        else:  # capacity, num_bits, payload length: u64
            fields[index] = draw(st.sampled_from(_U64_EXTREMES) | st.integers(0, 2**64 - 1))
    if draw(st.booleans()):  # a payload that agrees with the forged length, where affordable
        plen = int(fields[8])
        if plen <= 1 << 16:
            payload = draw(st.binary(min_size=plen, max_size=plen))
    header = HEADER.pack(*fields)
    return header + CRC.pack(zlib.crc32(payload, zlib.crc32(header))) + payload


def _check_from_bytes(data: bytes, backend: str) -> None:
    try:
        bf = BloomFilter.from_bytes(data, backend=backend)
    except ValueError as exc:
        assert "not a valid cache_core BloomFilter" in str(exc)
        return
    # Accepted: a working filter that serializes back to exactly these bytes, on both backends.
    assert bf.to_bytes() == data
    assert BloomFilter.from_bytes(data, backend="python") == bf
    bf.add(b"probe")
    assert b"probe" in bf
    assert bf.contains_many([b"probe", "x"])[0] is True


@FUZZ
@given(data=st.binary(max_size=200))
def test_bloom_from_random_bytes(backend: str, data: bytes) -> None:
    _check_from_bytes(data, backend)
    with pytest.raises(ValueError):  # a bytearray / memoryview of garbage too
        BloomFilter.from_bytes(memoryview(bytearray(data)), backend=backend)


@FUZZ
@given(data=mutated(bloom_blobs()), resign=st.booleans())
def test_bloom_from_mutated_blobs(backend: str, data: bytes, resign: bool) -> None:
    _check_from_bytes(_resign(data) if resign else data, backend)


@FUZZ
@given(data=forged_headers())
@example(data=b"")  # the shortest input, for the record
def test_bloom_from_forged_headers(backend: str, data: bytes) -> None:
    _check_from_bytes(data, backend)


@settings(max_examples=20, deadline=None)
@given(data=st.one_of(st.text(max_size=8), st.integers(), st.none(), st.lists(st.integers())))
def test_bloom_from_non_bytes_is_type_error(data: object) -> None:
    with pytest.raises(TypeError):
        BloomFilter.from_bytes(data)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ value envelope

FIDS = st.integers(0, 255)
_non_negative = st.floats(min_value=0.0, allow_nan=False, allow_infinity=True)


@st.composite
def envelopes(draw: st.DrawFn) -> tuple[bytes, int]:
    """A valid envelope (random flags, metadata, payload) and the fid it was written for."""
    fid = draw(FIDS)
    meta = draw(st.booleans())
    data = pack(
        fid,
        draw(st.binary(max_size=30)),
        delta=draw(_non_negative) if meta else None,
        expires_at=draw(_non_negative) if meta else None,
        tombstone=draw(st.booleans()),
    )
    return data, fid


def _check_unpack(data: bytes, fid: int) -> None:
    try:
        entry = unpack(data, fid)
    except SerializationError:
        return
    # Accepted: the header really says so, and the payload is the tail of the data.
    assert data[0] == MAGIC and data[1] == VERSION and data[3] == fid
    assert not data[2] & ~(FLAG_META | FLAG_TOMBSTONE)
    assert entry.tombstone is bool(data[2] & FLAG_TOMBSTONE)
    assert data.endswith(entry.payload)
    assert len(entry.payload) == len(data) - (20 if data[2] & FLAG_META else 4)


@FUZZ
@given(data=st.binary(max_size=40), fid=FIDS)
def test_envelope_unpack_random_bytes(data: bytes, fid: int) -> None:
    _check_unpack(data, fid)


@FUZZ
@given(header=st.binary(min_size=4, max_size=4), tail=st.binary(max_size=40), fid=FIDS)
def test_envelope_unpack_random_headers_behind_the_magic(
    header: bytes, tail: bytes, fid: int
) -> None:
    _check_unpack(bytes((MAGIC, VERSION)) + header[2:] + tail, fid)
    _check_unpack(bytes((MAGIC,)) + header[1:] + tail, fid)


@FUZZ
@given(pair=envelopes())
def test_envelope_roundtrip(pair: tuple[bytes, int]) -> None:
    data, fid = pair
    entry = unpack(data, fid)
    assert (
        pack(
            fid,
            entry.payload,
            delta=entry.delta,
            expires_at=entry.expires_at,
            tombstone=entry.tombstone,
        )
        == data
    )
    if fid != 255:
        with pytest.raises(SerializationError):
            unpack(data, fid + 1)


@FUZZ
@given(data=st.data())
def test_envelope_unpack_mutated(data: st.DataObject) -> None:
    blob, fid = data.draw(envelopes())
    _check_unpack(data.draw(mutated(st.just(blob))), fid)


# ------------------------------------------------------------------------------ serializers

# JSON that looks like ours: tagged objects with known and unknown tags and random payloads.
# Integers stay below 10**8 here; the extremes have their own tests below.
_TAGS = [
    "datetime", "date", "time", "timedelta", "uuid", "decimal", "bytes", "bytearray",
    "set", "frozenset", "float", "dataclass", "dict", "nope", "",
]  # fmt: skip
_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**8), 10**8)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["2024-05-01", "12:00:00", "AAEC", "nan", "-inf", "1.10", "==", "9" * 30])
)


def _tagged(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.builds(
        lambda name, payload: {"__cc": [name, payload]}, st.sampled_from(_TAGS), children
    )


_json_like = st.recursive(
    _json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=6) | st.just("__cc"), children, max_size=4)
        | _tagged(children)
    ),
    max_leaves=12,
)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _as_stored(name: str, raw: bytes) -> bytes:
    """What ``raw`` JSON would look like written through ``serializer`` (unsigned for pickle)."""
    if name.startswith("compressed-"):
        return (b"\x01" + zlib.compress(raw)) if len(raw) % 2 else (b"\x00" + raw)
    return raw


def _check_loads(serializer: Any, data: bytes) -> None:
    with contextlib.suppress(SerializationError):
        serializer.loads(data)


@pytest.fixture(params=sorted(SERIALIZERS), scope="module")
def serializer_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# Random bytes, and random bytes behind each CompressedSerializer marker (0x00 raw, 0x01 zlib).
_garbage = st.binary(max_size=80) | st.builds(
    bytes.__add__, st.sampled_from([b"\x00", b"\x01", b"\x01x\x9c"]), st.binary(max_size=80)
)


@FUZZ
@given(data=_garbage)
@example(data=b"\x01garbage")
@example(data=b"\x00")
@example(data=b"\x01" + zlib.compress(b"x" * 100))
@example(data=b"\x01" + zlib.compress(b"[]")[:-2])
def test_serializer_loads_random_bytes(serializer_name: str, data: bytes) -> None:
    _check_loads(SERIALIZERS[serializer_name], data)


@FUZZ
@given(value=_json_like, cut=st.integers(0, 3))
def test_serializer_loads_tagged_json(serializer_name: str, value: Any, cut: int) -> None:
    """Structured input reaches the tag decoders; a truncation reaches the error paths."""
    raw = _json_bytes(value)
    raw = raw[: len(raw) - cut] if cut else raw
    _check_loads(SERIALIZERS[serializer_name], _as_stored(serializer_name, raw))


@FUZZ
@given(value=_json_like, data=st.data())
def test_pickle_bytes_that_fail_the_signature_never_reach_pickle(
    value: Any, data: st.DataObject
) -> None:
    serializer = PickleSerializer(SECRET)
    good = serializer.dumps(value)
    bad = data.draw(mutated(st.just(good)))
    calls: list[bytes] = []
    real = _serializers.pickle.loads

    def spy(payload: bytes, *args: Any, **kwargs: Any) -> Any:
        calls.append(payload)
        return real(payload, *args, **kwargs)

    _serializers.pickle.loads = spy  # type: ignore[assignment]
    try:
        try:
            serializer.loads(bad)
        except SerializationError:
            assert calls == []
        else:
            assert bad == good and len(calls) == 1
        with pytest.raises(SerializationError, match="signature"):
            PickleSerializer(b"other key").loads(good)
    finally:
        _serializers.pickle.loads = real  # type: ignore[assignment]
    assert calls == [] or bad == good


# Inputs that once escaped JSONSerializer.loads as something other than SerializationError.
HUGE_INT = b"9" * 4301  # CPython's int-from-str limit (sys.get_int_max_str_digits) is 4300
TIMEDELTA_OVERFLOW = b'{"__cc":["timedelta",[1000000000,0,0]]}'  # |days| > 999999999


@settings(max_examples=20, deadline=None)
@given(digits=st.integers(4301, 6000), where=st.sampled_from([b"%s", b"[%s]", b'{"a":%s}']))
@example(digits=4301, where=b"%s")
def test_json_loads_huge_int_raises_serialization_error(digits: int, where: bytes) -> None:
    with pytest.raises(SerializationError):
        JSONSerializer().loads(where % (b"9" * digits))


@settings(max_examples=20, deadline=None)
@given(days=st.integers(10**9, 10**30) | st.integers(-(10**30), -(10**9)))
@example(days=10**9)
def test_json_loads_timedelta_out_of_range_raises_serialization_error(days: int) -> None:
    with pytest.raises(SerializationError):
        JSONSerializer().loads(b'{"__cc":["timedelta",[%d,0,0]]}' % days)


# ------------------------------------------------------------------------------ TypedCache


@st.composite
def stored_bytes(draw: st.DrawFn, fid: int) -> bytes:
    """Bytes as they might sit in a shared cache: garbage, or a plausible envelope around it."""
    kind = draw(st.sampled_from(["random", "plain", "envelope", "json"]))
    if kind == "random":
        return draw(st.binary(max_size=60))
    if kind == "plain":  # our header, garbage payload: reaches the serializer
        return bytes((MAGIC, VERSION, 0, fid)) + draw(st.binary(max_size=40))
    if kind == "json":  # our header, JSON-like payload (tags included)
        return bytes((MAGIC, VERSION, 0, fid)) + _json_bytes(draw(_json_like))
    header = bytes((MAGIC, VERSION, draw(st.integers(0, 255)), draw(st.sampled_from([fid, 0, 1]))))
    return header + draw(st.binary(max_size=40))


LOADED = {"loaded": ["by", "the", "loader", 12345]}


@FUZZ
@given(data=st.data())
def test_typed_cache_reads_arbitrary_stored_bytes(
    serializer_name: str, data: st.DataObject
) -> None:
    serializer = SERIALIZERS[serializer_name]
    fid = serializer.format_id[0]
    raw = data.draw(stored_bytes(fid))
    if serializer_name.startswith("compressed-") and raw[:4] == bytes((MAGIC, VERSION, 0, fid)):
        raw = raw[:4] + b"\x00" + raw[4:]  # the raw marker, so JSON reaches the inner decoder
    store = MemoryCache(timer=lambda: 0.0)
    typed: TypedCache[Any] = TypedCache(store, serializer=serializer, clock=lambda: 1e9)
    store.set("k", raw)
    try:
        direct: Any = typed.get("k")
        decodable = True
    except SerializationError:
        decodable = False
    calls: list[int] = []

    def loader() -> Any:
        calls.append(1)
        return LOADED

    got = typed.get_or_set("k", loader, ttl=60)
    if got == LOADED and calls:
        assert calls == [1]
        assert typed.get("k") == LOADED  # repaired
        assert typed.get_or_set("k", loader) == LOADED and calls == [1]
    else:
        # repr as well as ==: a decoded NaN (float or Decimal) never equals itself
        assert decodable and calls == [] and (got == direct or repr(got) == repr(direct))
        assert store.get("k") == raw  # a good entry is left alone


@pytest.mark.parametrize("payload", [HUGE_INT, TIMEDELTA_OVERFLOW], ids=["huge-int", "timedelta"])
def test_typed_get_or_set_repairs_extreme_numbers(payload: bytes) -> None:
    store = MemoryCache()
    typed: TypedCache[Any] = TypedCache(store)
    store.set("k", bytes((MAGIC, VERSION, 0, ord("j"))) + payload)
    assert typed.get_or_set("k", lambda: "fresh") == "fresh"
    assert typed.get("k") == "fresh"


# ------------------------------------------------------------------------------ in a child

CHILD = textwrap.dedent(
    r"""
    import json, random, struct, sys, zlib
    from cache_core import (BloomFilter, CompressedSerializer, JSONSerializer, NATIVE,
                            PickleSerializer, SerializationError)
    from cache_core._envelope import pack, unpack

    count, seed = int(sys.argv[1]), int(sys.argv[2])
    rng = random.Random(seed)
    H = struct.Struct("<4sHHQdIIQQ")

    def mutate(blob):
        data = bytearray(blob)
        for _ in range(rng.randrange(1, 5)):
            op = rng.randrange(6)
            pos = rng.randrange(len(data) + 1)
            if op == 0 and data:
                data[min(pos, len(data) - 1)] = rng.randrange(256)
            elif op == 1:
                data[pos:pos] = rng.randbytes(rng.randrange(1, 9))
            elif op == 2:
                del data[pos : pos + rng.randrange(1, 9)]
            elif op == 3:
                del data[pos:]
            elif op == 4:
                data += data[pos : pos + rng.randrange(1, 64)]
            elif op == 5 and len(data) >= H.size:
                fields = list(H.unpack_from(data))
                j = rng.randrange(1, 9)
                fields[j] = (rng.choice([0.0, 1.0, float("nan"), float("inf"), 5e-324])
                             if j == 4 else rng.choice([0, 1, 2**(rng.randrange(1, 64)) - 1]))
                try:
                    data[: H.size] = H.pack(*fields)
                except struct.error:
                    pass
        return bytes(data)

    def resign(blob):
        if len(blob) < H.size + 4:
            return blob
        crc = zlib.crc32(blob[H.size + 4:], zlib.crc32(blob[:H.size]))
        return blob[:H.size] + struct.pack("<I", crc) + blob[H.size + 4:]

    tally = {}
    backends = ["python"] + (["native"] if NATIVE else [])
    bases = []
    for cap, rate in [(1, 0.5), (9, 0.1), (200, 0.01), (1000, 1e-5)]:
        bf = BloomFilter(cap, rate, seed=rng.randrange(2**32), backend="python")
        bf.update(rng.randbytes(rng.randrange(1, 9)) for _ in range(cap))
        bases.append(bf.to_bytes())
    for backend in backends:
        ok = bad = 0
        for i in range(count):
            blob = mutate(rng.choice(bases))
            if i % 2:
                blob = resign(blob)
            try:
                bf = BloomFilter.from_bytes(blob, backend=backend)
            except ValueError:
                bad += 1
                continue
            ok += 1
            assert bf.to_bytes() == blob
            bf.update([b"a", "b", b""])
            assert bf.contains_many([b"a", "b", b""]) == [True, True, True]
            (bf | bf.copy()) & bf
        tally["bloom-" + backend] = (ok, bad)

    envs = [pack(f, rng.randbytes(rng.randrange(20)), delta=d, expires_at=e, tombstone=t)
            for f in (0, 106, 255) for d, e in ((None, None), (1.5, 2e9))
            for t in (False, True)]
    ok = bad = 0
    for i in range(count * 4):
        blob = mutate(rng.choice(envs)) if i % 3 else rng.randbytes(rng.randrange(30))
        try:
            unpack(blob, rng.choice((0, 106, 255)))
            ok += 1
        except SerializationError:
            bad += 1
    tally["envelope"] = (ok, bad)

    sers = {"json": JSONSerializer(), "pickle": PickleSerializer(b"k"),
            "compressed": CompressedSerializer(JSONSerializer(), threshold=16)}
    samples = [None, 1, "x" * 40, [1.5, {"a": [True]}], {"__cc": 1}, b"\x00\xff" * 9,
               {1, 2, 3}, float("nan")]
    unexpected = []
    for name, ser in sers.items():
        goods = [ser.dumps(v) for v in samples]
        ok = bad = 0
        for i in range(count):
            blob = mutate(rng.choice(goods)) if i % 2 else rng.randbytes(rng.randrange(60))
            try:
                ser.loads(blob)
                ok += 1
            except SerializationError:
                bad += 1
            except Exception as exc:  # collected, reported by the parent
                unexpected.append((name, blob, repr(exc)))
        tally[name] = (ok, bad)
    print(json.dumps({"tally": tally, "unexpected": [repr(u) for u in unexpected[:5]],
                      "n_unexpected": len(unexpected)}))
    """
)


@pytest.mark.slow
def test_large_batch_in_a_child_process() -> None:
    """Thousands of corrupt inputs per decoder; a crash of the child fails the test."""
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, "3000", "8"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
    )
    assert proc.returncode == 0, f"fuzz child died ({proc.returncode}):\n{proc.stderr[-3000:]}"
    report = json.loads(proc.stdout)
    assert report["n_unexpected"] == 0, report["unexpected"]
    tally = report["tally"]
    assert set(tally) >= {"bloom-python", "envelope", "json", "pickle", "compressed"}
    # Each decoder saw both outcomes, so the batch really reached past the first check.
    for name, (ok, bad) in tally.items():
        assert bad > 0, name
        assert ok > 0 or name.startswith("bloom-"), name

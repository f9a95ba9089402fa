"""``python -m cache_core inspect --url URL --prefix P``: a read-only view of a live Redis.

What it reports for the keys under ``P:`` (every key when ``P`` is empty):

* key count and memory: SCAN (``COUNT --scan-count``, never KEYS) with ``MEMORY USAGE`` on each
  key it sees (with ``PTTL`` and ``GETRANGE 0 3``, in one ``EVAL_RO`` call per 500 keys); with
  ``--sample N`` the scan stops after N keys and the totals are estimates,
  scaled by how much of the keyspace the SCAN cursor has covered (the cursor walks the hash
  table in reverse-binary order, so its bit-reversal is the fraction of buckets visited);
* the TTL distribution (``PTTL``) and the entries by serializer: the first 4 bytes of each value
  (``GETRANGE 0 3``) are the envelope header of ``_envelope`` (magic, version, flags, serializer
  id), so typed entries are told apart by serializer, tombstones and metadata; anything else is
  ``raw``;
* the library's own keys (the reserved ``__cc`` segments): lease locks held (remaining lease
  from ``PTTL``, age from the acquire time that starts the lock's token, against Redis'
  ``TIME``; a lock taken by an older version has no age), shared bloom
  filters (``__ccbf__``: parameters from ``:meta``, fill from ``BITCOUNT`` of each part, the
  estimated false-positive rate ``fill ** k``) and bloom snapshots (``__ccbs__`` pointers).
  They are found by a second SCAN whose MATCH returns only library keys, over the whole
  keyspace (library keys are few; this pass transfers almost nothing, but Redis walks every
  key: about a second per million keys here). ``--library-budget SECONDS`` bounds it (with
  ``--sample`` it defaults to ``SAMPLED_LIBRARY_BUDGET``, 1 s, so a sampled run stays bounded on
  any keyspace; ``--library-budget inf`` scans it all); the report then says which fraction of
  the keyspace it covered.

Every command is O(1) per key or a bounded SCAN page; nothing blocks the server, nothing is
written (the connection asks ``CLIENT NO-TOUCH ON`` where Redis supports it, so sampling does not
change the keys' LRU order). Progress goes to stderr once a scan has taken over a second.
Output: plain text, or ``--json``. Single Redis servers only (not Cluster).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Final, TextIO

import redis

from . import _serializers
from ._envelope import FLAG_META, FLAG_TOMBSTONE, MAGIC, VERSION
from ._inspect_library import BloomInfo, LockInfo, library_keys
from ._inspect_scan import PIPELINE, Coverage, Progress, scan
from ._redis_keys import escape_glob
from ._validate import check_int, has_segment

__all__ = [
    "BloomInfo",
    "InspectReport",
    "LockInfo",
    "add_parser",
    "format_text",
    "inspect_redis",
    "main",
    "run",
]

#: Seconds the library-key pass may take by default when ``--sample`` bounds the run.
SAMPLED_LIBRARY_BUDGET: Final = 1.0
TTL_BUCKETS: Final = (
    ("< 1 min", 60_000),
    ("1-10 min", 600_000),
    ("10-60 min", 3_600_000),
    ("1-24 h", 86_400_000),
    (">= 1 day", math.inf),
)
# One call describes a batch of keys (about 0.3 ms of Redis time for 500): 30,000 replies of
# single commands cost 0.5 s of parsing in redis-py, 20 script replies almost nothing.
_DESCRIBE: Final = """
local out = {}
for i, key in ipairs(KEYS) do
    out[3 * i - 2] = redis.call('MEMORY', 'USAGE', key, 'SAMPLES', '0') or -1
    out[3 * i - 1] = redis.call('PTTL', key)
    if redis.call('TYPE', key)['ok'] == 'string' then
        out[3 * i] = redis.call('GETRANGE', key, 0, 3)
    else
        out[3 * i] = 0
    end
end
return out
"""


def _serializer_names() -> dict[int, str]:
    """Serializer id -> class name, for every serializer class the package defines."""
    names: dict[int, str] = {}
    for obj in vars(_serializers).values():
        fid = getattr(obj, "format_id", None)
        if isinstance(obj, type) and isinstance(fid, bytes) and len(fid) == 1:
            names[fid[0]] = obj.__name__
    return names


@dataclass
class InspectReport:
    url: str
    prefix: str
    complete: bool  # the scan covered every key (totals exact) or stopped at --sample
    keys_seen: int
    keys_estimated: int
    memory_seen_bytes: int
    memory_estimated_bytes: int
    scan_coverage: float
    seconds: float
    ttl: dict[str, int] = field(default_factory=dict)
    entries: dict[str, int] = field(default_factory=dict)
    locks: list[LockInfo] = field(default_factory=list)
    blooms: list[BloomInfo] = field(default_factory=list)
    snapshots: list[str] = field(default_factory=list)
    library_coverage: float = 1.0  # below 1.0: --library-budget ran out before the scan ended


def inspect_redis(
    client: Any,
    prefix: str,
    *,
    sample: int | None = None,
    scan_count: int = 1000,
    url: str = "",
    stderr: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
    library_budget: float | None = None,
) -> InspectReport:
    """Build the report (see the module docstring); ``client`` is a ``redis.Redis``.

    The two passes run one after the other: Redis, single-threaded, does the work of both, so
    running them in two threads measured no faster.
    """
    if sample is not None:
        check_int(sample, "sample", minimum=1)
    start = clock()
    kp = prefix + ":" if prefix else ""
    with contextlib.suppress(redis.ResponseError):  # Redis >= 7.2: reads keep the LRU order
        client.execute_command("CLIENT", "NO-TOUCH", "ON")
    progress = Progress(stderr, clock, start)
    tally = _Tally(_Describer(client), _serializer_names())
    coverage = Coverage()
    pages = scan(client, _match(kp), scan_count, coverage, progress.of("sampling", coverage))
    tally.count(pages, kp.encode(), sample, coverage)
    report = tally.report(url, prefix)
    lib_coverage = Coverage()
    deadline = None if library_budget is None else clock() + library_budget
    show = progress.of("library keys", lib_coverage)
    library = library_keys(client, kp, scan_count, lib_coverage, show, deadline, clock)
    report.locks = library.locks
    report.blooms = library.blooms
    report.snapshots = library.snapshots
    report.library_coverage = library.coverage
    report.seconds = clock() - start
    return report


def _match(kp: str) -> str:
    return escape_glob(kp) + "*" if kp else "*"


class _Describer:
    """(memory, pttl, first 4 bytes) of each key of a batch: one read-only script call per batch
    (Redis >= 7), else a pipeline of three commands per key (what the script runs)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._scripted = True

    def __call__(self, batch: list[bytes]) -> list[Any]:
        if self._scripted:
            try:
                return list(self._client.eval_ro(_DESCRIBE, len(batch), *batch))
            except redis.ResponseError:
                self._scripted = False  # EVAL_RO unknown or not allowed: plain commands
        pipe = self._client.pipeline(transaction=False)
        for key in batch:
            pipe.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0")
            pipe.pttl(key)
            pipe.getrange(key, 0, 3)
        return list(pipe.execute(raise_on_error=False))


class _Tally:
    """The sampling pass: memory, TTLs and entry kinds of the keys seen, and the estimate."""

    def __init__(self, describe: _Describer, serializers: dict[int, str]) -> None:
        self._describe = describe
        self._serializers = serializers
        self.ttl: Counter[str] = Counter()
        self.entries: Counter[str] = Counter()
        self.memory = 0
        self.seen = 0
        self.complete = True
        self.fraction = 1.0  # of the keyspace the counted keys stand for

    def count(
        self,
        pages: Iterable[list[bytes]],
        kp_bytes: bytes,
        sample: int | None,
        coverage: Coverage,
    ) -> None:
        """Describe the user keys of each page, stopping after ``sample`` keys (if given)."""
        before = 0.0  # coverage before the current page
        for page in pages:
            keys = [k for k in page if not has_segment(k[len(kp_bytes) :])]
            share = 1.0
            if sample is not None and self.seen + len(keys) > sample:
                share = (sample - self.seen) / len(keys)  # the part of this page's buckets
                keys = keys[: sample - self.seen]
            for first in range(0, len(keys), PIPELINE):
                self._add(keys[first : first + PIPELINE])
            self.seen += len(keys)
            if sample is not None and self.seen >= sample:
                self.complete = coverage.cursor == 0 and share == 1.0
                self.fraction = before + (coverage.fraction - before) * share
                break
            before = coverage.fraction
        if self.complete:
            self.fraction = 1.0

    def _add(self, batch: list[bytes]) -> None:
        replies = self._describe(batch)
        for i in range(len(batch)):
            mem, pttl, head = replies[3 * i : 3 * i + 3]
            if isinstance(mem, int):
                self.memory += mem
            self.ttl[_ttl_bucket(pttl)] += 1
            self.entries[_entry_kind(head, self._serializers)] += 1

    def report(self, url: str, prefix: str) -> InspectReport:
        """The report of this pass (its library fields and time still to fill in)."""
        complete, fraction = self.complete, self.fraction
        ttl = self.ttl
        return InspectReport(
            url=url,
            prefix=prefix,
            complete=complete,
            keys_seen=self.seen,
            keys_estimated=self.seen if complete else round(self.seen / fraction),
            memory_seen_bytes=self.memory,
            memory_estimated_bytes=self.memory if complete else round(self.memory / fraction),
            scan_coverage=fraction,
            seconds=0.0,
            ttl={name: ttl[name] for name, _ in (("no expiry", 0), *TTL_BUCKETS) if ttl[name]},
            entries=dict(self.entries.most_common()),
        )


def _ttl_bucket(pttl: object) -> str:
    if not isinstance(pttl, int) or pttl < 0:
        return "no expiry"
    for name, bound in TTL_BUCKETS:
        if pttl < bound:
            return name
    return TTL_BUCKETS[-1][0]


def _entry_kind(head: object, serializers: dict[int, str]) -> str:
    if not isinstance(head, bytes):
        return "not a string"  # a WRONGTYPE error (pipeline), or 0 (script)
    if len(head) < 4 or head[0] != MAGIC or head[1] != VERSION:
        return "raw"
    name = serializers.get(head[3], f"serializer id {head[3]}")
    if head[2] & FLAG_TOMBSTONE:
        return f"tombstone ({name})"
    if head[2] & FLAG_META:
        return f"{name} + metadata"
    return name


# -- command line ----------------------------------------------------------------------------


def add_parser(sub: Any) -> None:
    p = sub.add_parser("inspect", help="read-only view of the cache keys in a live Redis")
    p.add_argument("--url", required=True, help="redis://host:port/db")
    p.add_argument("--prefix", default="", help="the RedisCache prefix (keys under PREFIX:)")
    p.add_argument("--sample", type=int, default=None, help="stop after N keys and estimate")
    p.add_argument("--scan-count", type=int, default=1000, help="SCAN COUNT per page")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument(
        "--library-budget",
        type=float,
        default=None,
        help="seconds at most for the pass that finds locks and bloom filters (default: 1 with "
        "--sample, else no limit; inf: no limit)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    """``python -m cache_core inspect ...``"""
    parser = argparse.ArgumentParser(prog="python -m cache_core")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(["inspect", *(sys.argv[2:] if argv is None else argv)]), out)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    client = redis.Redis.from_url(args.url, socket_timeout=10, socket_connect_timeout=5)
    try:
        report = inspect_redis(
            client,
            args.prefix,
            sample=args.sample,
            scan_count=args.scan_count,
            url=args.url,
            stderr=None if args.quiet else sys.stderr,
            library_budget=_budget(args.library_budget, args.sample),
        )
    except redis.RedisError as exc:
        print(f"inspect: {args.url}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    out = out or sys.stdout
    if args.json:
        json.dump(asdict(report), out, indent=2)
        out.write("\n")
    else:
        out.write(format_text(report))
    return 0


def _budget(given: float | None, sample: int | None) -> float | None:
    if given is None:
        return SAMPLED_LIBRARY_BUDGET if sample is not None else None
    return None if given == float("inf") else given


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def format_text(r: InspectReport) -> str:
    approx = "" if r.complete else "~"
    lines = [
        f"cache_core inspect {r.url}  prefix {r.prefix!r}  ({r.seconds:.2f} s)",
        f"keys:    {approx}{r.keys_estimated:,}"
        + ("" if r.complete else f"  (sampled {r.keys_seen:,}, {r.scan_coverage:.1%} scanned)"),
        f"memory:  {approx}{_size(r.memory_estimated_bytes)}"
        + ("" if r.complete else f"  (sampled {_size(r.memory_seen_bytes)})"),
        "ttl:     " + ", ".join(f"{k}: {v}" for k, v in r.ttl.items()),
        "entries: " + ", ".join(f"{k}: {v}" for k, v in r.entries.items()),
        f"lease locks held: {len(r.locks)}",
    ]
    if r.library_coverage < 1.0:
        lines[-1] += f"  (library keys: {r.library_coverage:.0%} of the keyspace scanned)"
    for lock in r.locks:
        left = "-" if lock.lease_left_s is None else f"{lock.lease_left_s:.1f}s"
        age = "-" if lock.age_s is None else f"{lock.age_s:.1f}s"
        lines.append(f"  {lock.key}  age {age}  lease left {left}")
    lines.append(f"bloom filters: {len(r.blooms)}")
    for b in r.blooms:
        lines.append(
            f"  {b.key}  capacity {b.capacity:,}  fill {b.fill_ratio:.1%}  "
            f"~{b.approx_count:,} keys  estimated FPR {b.estimated_fpr:.2g} "
            f"(target {b.error_rate:g})"
        )
    if r.snapshots:
        lines.append(f"bloom snapshots: {len(r.snapshots)}")
        lines.extend(f"  {s}" for s in r.snapshots)
    return "\n".join(lines) + "\n"

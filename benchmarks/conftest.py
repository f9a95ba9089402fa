"""Benchmark helpers: interleaved ratio measurements, reported in the terminal summary.

Absolute times on a 2-vCPU machine move 15-40 % between runs, so every target is judged as a ratio
against a baseline measured in the same run, in alternating rounds (A, B, A, B, ...) so that a
burst of noise hits both sides alike.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

from tests.conftest import (  # noqa: F401  (fixtures re-used by the benchmarks)
    cluster_client,
    fault_server,
    redis_client,
    redis_cluster,
    redis_server,
    redis_workdir,
)


@dataclass
class Comparison:
    """Per-operation medians of interleaved rounds, and each side's ratio to the baseline."""

    name: str
    baseline: str
    unit_ns: dict[str, float]
    ratios: dict[str, float]
    target: str = ""
    notes: list[str] = field(default_factory=list)


_RESULTS: list[Comparison] = []


def interleaved(
    name: str,
    fns: dict[str, Callable[[], object]],
    *,
    baseline: str,
    ops_per_call: int = 1,
    inner: int = 100,
    rounds: int = 30,
    target: str = "",
) -> Comparison:
    """Time each fn ``inner`` times per round, alternating order, and compare medians."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    order = list(fns)
    for fn in fns.values():  # warm-up: connections, caches, code paths
        for _ in range(max(1, inner // 10)):
            fn()
    for _ in range(rounds):
        random.shuffle(order)
        for key in order:
            fn = fns[key]
            start = time.perf_counter_ns()
            for _ in range(inner):
                fn()
            samples[key].append((time.perf_counter_ns() - start) / (inner * ops_per_call))
    medians = {k: statistics.median(v) for k, v in samples.items()}
    ratios = {k: medians[k] / medians[baseline] for k in medians}
    result = Comparison(name, baseline, medians, ratios, target)
    _RESULTS.append(result)
    return result


def record(result: Comparison) -> None:
    """Add a measurement that is not an interleaved ratio (a latency) to the summary."""
    _RESULTS.append(result)


@pytest.fixture
def compare() -> Iterator[Callable[..., Comparison]]:
    yield interleaved


def _fmt_ns(ns: float) -> str:
    return f"{ns / 1000:.2f} µs" if ns >= 1000 else f"{ns:.0f} ns"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _RESULTS:
        return
    tr = terminalreporter
    tr.section("interleaved ratios (median per op; ratio to the baseline of the same run)")
    for r in _RESULTS:
        tr.write_line(f"{r.name}  [target: {r.target or '-'}]")
        for k, ns in r.unit_ns.items():
            mark = " (baseline)" if k == r.baseline else ""
            tr.write_line(f"    {k:<44} {_fmt_ns(ns):>12}   x{r.ratios[k]:.3f}{mark}")
        for note in r.notes:
            tr.write_line(f"    {note}")
    out = Path(os.environ.get("CACHE_CORE_BENCH_JSON", ".benchmarks/ratios.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps([asdict(r) for r in _RESULTS], indent=2))
    tr.write_line(f"(written to {out})")

"""Fault injection: a real redis-server stopped, restarted, paused and resumed under load."""

from __future__ import annotations

import pytest

from tests import fault_scenario
from tests.redis_harness import RedisServer


@pytest.mark.slow
def test_mixed_workload_survives_stop_pause_and_restart(fault_server: RedisServer) -> None:
    report = fault_scenario.run(fault_server)
    errors = [c.error for c in report.calls if c.error is not None]
    assert errors == [], errors[:3]  # no get_or_set caller ever saw an exception
    assert len(report.calls) > 1000
    assert report.max_concurrent_loads_per_key == 1  # one loader per key at a time
    open_calls = report.open_latencies()
    assert len(open_calls) > 100  # the breaker really was open under traffic
    # While open, no call waits for a socket timeout (0.2 s); the p99 target itself
    # (loader + 1 ms) is measured by benchmarks/test_bench_faults.py, not asserted here.
    assert report.p99_open() < 0.1
    # After each recovery the same cache object is used again within reset_timeout + 1 s.
    assert len(report.recovery_seconds) == 2
    assert all(s <= fault_scenario.RESET_TIMEOUT + 1.0 for s in report.recovery_seconds)
    # The delete made while Redis was paused is never undone by the old value.
    assert report.victim_reads_after_delete > 0
    assert report.victim_old_values_after_delete == 0
    assert report.other_errors > 0  # direct set/delete did report the outage

"""gunicorn settings for examples/metrics_app.py (Prometheus multi-process mode).

A worker that exits leaves its counter files behind (its counts stay in the totals, as a
Prometheus counter must); ``mark_process_dead`` removes its live gauges (breaker state, bloom).
"""

from typing import Any

from prometheus_client import multiprocess


def child_exit(server: Any, worker: Any) -> None:
    multiprocess.mark_process_dead(worker.pid)

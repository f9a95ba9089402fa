"""Drive ``examples/gunicorn_app.py`` under a real gunicorn: concurrent reads, updates, checks.

Used by ``tests/test_gunicorn.py`` (a few seconds per run) and runnable on its own for the
issue's 60-second target (it starts its own redis-server on a free loopback port)::

    .venv/bin/python -m tests.gunicorn_load --seconds 60 --workers 4 --threads 8 --preload

Every update gets a new, higher version of its key and is acknowledged at a known time; it goes
through one worker (``POST``), through ``redis-cli SET``, or through redis-py, in turn. A read
that *started* more than ``bound`` seconds after the acknowledgement of version N and returned
a version below N is a stale read past the bound. ``lag`` is, over all reads that returned an
older version than one already acknowledged when they started, the longest such delay: the
observed staleness window (it includes the HTTP round trip).
"""

from __future__ import annotations

import argparse
import bisect
import http.client
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.redis_harness import HOST, REDIS_CLI, RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class LoadReport:
    reads: int = 0
    updates: int = 0
    stale_past_bound: int = 0
    lag_max: float = 0.0
    lags: list[float] = field(default_factory=list)
    status_5xx: int = 0
    other_errors: list[str] = field(default_factory=list)
    hangs: int = 0
    stale_by_mode: dict[str, int] = field(default_factory=dict)
    pids: set[int] = field(default_factory=set)
    worker_boots: int = 0
    log_tail: str = ""

    def summary(self) -> str:
        lags = sorted(self.lags)
        p99 = lags[int(len(lags) * 0.99)] if lags else 0.0
        return (
            f"reads={self.reads} updates={self.updates} stale_past_bound={self.stale_past_bound} "
            f"late_reads={len(lags)} lag_p99={p99 * 1000:.1f}ms "
            f"lag_max={self.lag_max * 1000:.1f}ms "
            f"5xx={self.status_5xx} hangs={self.hangs} errors={len(self.other_errors)} "
            f"workers={len(self.pids)} boots={self.worker_boots} "
            f"stale_by_update_mode={self.stale_by_mode}"
        )


class Gunicorn:
    """One gunicorn master serving the example app; stopped with SIGTERM."""

    def __init__(
        self, redis_url: str, prefix: str, *, workers: int, threads: int, preload: bool,
        warm: list[str], l1_ttl: float = 60.0,
    ) -> None:  # fmt: skip
        self.port = free_port()
        self.log = Path(tempfile.mkstemp(prefix="gunicorn-", suffix=".log")[1])
        gunicorn = shutil.which("gunicorn", path=str(Path(sys.executable).parent)) or "gunicorn"
        args = [
            gunicorn, "-k", "gthread", "-w", str(workers), "--threads", str(threads),
            "-b", f"{HOST}:{self.port}", "--timeout", "30", "--graceful-timeout", "5",
            "--log-level", "info", *(["--preload"] if preload else []),
            "examples.gunicorn_app:app",
        ]  # fmt: skip
        env = dict(os.environ)
        env.update(
            CACHE_CORE_EXAMPLE_URL=redis_url,
            CACHE_CORE_EXAMPLE_PREFIX=prefix,
            CACHE_CORE_EXAMPLE_L1_TTL=str(l1_ttl),
            CACHE_CORE_EXAMPLE_WARM=",".join(warm),
            PYTHONPATH=str(ROOT),
        )
        self._logfile = self.log.open("wb")
        self.proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=self._logfile, stderr=subprocess.STDOUT
        )
        self.workers = workers

    def wait_ready(self, timeout: float = 20.0) -> None:
        # Another process's readiness: poll with a deadline.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.log.read_text()[-2000:]}")
            try:
                conn = http.client.HTTPConnection(HOST, self.port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    conn.close()
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise TimeoutError("gunicorn did not answer /health")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._logfile.close()
        text = self.log.read_text(errors="replace")
        self.log.unlink()
        return text


def run_load(
    port: int, redis_client: redis.Redis, redis_port: int, prefix: str, *, seconds: float,
    keys: list[str], readers: int = 12, update_interval: float = 0.02, bound: float = 0.1,
) -> LoadReport:  # fmt: skip
    """Read random keys from ``readers`` threads while one thread updates them; then check."""
    report = LoadReport()
    versions = itertools.count(1)
    acks: dict[str, list[tuple[float, int]]] = {k: [(0.0, 0)] for k in keys}
    reads: list[tuple[float, str, int]] = []
    modes: dict[int, str] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        conn = http.client.HTTPConnection(HOST, port, timeout=10)
        mine: list[tuple[float, str, int]] = []
        while not stop.is_set():
            key = rng.choice(keys)
            start = time.monotonic()
            try:
                conn.request("GET", f"/v/{key}")
                response = conn.getresponse()
                body = response.read()
            except TimeoutError:
                with lock:
                    report.hangs += 1
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=10)
                continue
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    report.other_errors.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=10)
                continue
            if response.status >= 500:
                with lock:
                    report.status_5xx += 1
                continue
            if response.status != 200:
                with lock:
                    report.other_errors.append(f"{response.status} {body[:100]!r}")
                continue
            payload = json.loads(body)
            mine.append((start, key, int(payload["value"])))
            with lock:
                report.pids.add(int(payload["pid"]))
            if len(mine) % 10 == 0:  # a new connection now and then: every worker gets reads
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=10)
        conn.close()
        with lock:
            reads.extend(mine)

    def updater() -> None:
        rng = random.Random(0)
        conn = http.client.HTTPConnection(HOST, port, timeout=10)
        for i in itertools.count():
            if stop.wait(update_interval):
                return
            key = rng.choice(keys)
            version = next(versions)
            mode = i % 3
            try:
                if mode == 0:
                    conn.request("POST", f"/v/{key}?value={version}")
                    response = conn.getresponse()
                    response.read()
                    if response.status != 200:
                        raise RuntimeError(f"POST answered {response.status}")
                elif mode == 1:
                    subprocess.run(
                        [REDIS_CLI, "-h", HOST, "-p", str(redis_port), "SET",
                         f"{prefix}:{key}", str(version)],
                        check=True, capture_output=True, timeout=10,
                    )  # fmt: skip
                else:
                    redis_client.set(f"{prefix}:{key}", str(version))
            except Exception as exc:
                with lock:
                    report.other_errors.append(f"update: {exc!r}")
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=10)
                continue
            acked = time.monotonic()
            with lock:
                acks[key].append((acked, version))
                modes[version] = ("POST", "redis-cli", "redis-py")[mode]
                report.updates += 1

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(readers)]
    threads.append(threading.Thread(target=updater))
    for t in threads:
        t.start()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join(30)
        if t.is_alive():
            report.hangs += 1

    report.reads = len(reads)
    for start, key, version in reads:
        history = acks[key]
        times = [a for a, _ in history]
        # The newest version acknowledged at least `bound` before the read started.
        i = bisect.bisect_right(times, start - bound) - 1
        if version < history[i][1]:
            report.stale_past_bound += 1
            newer = next(v for _, v in history if v > version)
            mode = modes.get(newer, "?")
            report.stale_by_mode[mode] = report.stale_by_mode.get(mode, 0) + 1
        # Staleness window: how long ago was the first version newer than the one returned
        # acknowledged, if that was before the read started.
        j = bisect.bisect_right(times, start) - 1
        if version < history[j][1]:
            first_newer = next(a for a, v in history if v > version)
            lag = start - first_newer
            report.lags.append(lag)
            report.lag_max = max(report.lag_max, lag)
    return report


def run(
    *, seconds: float, workers: int, threads: int, preload: bool, readers: int = 12,
    bound: float = 0.1, redis_server: RedisServer | None = None, prefix: str = "gload",
    nkeys: int = 20,
) -> LoadReport:  # fmt: skip
    """Start redis (unless given) and gunicorn, warm, load, stop; the report of one run."""
    own = redis_server is None
    workdir = None
    if redis_server is None:
        workdir = Path(tempfile.mkdtemp(prefix="gload-"))
        redis_server = RedisServer(workdir).start()
    client = redis_server.client()
    keys = [f"k{n}" for n in range(nkeys)]
    try:
        for key in keys:
            client.set(f"{prefix}:{key}", "0")
        server = Gunicorn(
            redis_server.url, prefix, workers=workers, threads=threads, preload=preload, warm=keys
        )
        try:
            server.wait_ready()
            report = run_load(
                server.port, client, redis_server.port, prefix, seconds=seconds, keys=keys,
                readers=readers, bound=bound,
            )  # fmt: skip
        finally:
            log = server.stop()
        report.worker_boots = log.count("Booting worker")
        report.log_tail = log[-3000:]
        if "Traceback" in log:
            report.other_errors.append("traceback in the gunicorn log")
        return report
    finally:
        client.close()
        if own:
            redis_server.stop()
            if workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--readers", type=int, default=16)
    parser.add_argument("--bound", type=float, default=0.1)
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--preload", action="store_true")
    args = parser.parse_args()
    report = run(
        seconds=args.seconds, workers=args.workers, threads=args.threads, preload=args.preload,
        readers=args.readers, bound=args.bound, nkeys=args.keys,
    )  # fmt: skip
    print(report.summary())
    if report.other_errors:
        print("errors:", report.other_errors[:10])
    ok = not (report.stale_past_bound or report.status_5xx or report.hangs or report.other_errors)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

"""A steady, bounded HTTP request stream against sandbox hosts' nginx, with every answer recorded.

Test and benchmark machinery, not part of the deployer: tests/test_zero_downtime.py counts the
failed requests during a deploy, and scripts/demo runs ``python -m benchmarks.traffic`` in the
background while it deploys and rolls back. Requests go to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from deployer.sandbox.image import SandboxError


@dataclass
class Sample:
    """One request of a Traffic run: which host, when sent and answered (time.time()), what came back."""

    host: str
    sent: float
    done: float
    status: int  # 0: no HTTP answer (see error)
    body: str
    error: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300 and not self.error

    @property
    def version(self) -> str:
        """The sample app's answer is ``sample <version> <sha>``: its version word."""
        words = self.body.split()
        return words[1] if len(words) >= 2 and words[0] == "sample" else ""


class Traffic:
    """A steady, bounded stream of HTTP GETs to sandbox hosts' published port 80 (127.0.0.1 only).

    ``threads`` workers per host share ``rate`` requests/s in total; half of them keep one
    connection alive, the other half open a new connection per request. The run ends at
    ``stop()``, after ``max_seconds`` or after ``max_requests``, whichever comes first.
    Every request is recorded as a ``Sample``; nothing is retried.
    """

    def __init__(
        self,
        targets: dict[str, int],
        *,
        rate: float = 150,
        threads: int = 2,
        path: str = "/",
        max_seconds: float = 120,
        max_requests: int = 40000,
        timeout: float = 10,
    ):
        if not targets:
            raise SandboxError("traffic: no target ports")
        self.targets = dict(targets)
        self.path = path
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self.timeout = timeout
        self.workers = [(name, port, i % 2 == 0) for name, port in self.targets.items() for i in range(threads)]
        self.interval = len(self.workers) / rate  # each worker's pace: one request per interval
        self._stop = threading.Event()
        self._count = 0
        self._lock = threading.Lock()
        self._threads: list = []
        self._samples: list[list[Sample]] = []
        self.started = self.ended = 0.0

    def __enter__(self) -> Traffic:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> Traffic:
        self.started = time.time()
        for n, (name, port, keepalive) in enumerate(self.workers):
            out: list[Sample] = []
            self._samples.append(out)
            t = threading.Thread(
                target=self._run, args=(name, port, keepalive, n, out), daemon=True, name=f"traffic-{name}-{n}"
            )
            self._threads.append(t)
            t.start()
        return self

    def stop(self) -> list[Sample]:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 5)
        if not self.ended:
            self.ended = time.time()
        return self.samples

    def paced(self, seconds: float) -> int:
        """How many requests a run that keeps its pace sends at least in its first ``seconds``:
        worker n sends at n/W, 1 + n/W, 2 + n/W... intervals (W workers), so each sends
        floor(seconds / interval) of them. A test that let the stream run that long asserts its
        count against this: a stream that stalled (a hung connection, a starved client) sends fewer."""
        return math.floor(seconds / self.interval + 1e-9) * len(self.workers)  # 1.2 / 0.05: 24, not 23

    @property
    def samples(self) -> list[Sample]:
        return sorted((s for out in self._samples for s in out), key=lambda s: s.sent)

    def _take(self) -> bool:
        with self._lock:
            if self._count >= self.max_requests:
                return False
            self._count += 1
            return True

    def _run(self, name: str, port: int, keepalive: bool, n: int, out: list[Sample]) -> None:
        deadline = time.monotonic() + self.max_seconds
        next_at = time.monotonic() + self.interval * n / len(self.workers)  # spread the first requests
        conn = None
        while not self._stop.is_set() and time.monotonic() < deadline and self._take():
            pause = next_at - time.monotonic()
            if pause > 0 and self._stop.wait(pause):
                break
            next_at = max(next_at + self.interval, time.monotonic() - 1.0)  # catch up at most 1 s
            sent = time.time()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=self.timeout)
                conn.request("GET", self.path, headers={} if keepalive else {"Connection": "close"})
                response = conn.getresponse()
                body = response.read(4096).decode(errors="replace")
                out.append(Sample(name, sent, time.time(), response.status, body))
                if not keepalive or response.will_close:
                    conn.close()
                    conn = None
            except Exception as exc:  # refused, reset, timeout: exactly what must never happen
                out.append(Sample(name, sent, time.time(), 0, "", f"{type(exc).__name__}: {exc}"))
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()
        self.ended = max(self.ended, time.time())

    def summary(self, samples: list[Sample] | None = None) -> dict:
        """Counts: total, ok, failed (non-2xx), errors (no answer), rate, and per host the versions seen."""
        samples = self.samples if samples is None else samples
        seconds = max((self.ended or time.time()) - self.started, 1e-9)
        per_host: dict[str, dict[str, int]] = {name: {} for name in self.targets}
        for s in samples:
            if s.ok:
                per_host[s.host][s.version or "?"] = per_host[s.host].get(s.version or "?", 0) + 1
        return {
            "requests": len(samples),
            "ok": sum(s.ok for s in samples),
            "failed": sum(1 for s in samples if not s.error and not s.ok),
            "errors": sum(1 for s in samples if s.error),
            "seconds": round(seconds, 2),
            "rate": round(len(samples) / seconds, 1),
            "versions": per_host,
            "first_errors": [f"{s.host}: {s.error or s.status}" for s in samples if not s.ok][:5],
        }


def format_summary(summary: dict) -> str:
    """The counts of ``Traffic.summary`` as a few lines of text."""
    lines = [
        f"{summary['requests']} requests in {summary['seconds']:g}s ({summary['rate']:g}/s): "
        f"{summary['ok']} ok, {summary['failed']} failed (non-2xx), {summary['errors']} connection errors"
    ]
    for host, versions in summary["versions"].items():
        seen = ", ".join(f"{v}: {n}" for v, n in sorted(versions.items())) or "nothing"
        lines.append(f"  {host}: {seen}")
    for e in summary["first_errors"]:
        lines.append(f"  ! {e}")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    """GET / on every running sandbox host (the ones ``deployer sandbox.up`` started from this
    directory) until stopped, a limit is reached or the stop file appears; then print the counts."""
    from deployer.sandbox.instance import running

    parser = argparse.ArgumentParser(prog="python -m benchmarks.traffic")
    parser.add_argument("--rate", type=float, default=150, help="requests/s in total (default 150)")
    parser.add_argument("--max-seconds", type=float, default=120, help="hard time limit (default 120)")
    parser.add_argument("--max-requests", type=int, default=40000, help="hard count limit (default 40000)")
    parser.add_argument("--stop-file", help="stop as soon as this file exists")
    parser.add_argument("--json", help="also write the counts to this file")
    args = parser.parse_args(argv)

    hosts = [h for h in running() if h.http_port]
    if not hosts:
        raise SandboxError("no running sandbox host with port 80 published (run: deployer sandbox.up)")
    run = Traffic(
        {h.name: h.http_port for h in hosts if h.http_port},
        rate=args.rate,
        max_seconds=args.max_seconds,
        max_requests=args.max_requests,
    )
    signal.signal(signal.SIGTERM, lambda *_: run._stop.set())
    run.start()
    deadline = time.monotonic() + args.max_seconds
    try:
        while time.monotonic() < deadline and any(t.is_alive() for t in run._threads):
            if args.stop_file and os.path.exists(args.stop_file):
                break
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    run.stop()
    summary = run.summary()
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    print(format_summary(summary), flush=True)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except SandboxError as e:
        sys.exit(f"traffic: {e}")

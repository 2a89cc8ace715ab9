"""Tiny dependency-free WSGI sample app (served by gunicorn as ``app:application``).

``/health`` answers ``ok``; every other path answers ``sample <version> <short sha>``.
Both values are read once at import time from files next to this module in the
release: ``REVISION`` (full git sha, added to every artifact) and, if present,
``VERSION`` (otherwise the short sha doubles as the version).

A release that contains a file ``UNHEALTHY`` answers ``/health`` with 503 and that
file's text (everything else still works): a bad release for trying out verify
and automatic rollback. Two more files make releases that only their traffic gives away
(the canary analysis): ``FAILS`` holds a percentage of the other requests answered 500
(spread evenly: every 20th with 5), ``SLOW`` holds ``PATH MS``: requests to PATH take MS longer.

``/metrics`` answers in the Prometheus text format: ``sample_build_info{version}``,
``sample_fail_percent`` and ``sample_slow_ms`` (this release's settings, as gauges).
"""

import itertools
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _read(name):
    try:
        return (HERE / name).read_text(encoding="utf-8").strip()
    except OSError:
        return ""


SHA = _read("REVISION")[:7] or "unknown"
VERSION = _read("VERSION") or SHA
BODY = f"sample {VERSION} {SHA}\n".encode()
SICK = (HERE / "UNHEALTHY").exists()
SICK_BODY = f"unhealthy: {_read('UNHEALTHY')}\n".encode()
FAIL_PERCENT = float(_read("FAILS") or 0)
SLOW_PATH, _, _slow = (_read("SLOW") or " 0").partition(" ")
SLOW_MS = float(_slow or 0)
COUNT = itertools.count(1)
METRICS = (
    "# TYPE sample_build_info gauge\n"
    f'sample_build_info{{version="{VERSION}"}} 1\n'
    "# TYPE sample_fail_percent gauge\n"
    f"sample_fail_percent {FAIL_PERCENT:g}\n"
    "# TYPE sample_slow_ms gauge\n"
    f"sample_slow_ms {SLOW_MS:g}\n"
).encode()


def _fails() -> bool:
    """True for FAIL_PERCENT % of calls, spread evenly."""
    n = next(COUNT)
    return int(n * FAIL_PERCENT / 100) != int((n - 1) * FAIL_PERCENT / 100)


def application(environ, start_response):
    status = "200 OK"
    path = environ.get("PATH_INFO", "/")
    content_type = "text/plain; charset=utf-8"
    if path == "/health":
        body = SICK_BODY if SICK else b"ok\n"
        status = "503 Service Unavailable" if SICK else status
    elif path == "/metrics":
        body, content_type = METRICS, "text/plain; version=0.0.4"
    elif FAIL_PERCENT and _fails():
        body, status = b"internal error (FAILS)\n", "500 Internal Server Error"
    else:
        body = BODY
    if SLOW_MS and path == SLOW_PATH:
        time.sleep(SLOW_MS / 1000)
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]

"""Tiny dependency-free WSGI sample app (served by gunicorn as ``app:application``).

``/health`` answers ``ok``; every other path answers ``sample <version> <short sha>``.
Both values are read once at import time from files next to this module in the
release: ``REVISION`` (full git sha, added to every artifact) and, if present,
``VERSION`` (otherwise the short sha doubles as the version).

A release that contains a file ``UNHEALTHY`` answers ``/health`` with 503 and that
file's text (everything else still works): a bad release for trying out verify
and automatic rollback.
"""

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


def application(environ, start_response):
    status = "200 OK"
    if environ.get("PATH_INFO", "/") == "/health":
        body = SICK_BODY if SICK else b"ok\n"
        status = "503 Service Unavailable" if SICK else status
    else:
        body = BODY
    start_response(
        status,
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
        ],
    )
    return [body]

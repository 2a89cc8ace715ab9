"""The everyday ops commands' scripts (run, logs, ssh, maintenance), never run here: each names
its file under scripts/ and its inputs, which enter only through `render.render`. They run with
the login's own umask, as they did typed by hand (no `umask 022` header)."""

from __future__ import annotations

import html
import posixpath

from deployer.errors import UsageError
from deployer.plan.paths import Paths
from deployer.remote.render import Value, render
from deployer.remote.user_command import user_inputs

MAINTENANCE_PAGE = "maintenance.html"  # under shared/: nginx answers 503 with it while it exists


def in_current(paths: Paths, command: str, env: dict[str, str], run_as: str = "") -> str:
    """`command` run by sh in current (as run_as when set); exit 1 with a line when there is no release."""
    values = {"CURRENT": paths.current, "DEPLOY_TO": paths.deploy_to, **user_inputs(command, env, run_as)}
    return render(["run_in_current.sh"], values, header="")


def shared_rel(path: str) -> str:
    """A path under shared/, normalised; bad input when it leaves shared/ or is not a plain path."""
    if not path or "\0" in path or "\n" in path or path.startswith("/"):
        raise UsageError(f"expected a path relative to shared/, got {path!r}")
    norm = posixpath.normpath(path)
    if norm == ".." or norm.startswith("../"):
        raise UsageError(f"{path!r} leaves shared/")
    return norm


def tail(paths: Paths, path: str, lines: int, follow: bool) -> str:
    """The last `lines` lines of shared/PATH (a file, or every *.log in a directory); -F follows."""
    values: dict[str, Value] = {
        "SHARED": paths.shared,
        "DEPLOY_TO": paths.deploy_to,
        "FILE": path,
        "LINES": int(lines),
        "FOLLOW": follow,
    }
    return render(["tail.sh"], values, header="")


def shell(paths: Paths, run_as: str = "") -> str:
    """An interactive login shell in current (deploy_to before the first release), as run_as when set."""
    return render(["shell.sh"], {"CURRENT": paths.current, "DEPLOY_TO": paths.deploy_to, "RUN_AS": run_as}, header="")


def page(message: str) -> str:
    """The maintenance page: the message, HTML-escaped."""
    text = html.escape(message or "We are doing some maintenance. Back soon.")
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8"><title>Maintenance</title></head>\n'
        f"<body><h1>Down for maintenance</h1><p>{text}</p></body></html>\n"
    )


def maintenance(paths: Paths, on: bool, content: str, token: str, ledger_line: str) -> str:
    """Write (atomically: a temp file, then rename) or remove shared/maintenance.html, then record it."""
    values: dict[str, Value] = {
        "ON": on,
        "SHARED": paths.shared,
        "PAGE": paths.shared_path(MAINTENANCE_PAGE),
        "TMP": paths.shared_path(f".{MAINTENANCE_PAGE}.{token}"),
        "CONTENT": content,
        "STATE": paths.state,
        "LEDGER": paths.ledger,
        "LEDGER_LINE": ledger_line,
    }
    return render(["maintenance.sh"], values, header="set -e\n")


def nginx_snippet(deploy_to: str) -> str:
    """For an nginx server block: while shared/maintenance.html exists, every request gets it with 503."""
    shared = posixpath.join(deploy_to, "shared")
    return f"""    # deployer maintenance on|off: serve shared/{MAINTENANCE_PAGE} with 503 while it exists
    error_page 503 @maintenance;
    if (-f {shared}/{MAINTENANCE_PAGE}) {{ return 503; }}
    location @maintenance {{
        root {shared};
        add_header Retry-After 120 always;
        rewrite ^ /{MAINTENANCE_PAGE} break;
    }}
"""

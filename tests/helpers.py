"""Helpers for tests that drive the real CLI against sandbox hosts."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def default_sigint() -> None:
    """In the child before exec: SIGINT (and SIGTERM, SIGHUP) as a terminal leaves them. A
    shell's background job (as a CI runner may start the suite) has SIGINT ignored, `nohup`
    SIGHUP; Python then never raises KeyboardInterrupt, and a signal test would measure nothing."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def cli_env() -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("DEPLOYER_CONFIG", None)
    return env


def cli(sb, *args: str, timeout: float = 180, cwd: Path | None = None,
        stdout=subprocess.PIPE, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `deployer ARGS --config <sandbox config>` as ops would, capturing output (stdout: or
    into that file descriptor); `env` adds to the environment."""
    return subprocess.run([sys.executable, "-m", "deployer", *args, "--config", str(sb.config_path)],
                          stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=timeout,
                          env={**cli_env(), **(env or {})}, cwd=cwd or sb.config_path.parent)


def closed_pipe() -> int:
    """The write end of a pipe nobody reads any more (a `| head` that exited); the caller closes it."""
    r, w = os.pipe()
    os.close(r)
    return w


def cli_popen(sb, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "deployer", *args, "--config", str(sb.config_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**cli_env(), **(env or {})},
                            cwd=sb.config_path.parent, preexec_fn=default_sigint)


def status(sb) -> list[dict]:
    """status --json: one record per host."""
    proc = cli(sb, "status", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["hosts"]


def releases(sb) -> list[dict]:
    """releases --json, flattened: one record per release per host, with its host."""
    proc = cli(sb, "releases", "--json")
    assert proc.returncode == 0, proc.stderr
    return [{"host": h["host"], **r} for h in json.loads(proc.stdout)["hosts"] for r in h["releases"]]


def tree(sb, host, deploy_to: str = "/srv/app") -> str:
    """A listing of every path under deploy_to with link targets: compare before/after."""
    code, out = sb.exec(host, f"cd {shlex.quote(deploy_to)} 2>/dev/null && find . -printf '%p %y %l\\n' | sort")
    return out


def release_dirs(sb, host, deploy_to: str = "/srv/app") -> list[str]:
    code, out = sb.exec(host, f"ls -A {shlex.quote(deploy_to + '/releases')} 2>/dev/null")
    return sorted(out.split())


def current(sb, host, deploy_to: str = "/srv/app") -> str:
    code, out = sb.exec(host, f"readlink {shlex.quote(deploy_to + '/current')}")
    return out.strip() if code == 0 else ""


def commit_change(repo: Path, name: str, content: str) -> None:
    """A new commit in the app repo: a new artifact."""
    from conftest import git
    (repo / name).write_text(content)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"change {name}")


def wait_until(predicate, timeout: float, what: str, every: float = 0.05):
    """Poll predicate until it returns something truthy (bounded in time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def agent_pids(under: str) -> list[int]:
    """Connection agents whose socket is under `under` (those a test started). Read from /proc:
    the machine that runs the tests is Linux, whatever client it simulates."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"deployer.ssh.agent_server" in argv and any(a.decode(errors="replace").startswith(under) for a in argv):
            pids.append(int(entry))
    return pids


def kill_agents(under: str, sig: int = signal.SIGKILL) -> None:
    for pid in agent_pids(under):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    wait_until(lambda: not agent_pids(under), 10, "the agents to exit")

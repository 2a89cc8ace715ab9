"""The client on a machine that is not Linux (macOS, a BSD), against real sshd hosts.

The CLI runs in a process made to look like macOS (simulated_macos.py, via sitecustomize): no
SO_PEERCRED, TCP_QUICKACK or other Linux-only attributes, no /proc or /dev/shm, Unix socket
paths of at most 103 bytes, sys.platform "darwin". The connection agent it starts runs the same
way. What must hold: build, deploy and rollback work; with getpeereid (macOS) the agent keeps
connections as on Linux; without any way to check a socket's peer the agent refuses to start and
ssh.persist says why in one line while the run connects directly.
"""

from __future__ import annotations

import ctypes.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from helpers import REPO, agent_pids, cli, commit_change, current, kill_agents

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def simulated(tmp_path):
    """`simulated(peer)`: the environment of a CLI run that looks like macOS (see module doc)."""
    made: list[Path] = []

    def make(peer: str) -> dict:
        if peer == "getpeereid" and not ctypes.util.find_library("bsd"):
            pytest.fail("libbsd0 is needed to simulate macOS's getpeereid (scripts/setup installs it)", pytrace=False)
        site = tmp_path / f"site-{peer}"
        site.mkdir()
        (site / "sitecustomize.py").write_text(f"import simulated_macos\nsimulated_macos.apply({peer!r})\n")
        short = Path(tempfile.mkdtemp(dir="/tmp", prefix="dpl-"))  # the agent's TMPDIR, short
        made.append(short)
        path = [str(site), str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {"PYTHONPATH": os.pathsep.join(path), "TMPDIR": str(short)}
        probe = subprocess.run(
            [sys.executable, "-c", "import socket, sys; print(sys.platform, hasattr(socket, 'SO_PEERCRED'))"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=True,
        )
        assert probe.stdout.split() == ["darwin", "False"], probe.stderr  # the simulation is in force
        return env

    yield make
    for short in made:
        kill_agents(str(short))
        subprocess.run(["rm", "-rf", str(short)], check=False)


def long_cache(tmp_path: Path) -> str:
    """An XDG_CACHE_HOME that puts the agent's socket at 105 bytes: fine on Linux (107), too
    long on macOS (103)."""
    tail = len("/deployer/agent/0123456789ab.sock")
    cache = tmp_path / ("c" * (105 - tail - len(str(tmp_path)) - 1))
    assert len(str(cache)) + tail == 105
    return str(cache)


def only_git(tmp_path: Path) -> str:
    """A PATH holding nothing but git: the client runs no other local program (no tar,
    sha256sum, ssh...), so GNU-only flags of local tools cannot matter on a Mac."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "git").symlink_to(shutil.which("git"))
    return str(bin_dir)


def test_a_macos_client_builds_deploys_rolls_back_and_keeps_connections(sandbox, app_repo, tmp_path, simulated):
    sb = sandbox(2, ssh={"persist": 30})
    env = {**simulated("getpeereid"), "XDG_CACHE_HOME": long_cache(tmp_path), "PATH": only_git(tmp_path)}
    build = cli(sb, "build", env=env)
    assert build.returncode == 0, build.stdout + build.stderr
    for step in ("deploy", "commit", "deploy", "rollback"):
        if step == "commit":
            commit_change(app_repo, "app.py", "VERSION = 2\n")
            continue
        proc = cli(sb, step, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "ssh.persist" not in proc.stderr and "Traceback" not in proc.stderr
    assert all(current(sb, h) == "releases/1" for h in sb.hosts)
    assert [sb.logins(h) for h in sb.hosts] == [1, 1]  # one agent kept both connections
    # its socket moved to the short directory: the cache path is too long for a Mac's socket
    [pid] = agent_pids(env["TMPDIR"])
    agent_dir = Path(env["TMPDIR"]) / f"deployer-{os.getuid()}" / "agent"
    assert [p.name for p in agent_dir.glob("*.sock")]
    assert not (Path(env["XDG_CACHE_HOME"]) / "deployer" / "agent").exists()
    # and the agent ran simulated too (it checks its peers with getpeereid)
    assert env["PYTHONPATH"].split(os.pathsep)[0] in Path(f"/proc/{pid}/environ").read_text(errors="replace")
    proc = cli(sb, "disconnect", env=env)
    assert proc.returncode == 0 and "closed 2 kept-open connection(s)" in proc.stdout, proc.stdout + proc.stderr


def test_a_client_without_peer_credentials_connects_directly_and_says_why(sandbox, app_repo, tmp_path, simulated):
    sb = sandbox(1, ssh={"persist": 30})
    env = simulated("none")
    said = (
        "warning: ssh.persist: this system offers no way to check who is at the other end of a Unix socket "
        "(neither SO_PEERCRED nor getpeereid); connecting directly"
    )
    for step in ("build", "deploy", "commit", "deploy", "rollback", "status"):
        if step == "commit":
            commit_change(app_repo, "app.py", "VERSION = 2\n")
            continue
        proc = cli(sb, step, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr
        persist = [line for line in proc.stderr.splitlines() if "ssh.persist" in line]
        assert persist == ([said] if step != "build" else [])
    assert current(sb, 0) == "releases/1"
    assert sb.logins(0) == 4  # every run connected by itself
    assert agent_pids(env["TMPDIR"]) == [] and agent_pids(os.environ["XDG_CACHE_HOME"]) == []
    # the agent itself, started by hand, refuses in one line
    proc = subprocess.run(
        [sys.executable, "-m", "deployer.ssh.agent_server", str(Path(env["TMPDIR"]) / "a.sock"), "5"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert (proc.returncode, proc.stderr.splitlines()) == (
        2,
        [
            "agent: not starting: this system offers no way to check who is at the other end of a Unix socket "
            "(neither SO_PEERCRED nor getpeereid)"
        ],
    )

"""Persistent connections (`ssh.persist`): the connection agent against real sshd hosts.

What must hold: a second run opens no new SSH connection; a connection the host dropped, or an
agent that died, costs a reconnect and never a failed run; a client that goes away (Ctrl-C,
kill) gets its remote process group killed as without the agent; timeouts, stdin streaming and
early exits behave as with a direct connection; the agent exits when idle; its socket is private.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import helpers
import pytest
from helpers import cli, commit_change, current, sandbox_host, wait_until

from deployer.config import load as config_mod
from deployer.config.settings import Host, SSHSettings
from deployer.errors import ConfigError
from deployer.ssh import agent_client, agent_protocol, agent_socket, transport_for
from deployer.ssh.types import Cancelled, TransportError

PERSIST = {"ssh": {"persist": 30}}


def agent_pids() -> list[int]:
    """Agents started from this test run (their socket is under this run's cache dir)."""
    return helpers.agent_pids(str(agent_client.socket_path().parent))


def kill_agents(sig: int = signal.SIGKILL) -> None:
    helpers.kill_agents(str(agent_client.socket_path().parent), sig)


@pytest.fixture(autouse=True)
def no_agent_left():
    kill_agents()
    yield
    kill_agents()


def test_the_next_run_opens_no_new_connection(sandbox, app_repo):
    sb = sandbox(3, **PERSIST)
    assert cli(sb, "deploy").returncode == 0
    assert [sb.logins(h) for h in sb.hosts] == [1, 1, 1]
    commit_change(app_repo, "app.py", "VERSION = 2\n")
    before = [sb.command_count(h) for h in sb.hosts]
    for args in (("deploy",), ("status",), ("rollback",)):
        proc = cli(sb, *args)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [sb.logins(h) for h in sb.hosts] == [1, 1, 1]  # every run reused the first connection
    assert all(current(sb, h) == "releases/1" for h in sb.hosts)
    # the same remote commands as without the agent: deploy 4, status 1, rollback 2
    assert [sb.command_count(h) - b for h, b in zip(sb.hosts, before, strict=True)] == [7, 7, 7]
    assert len(agent_pids()) == 1


def test_a_dropped_connection_or_a_dead_agent_costs_a_reconnect_not_a_run(sandbox, app_repo):
    sb = sandbox(2, **PERSIST)
    assert cli(sb, "deploy").returncode == 0
    # the host drops the agent's connection (sshd restarted its sessions, a NAT forgot it...)
    sb.exec(1, "pkill -f 'sshd: deploy' || true")
    commit_change(app_repo, "app.py", "VERSION = 2\n")
    proc = cli(sb, "deploy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [sb.logins(h) for h in sb.hosts] == [1, 2]
    # the agent itself dies between runs: the next run starts another one
    kill_agents()
    proc = cli(sb, "rollback")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [sb.logins(h) for h in sb.hosts] == [2, 3]
    assert all(current(sb, h) == "releases/1" for h in sb.hosts)


def test_streams_stdin_and_stops_early_like_a_direct_connection(sandbox):
    sb = sandbox(1)
    conn = transport_for(sandbox_host(sb, persist=30)).open()
    data = os.urandom(3 << 20)
    seen: list[int] = []
    result = conn.run("sha256sum", stdin=io.BytesIO(data), progress=seen.append)
    assert result.ok and result.stdout.split()[0] == hashlib.sha256(data).hexdigest()
    assert seen and seen[-1] == len(data)
    # the command stops reading after 10 bytes: its exit status comes back, no hang, no error
    started = time.monotonic()
    result = conn.run("head -c 10 >/dev/null; echo done >&2; exit 3", stdin=io.BytesIO(bytes(64 << 20)))
    assert (result.exit_code, result.stderr.strip()) == (3, "done")
    assert time.monotonic() - started < 20
    assert conn.run("echo still; exit 0").stdout == "still\n"
    rtt = conn.rtt()  # the agent's connection timed the link
    assert isinstance(rtt, float) and 0 < rtt < 30


def test_timeout_and_cancel_kill_the_remote_process_group(sandbox):
    sb = sandbox(1)
    conn = transport_for(sandbox_host(sb, persist=30)).open()
    started = time.monotonic()
    with pytest.raises(TransportError, match="timed out after 2s"):
        conn.run("sleep 1000 & sleep 1001; echo never", timeout=2)
    assert time.monotonic() - started < 8
    wait_until(
        lambda: sb.exec(0, "pgrep -f 'sleep 100[01]' || echo none")[1].strip() == "none",
        5,
        "the timed-out sleeps to be killed",
    )
    conn.open()
    cancel = threading.Event()
    threading.Timer(1, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        conn.run("sleep 1002", cancel=cancel)
    assert time.monotonic() - started < 5
    wait_until(
        lambda: sb.exec(0, "pgrep -f 'sleep 100[2]' || echo none")[1].strip() == "none",
        5,
        "the cancelled sleep to be killed",
    )


def test_a_client_that_vanishes_mid_command_gets_its_remote_process_killed(sandbox):
    sb = sandbox(1)
    host = sandbox_host(sb, persist=30)
    conn = transport_for(host).open()
    # what a SIGKILLed run leaves: a request whose socket closes while the command runs
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(conn.path))
        request = {"op": "run", "host": agent_protocol.host_spec(host), "script": "sleep 1004", "timeout": 600}
        s.sendall(agent_protocol.frame_json(b"Q", request) + agent_protocol.frame(b"E"))
        wait_until(lambda: sb.exec(0, "pgrep -f 'sleep 100[4]'")[0] == 0, 10, "the remote sleep to start")
    wait_until(
        lambda: sb.exec(0, "pgrep -f 'sleep 100[4]' || echo none")[1].strip() == "none",
        10,
        "the orphaned sleep to be killed",
    )
    assert conn.run("true").ok


def test_an_agent_killed_mid_command_is_an_error_not_a_hang(sandbox):
    sb = sandbox(1)
    conn = transport_for(sandbox_host(sb, persist=30)).open()
    threading.Timer(1, kill_agents).start()
    started = time.monotonic()
    with pytest.raises(TransportError, match="connection agent"):
        conn.run("sleep 1005")
    assert time.monotonic() - started < 10
    assert not conn.alive
    assert conn.open().run("echo back").stdout == "back\n"  # a new agent, a new connection


def test_the_agent_exits_when_idle_and_its_socket_is_private(sandbox):
    sb = sandbox(1, ssh={"persist": 2})
    assert cli(sb, "status").returncode == 0
    sock = wait_until(lambda: next(agent_client.socket_path().parent.glob("*.sock"), None), 5, "the agent's socket")
    assert stat.S_IMODE(os.stat(agent_client.socket_path().parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    assert len(agent_pids()) == 1
    wait_until(lambda: not agent_pids(), 15, "the idle agent to exit")
    assert not sock.exists()
    wait_until(lambda: "Connection closed by" in sb.logs(0), 5, "sshd to see the connection closed")


def test_disconnect_closes_kept_connections(sandbox):
    sb = sandbox(2, **PERSIST)
    assert cli(sb, "status").returncode == 0
    assert len(agent_pids()) == 1
    proc = cli(sb, "disconnect")
    assert proc.returncode == 0 and "closed 2 kept-open connection(s)" in proc.stdout, proc.stdout + proc.stderr
    wait_until(lambda: not agent_pids(), 5, "the agent to exit")
    assert cli(sb, "status").returncode == 0  # a new agent, new connections
    assert [sb.logins(h) for h in sb.hosts] == [2, 2]


def test_without_persist_no_agent_is_started(sandbox):
    sb = sandbox(1)
    assert cli(sb, "status").returncode == 0
    assert agent_pids() == []


# --- who may talk to whom -------------------------------------------------------------------------

OTHER_UID = 12345
OTHER_PYTHON = "/usr/bin/python3"  # the system's: the other uid cannot read ours under /root
LISTENER = """
import socket, sys
server = socket.socket(socket.AF_UNIX)
server.bind(sys.argv[1])
server.listen(8)
open(sys.argv[2], "wb").close()
while True:
    conn, _ = server.accept()
    conn.settimeout(2)
    try:
        while data := conn.recv(65536):
            with open(sys.argv[2], "ab") as got:
                got.write(data)
    except OSError:
        pass
    conn.close()
"""


def persist_warnings(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if "ssh.persist" in line]


def test_the_agent_keeps_none_of_the_secrets_of_the_run_that_started_it(sandbox, monkeypatch):
    secret = f"agent-env-{os.urandom(8).hex()}"
    monkeypatch.setenv("AGENT_TEST_SECRET", secret)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret + "-aws")  # anything else a laptop holds
    sb = sandbox(1, **PERSIST, env={"API_KEY": {"secret": "env:AGENT_TEST_SECRET"}})
    proc = cli(sb, "deploy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"API_KEY={secret}" in sb.exec(0, "cat /srv/app/current/.env")[1]  # it went where it belongs
    [pid] = agent_pids()
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    assert secret.encode() not in environ
    assert secret.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    names = {entry.split(b"=", 1)[0].decode() for entry in environ.split(b"\0") if entry}
    assert names and {n for n in names if not n.startswith("LC_")} <= set(agent_client.AGENT_ENV)
    commit_change(sb.source, "app.py", "VERSION = 2\n")
    proc = cli(sb, "deploy")  # the agent still does its work with what it kept
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sb.logins(0) == 1 and agent_pids() == [pid]


@pytest.mark.parametrize("unsafe", ["world-writable", "group-writable", "another user's"])
def test_the_client_refuses_a_socket_directory_another_user_could_change(sandbox, tmp_path, unsafe):
    """Another user who can rename a directory on the socket's path can put a socket of theirs
    where the agent's should be and read the scripts and env files sent to it. The client says
    so in one line and connects directly; it creates nothing there and starts no agent."""
    sb = sandbox(1, **PERSIST)
    shared = tmp_path / "s"  # short: the socket path stays in it
    shared.mkdir()
    if unsafe == "another user's":
        os.chown(shared, OTHER_UID, OTHER_UID)
        shared.chmod(0o755)
    else:
        shared.chmod(0o777 if unsafe == "world-writable" else 0o775)
    env = {"XDG_CACHE_HOME": str(shared / "c")}
    for _ in range(2):
        proc = cli(sb, "status", env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        [warning] = persist_warnings(proc)
        assert warning.startswith(f"warning: ssh.persist: {shared} ") and warning.endswith("; connecting directly")
        assert ("belongs to uid 12345" if unsafe == "another user's" else "writable by other users") in warning
    assert list(shared.iterdir()) == []
    assert helpers.agent_pids(str(shared)) == []
    assert sb.logins(0) == 2  # each run connected by itself


def test_the_client_never_talks_to_an_agent_socket_served_by_another_user(sandbox, tmp_path):
    """A socket in this user's agent directory whose listener is another uid gets no byte: the
    client checks the peer (SO_PEERCRED / getpeereid), says why in one line, connects directly."""
    sb = sandbox(1, **PERSIST)
    theirs = Path(tempfile.mkdtemp(dir="/tmp", prefix="deployer-other-"))
    theirs.chmod(0o777)
    listener = subprocess.Popen(
        [OTHER_PYTHON, "-c", LISTENER, str(theirs / "s.sock"), str(theirs / "got")],
        user=OTHER_UID,
        group=OTHER_UID,
        extra_groups=[],
        cwd="/",
    )
    target = agent_client.socket_path()
    try:
        wait_until(lambda: (theirs / "got").exists(), 10, "the other user's listener")
        os.rename(theirs / "s.sock", target)
        proc = cli(sb, "status")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        [warning] = persist_warnings(proc)
        assert f"{target} is served by uid {OTHER_UID}, not by this user" in warning
        assert (theirs / "got").read_bytes() == b""
        assert agent_pids() == [] and sb.logins(0) == 1
    finally:
        listener.kill()
        listener.wait()
        target.unlink(missing_ok=True)
        shutil.rmtree(theirs)


def test_the_agent_answers_only_its_own_user(sandbox):
    sb = sandbox(1)
    where = Path(tempfile.mkdtemp(dir="/tmp", prefix="deployer-agent-"))  # a path the other uid can reach
    try:
        conn = agent_client.AgentConnection(sandbox_host(sb, persist=30), where / "a.sock").open()
        where.chmod(0o711)
        conn.path.chmod(0o666)
        stranger = (
            "import socket, sys\n"
            "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
            "try:\n    s.sendall(bytes.fromhex(sys.argv[2])); got = s.recv(100)\n"
            "except OSError:\n    got = b''\n"  # closed on it before it finished sending
            "print(repr(got))\n"
        )
        stop = agent_protocol.frame_json(b"Q", {"op": "stop"}).hex()
        out = subprocess.run(
            [OTHER_PYTHON, "-c", stranger, str(conn.path), stop],
            user=OTHER_UID,
            group=OTHER_UID,
            extra_groups=[],
            capture_output=True,
            text=True,
            timeout=30,
            cwd="/",
        )
        assert (out.returncode, out.stdout.strip()) == (0, "b''"), out.stderr
        assert conn.run("echo still serving").stdout == "still serving\n"
    finally:
        helpers.kill_agents(str(where))
        shutil.rmtree(where)


# --- pure -----------------------------------------------------------------------------------------


def test_frames_round_trip_and_oversized_frames_are_refused():
    a, b = socket.socketpair()
    with a, b:
        a.sendall(
            agent_protocol.frame(b"D", b"x" * 1000)
            + agent_protocol.frame_json(b"R", {"code": 0})
            + agent_protocol.frame(b"E")
        )
        assert agent_protocol.read_frame(b) == (b"D", b"x" * 1000)
        assert agent_protocol.read_frame(b) == (b"R", b'{"code": 0}')
        assert agent_protocol.read_frame(b) == (b"E", b"")
        a.sendall(b"D" + (agent_protocol.MAX_FRAME + 1).to_bytes(4, "big"))
        with pytest.raises(EOFError, match="refused"):
            agent_protocol.read_frame(b)
        a.close()
        assert agent_protocol.read_frame(b) is None


def test_connection_key_ignores_what_does_not_change_the_connection():
    base = Host("h1", "10.0.0.1", SSHSettings(user="deploy", persist=30))
    same = dataclasses.replace(
        base, name="other-name", ssh=dataclasses.replace(base.ssh, persist=60, command_timeout=5)
    )
    other_user = dataclasses.replace(base, ssh=dataclasses.replace(base.ssh, user="ops"))
    key = agent_protocol.connection_key(agent_protocol.host_spec(base))
    assert agent_protocol.connection_key(agent_protocol.host_spec(same)) == key
    assert agent_protocol.connection_key(agent_protocol.host_spec(other_user)) != key
    assert agent_protocol.host_from_spec(agent_protocol.host_spec(base)) == base


def test_persist_is_validated():
    with pytest.raises(ConfigError, match="persist"):
        config_mod.parse(
            '[app]\nname = "a"\ndeploy_to = "/srv/a"\n[ssh]\npersist = -1\n[stages.s]\nhosts = ["h"]\n',
            Path("hosts.toml"),
        )


def _socket_name(root: Path, tmp: Path) -> str:
    """The agent socket name the package copied under `root` would use."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp),
        "XDG_CACHE_HOME": str(tmp / "cache"),
        "PYTHONPATH": str(root),
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from deployer.ssh import agent_client as a; "
            "import deployer; print(deployer.__file__); print(a.socket_path().name)",
        ],
        env=env,
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    where, name = proc.stdout.split()
    assert Path(where).is_relative_to(root)  # the copy ran, not the checkout
    return name


def test_the_socket_name_changes_with_any_module_of_the_package(tmp_path):
    """An agent runs whatever code it imported when it started: a change in any module, not just
    the agent's own, must give a new socket, so no run talks to an agent of other code."""
    package = Path(agent_client.__file__).resolve().parents[1]
    ignore = shutil.ignore_patterns("__pycache__")
    names = {}
    for change in (None, "ssh/types.py", "ssh/runloop.py", "remote/commands.py", "report/output.py"):
        root = tmp_path / (change or "same").replace("/", "-")
        shutil.copytree(package, root / "deployer", ignore=ignore)
        if change:
            with open(root / "deployer" / change, "a") as fh:
                fh.write("\n# changed\n")
        names[change] = _socket_name(root, tmp_path)
    assert names[None] == agent_client.socket_path().name  # same code, same name
    assert len(set(names.values())) == len(names), names


def test_the_agent_environment_is_what_ssh_needs_and_nothing_else():
    env = agent_client.agent_env(
        {
            "HOME": "/home/ops",
            "PATH": "/usr/bin",
            "SSH_AUTH_SOCK": "/run/ssh.sock",
            "LC_ALL": "C.UTF-8",
            "PYTHONPATH": "/extra",
            "SHOP_SECRET_KEY": "s3cr3t",
            "AWS_SECRET_ACCESS_KEY": "aws",
            "GITHUB_TOKEN": "ghp",
            "XDG_CACHE_HOME": "/c",
        }
    )
    assert sorted(env) == ["HOME", "LC_ALL", "PATH", "PYTHONPATH", "SSH_AUTH_SOCK"]
    root = str(Path(agent_client.__file__).resolve().parents[2])
    assert env["PYTHONPATH"] == root + os.pathsep + "/extra"


def test_private_dir_accepts_only_directories_no_other_user_can_change(tmp_path):
    sticky = tmp_path / "sticky"  # like /tmp: others may add entries, never move ours
    sticky.mkdir()
    sticky.chmod(0o1777)
    made = agent_socket.private_dir(sticky / "me" / "agent")
    assert made == (sticky / "me" / "agent").resolve()
    assert stat.S_IMODE(os.stat(made).st_mode) == 0o700
    (tmp_path / "loose").mkdir(mode=0o755)
    (tmp_path / "loose").chmod(0o755)
    assert agent_socket.private_dir(tmp_path / "loose") == tmp_path / "loose"
    assert stat.S_IMODE(os.stat(tmp_path / "loose").st_mode) == 0o700  # the last one is made private
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    (tmp_path / "link").symlink_to(open_dir)  # a link is followed, and where it leads is checked
    for path, refused in (
        (open_dir / "agent", f"{open_dir} is writable by other users (mode 0777)"),
        (tmp_path / "link" / "agent", f"{open_dir} is writable by other users (mode 0777)"),
        (sticky, f"{sticky} is writable by other users (mode 1777)"),
    ):
        with pytest.raises(agent_socket.AgentRefused, match=re.escape(refused)):
            agent_socket.private_dir(path)
    assert list(open_dir.iterdir()) == []  # nothing created below a directory that failed
    (tmp_path / "file").write_text("")
    with pytest.raises(agent_socket.AgentRefused, match="is not a directory"):
        agent_socket.private_dir(tmp_path / "file" / "agent")


def test_a_socket_path_too_long_for_macos_moves_to_the_short_directory(tmp_path, monkeypatch):
    short = tmp_path / "t"
    monkeypatch.setattr(tempfile, "tempdir", str(short))
    name = "0123456789ab.sock"
    tail = f"/deployer/agent/{name}"
    fits = tmp_path / ("c" * (agent_socket.MAX_SOCKET_PATH - len(str(tmp_path)) - 1 - len(tail)))
    monkeypatch.setenv("XDG_CACHE_HOME", str(fits))
    assert len(str(fits) + tail) == agent_socket.MAX_SOCKET_PATH
    assert agent_socket.socket_path(name) == fits / "deployer" / "agent" / name
    monkeypatch.setenv("XDG_CACHE_HOME", str(fits) + "c")  # one byte more: not on a Mac
    assert agent_socket.socket_path(name) == short / f"deployer-{os.getuid()}" / "agent" / name
    assert stat.S_IMODE(os.stat(short / f"deployer-{os.getuid()}" / "agent").st_mode) == 0o700
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / ("t" * 90)))
    with pytest.raises(agent_socket.AgentRefused, match="longer than the 103 bytes a Unix socket allows"):
        agent_socket.socket_path(name)

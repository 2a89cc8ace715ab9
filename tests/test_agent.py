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
import signal
import socket
import stat
import threading
import time
from pathlib import Path

import pytest

from deployer import config as config_mod
from deployer import mux
from deployer.remote import Cancelled, TransportError, connection
from helpers import cli, commit_change, current, wait_until

PERSIST = {"ssh": {"persist": 30}}


def agent_pids() -> list[int]:
    """Agents started from this test run (their socket is under this run's cache dir)."""
    where = str(mux.agent_dir())
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"deployer.agent" in argv and any(a.decode(errors="replace").startswith(where) for a in argv):
            pids.append(int(entry))
    return pids


def kill_agents(sig: int = signal.SIGKILL) -> None:
    for pid in agent_pids():
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    wait_until(lambda: not agent_pids(), 10, "the agents to exit")


@pytest.fixture(autouse=True)
def no_agent_left():
    kill_agents()
    yield
    kill_agents()



def logins(sb, which) -> int:
    return sb.logs(which).count("Accepted publickey for deploy")


def host_of(sb, index: int = 0, **ssh_changes):
    host = config_mod.load(str(sb.config_path)).stage("sandbox").hosts[index]
    return dataclasses.replace(host, ssh=dataclasses.replace(host.ssh, **{"persist": 30, **ssh_changes}))


def test_the_next_run_opens_no_new_connection(sandbox, app_repo):
    sb = sandbox(3, **PERSIST)
    assert cli(sb, "deploy").returncode == 0
    assert [logins(sb, h) for h in sb.hosts] == [1, 1, 1]
    commit_change(app_repo, "app.py", "VERSION = 2\n")
    before = [sb.command_count(h) for h in sb.hosts]
    for args in (("deploy",), ("status",), ("rollback",)):
        proc = cli(sb, *args)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [logins(sb, h) for h in sb.hosts] == [1, 1, 1]           # every run reused the first connection
    assert all(current(sb, h) == "releases/1" for h in sb.hosts)
    # the same remote commands as without the agent: deploy 4, status 1, rollback 2
    assert [sb.command_count(h) - b for h, b in zip(sb.hosts, before)] == [7, 7, 7]
    assert len(agent_pids()) == 1


def test_a_dropped_connection_or_a_dead_agent_costs_a_reconnect_not_a_run(sandbox, app_repo):
    sb = sandbox(2, **PERSIST)
    assert cli(sb, "deploy").returncode == 0
    # the host drops the agent's connection (sshd restarted its sessions, a NAT forgot it...)
    sb.exec(1, "pkill -f 'sshd: deploy' || true")
    commit_change(app_repo, "app.py", "VERSION = 2\n")
    proc = cli(sb, "deploy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [logins(sb, h) for h in sb.hosts] == [1, 2]
    # the agent itself dies between runs: the next run starts another one
    kill_agents()
    proc = cli(sb, "rollback")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [logins(sb, h) for h in sb.hosts] == [2, 3]
    assert all(current(sb, h) == "releases/1" for h in sb.hosts)


def test_streams_stdin_and_stops_early_like_a_direct_connection(sandbox):
    sb = sandbox(1)
    conn = connection(host_of(sb)).open()
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
    rtt = conn.rtt()                            # the agent's connection timed the link
    assert isinstance(rtt, float) and 0 < rtt < 30


def test_timeout_and_cancel_kill_the_remote_process_group(sandbox):
    sb = sandbox(1)
    conn = connection(host_of(sb)).open()
    started = time.monotonic()
    with pytest.raises(TransportError, match="timed out after 2s"):
        conn.run("sleep 1000 & sleep 1001; echo never", timeout=2)
    assert time.monotonic() - started < 8
    wait_until(lambda: sb.exec(0, "pgrep -f 'sleep 100[01]' || echo none")[1].strip() == "none", 5,
               "the timed-out sleeps to be killed")
    conn.open()
    cancel = threading.Event()
    threading.Timer(1, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        conn.run("sleep 1002", cancel=cancel)
    assert time.monotonic() - started < 5
    wait_until(lambda: sb.exec(0, "pgrep -f 'sleep 100[2]' || echo none")[1].strip() == "none", 5,
               "the cancelled sleep to be killed")


def test_a_client_that_vanishes_mid_command_gets_its_remote_process_killed(sandbox):
    sb = sandbox(1)
    host = host_of(sb)
    conn = connection(host).open()
    # what a SIGKILLed run leaves: a request whose socket closes while the command runs
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(conn.path))
        s.sendall(mux.frame_json(b"Q", {"op": "run", "host": mux.host_spec(host), "script": "sleep 1004",
                                        "timeout": 600}) + mux.frame(b"E"))
        wait_until(lambda: sb.exec(0, "pgrep -f 'sleep 100[4]'")[0] == 0, 10, "the remote sleep to start")
    wait_until(lambda: sb.exec(0, "pgrep -f 'sleep 100[4]' || echo none")[1].strip() == "none", 10,
               "the orphaned sleep to be killed")
    assert conn.run("true").ok


def test_an_agent_killed_mid_command_is_an_error_not_a_hang(sandbox):
    sb = sandbox(1)
    conn = connection(host_of(sb)).open()
    threading.Timer(1, kill_agents).start()
    started = time.monotonic()
    with pytest.raises(TransportError, match="connection agent"):
        conn.run("sleep 1005")
    assert time.monotonic() - started < 10
    assert not conn.alive
    assert conn.open().run("echo back").stdout == "back\n"        # a new agent, a new connection


def test_the_agent_exits_when_idle_and_its_socket_is_private(sandbox):
    sb = sandbox(1, ssh={"persist": 2})
    assert cli(sb, "status").returncode == 0
    sock = wait_until(lambda: next(mux.agent_dir().glob("*.sock"), None), 5, "the agent's socket")
    assert stat.S_IMODE(os.stat(mux.agent_dir()).st_mode) == 0o700
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
    assert cli(sb, "status").returncode == 0                      # a new agent, new connections
    assert [logins(sb, h) for h in sb.hosts] == [2, 2]


def test_without_persist_no_agent_is_started(sandbox):
    sb = sandbox(1)
    assert cli(sb, "status").returncode == 0
    assert agent_pids() == []


# --- pure -----------------------------------------------------------------------------------------


def test_frames_round_trip_and_oversized_frames_are_refused():
    a, b = socket.socketpair()
    with a, b:
        a.sendall(mux.frame(b"D", b"x" * 1000) + mux.frame_json(b"R", {"code": 0}) + mux.frame(b"E"))
        assert mux.read_frame(b) == (b"D", b"x" * 1000)
        assert mux.read_frame(b) == (b"R", b'{"code": 0}')
        assert mux.read_frame(b) == (b"E", b"")
        a.sendall(b"D" + (mux.MAX_FRAME + 1).to_bytes(4, "big"))
        with pytest.raises(EOFError, match="refused"):
            mux.read_frame(b)
        a.close()
        assert mux.read_frame(b) is None


def test_connection_key_ignores_what_does_not_change_the_connection():
    base = config_mod.Host("h1", "10.0.0.1", config_mod.SSHSettings(user="deploy", persist=30))
    same = dataclasses.replace(base, name="other-name",
                               ssh=dataclasses.replace(base.ssh, persist=60, command_timeout=5))
    other_user = dataclasses.replace(base, ssh=dataclasses.replace(base.ssh, user="ops"))
    key = mux.connection_key(mux.host_spec(base))
    assert mux.connection_key(mux.host_spec(same)) == key
    assert mux.connection_key(mux.host_spec(other_user)) != key
    assert mux.host_from_spec(mux.host_spec(base)) == base


def test_persist_is_validated():
    with pytest.raises(config_mod.ConfigError, match="persist"):
        config_mod.parse('[app]\nname = "a"\ndeploy_to = "/srv/a"\n[ssh]\npersist = -1\n'
                         '[stages.s]\nhosts = ["h"]\n', Path("hosts.toml"))

"""SSH the way ops run it: a bastion in front of hosts only it can reach, ~/.ssh/config aliases and
ProxyJump, host key policies (strict, accept-new), agent forwarding off."""

from __future__ import annotations

import dataclasses
import socket

import pytest
import toml
from helpers import cli, write_config

from deployer.config import load as config_mod
from deployer.sandbox import hosts as sandbox_mod
from deployer.ssh import tuning
from deployer.ssh.connection import Connection
from deployer.ssh.types import TransportError


def record_ignores(monkeypatch) -> dict:
    """Per transport (by id), how many SSH_MSG_IGNORE it sent after a global request from the server."""
    sent: dict[int, int] = {}
    real_parse, real_send = tuning.AckingTransport._parse_global_request, tuning.AckingTransport._send_message

    def parse(self, m):
        self._after_request = True
        real_parse(self, m)
        self._after_request = False

    def send(self, msg):
        if getattr(self, "_after_request", False) and msg.asbytes()[:1] == b"\x02":
            sent[id(self)] = sent.get(id(self), 0) + 1
        real_send(self, msg)

    monkeypatch.setattr(tuning.AckingTransport, "_parse_global_request", parse)
    monkeypatch.setattr(tuning.AckingTransport, "_send_message", send)
    return sent


def target_current(c) -> str:
    code, out = c.exec_run(["readlink", "/srv/app/current"])
    return out.decode().strip() if code == 0 else ""


def test_deploy_through_a_bastion_to_hosts_only_it_can_reach(hidden_hosts, app_repo, tmp_path, monkeypatch):
    b = hidden_hosts["bastion"]
    names = [c.name for c in hidden_hosts["targets"]]
    common = {"user": "deploy", "key": str(hidden_hosts["key"])}
    direct = write_config(tmp_path, names, {**common, "connect_timeout": 3}, hidden_hosts["known_hosts"], app_repo)
    proc = cli(direct, "check")
    assert proc.returncode == 1 and names[0] in proc.stderr  # unreachable from here

    via = write_config(
        tmp_path, names, {**common, "gateway": f"deploy@127.0.0.1:{b.port}"}, hidden_hosts["known_hosts"], app_repo
    )
    proc = cli(via, "deploy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(target_current(c) == "releases/1" for c in hidden_hosts["targets"])
    assert cli(via, "rollback").returncode == 1  # nothing earlier: refused, but reached them

    # the one TCP connection made is the bastion's, opened by the transport with Nagle off; both
    # hops answer their sshd's host-key notice, so its next reply is not held for a delayed ACK
    made = []
    real_tcp = tuning.tcp
    monkeypatch.setattr(tuning, "tcp", lambda *args, **kw: made.append(real_tcp(*args, **kw)) or made[-1])
    ignores = record_ignores(monkeypatch)
    conn = Connection(config_mod.load(via.config_path).stage("prod").hosts[0]).open()
    try:
        assert len(made) == 1 and made[0].getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert conn._conn.gateway.transport.sock is made[0]
        assert isinstance(made[0], tuning.QuickAckSocket) == tuning.HAS_QUICKACK  # it relays: ACKs at once
        assert conn.run("true").ok
        hops = (conn._conn.transport, conn._conn.gateway.transport)
        assert all(type(t) is tuning.AckingTransport and ignores.get(id(t)) for t in hops), ignores
    finally:
        conn.close()
    monkeypatch.undo()

    # the same through ProxyJump in an ssh config file, with a Host alias for the bastion
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(
        f"Host jump\n  HostName 127.0.0.1\n  Port {b.port}\n  User deploy\n"
        f"  IdentityFile {hidden_hosts['key']}\n\n"
        f"Host hidden-*\n  ProxyJump jump\n  User deploy\n  IdentityFile {hidden_hosts['key']}\n"
    )
    jump = write_config(tmp_path, names, {"config_file": str(ssh_config)}, hidden_hosts["known_hosts"], app_repo)
    proc = cli(jump, "deploy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(target_current(c) == "releases/2" for c in hidden_hosts["targets"])


def test_host_keys_are_checked_on_every_hop_through_a_bastion(hidden_hosts, app_repo, tmp_path):
    """Through ssh.gateway and through ProxyJump: the bastion's key missing, the bastion's key
    wrong, a target's key wrong each refuse the deploy in one line naming the key, with
    known_hosts untouched and nothing deployed; accept-new records only an unknown key."""
    b = hidden_hosts["bastion"]
    names = [c.name for c in hidden_hosts["targets"]]
    lines = hidden_hosts["known_hosts"].splitlines()
    bastion_line, target_line = lines[-1], lines[0]
    bastion_name, target_name = bastion_line.split()[0], target_line.split()[0]
    bastion_blob, target_blob = bastion_line.split()[2], target_line.split()[2]
    good = "\n".join(lines) + "\n"
    cases = {  # known_hosts -> the line that must name the problem
        "bastion unknown": ("\n".join(lines[:-1]) + "\n", f"unknown host key for {bastion_name}"),
        "bastion changed": (good.replace(bastion_blob, target_blob), f"host key CHANGED for [127.0.0.1]:{b.port}:"),
        "target changed": (
            good.replace(target_line, target_line.replace(target_blob, bastion_blob)),
            f"host key CHANGED for {target_name}",
        ),
    }
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(
        f"Host jump\n  HostName 127.0.0.1\n  Port {b.port}\n  User deploy\n"
        f"  IdentityFile {hidden_hosts['key']}\n\n"
        f"Host hidden-*\n  ProxyJump jump\n  User deploy\n  IdentityFile {hidden_hosts['key']}\n"
    )
    ways = {
        "gateway": {"user": "deploy", "key": str(hidden_hosts["key"]), "gateway": f"deploy@127.0.0.1:{b.port}"},
        "ProxyJump": {"config_file": str(ssh_config)},
    }

    def refused(ssh: dict, known_hosts: str, why: str) -> None:
        cfg = write_config(tmp_path, names, ssh, known_hosts, app_repo)
        proc = cli(cfg, "deploy")
        assert proc.returncode != 0, proc.stdout + proc.stderr
        # the host's row names the key; stderr is the one line saying nothing changed
        said = [line for line in proc.stdout.splitlines() if "host key" in line]
        assert said and all(why in line and "SHA256:" in line for line in said), proc.stdout
        assert proc.stderr.startswith("error: deploy failed before any change:"), proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert (tmp_path / "known_hosts").read_text() == known_hosts
        assert not any(target_current(c) for c in hidden_hosts["targets"])
        assert all(c.exec_run(["test", "-e", "/srv/app/releases"]).exit_code != 0 for c in hidden_hosts["targets"])

    for ssh in ways.values():
        for case, (known_hosts, why) in cases.items():
            refused(ssh, known_hosts, why)
            if case != "bastion unknown":  # accept-new records unknown keys, never a changed one
                refused({**ssh, "host_key_policy": "accept-new"}, known_hosts, why)

    # accept-new and the bastion unknown: its key recorded (and only it), then the deploy goes through
    cfg = write_config(
        tmp_path, names, {**ways["ProxyJump"], "host_key_policy": "accept-new"}, cases["bastion unknown"][0], app_repo
    )
    proc = cli(cfg, "deploy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recorded = (tmp_path / "known_hosts").read_text()
    assert recorded == cases["bastion unknown"][0] + f"{bastion_name} ssh-ed25519 {bastion_blob}\n"
    assert all(target_current(c) == "releases/1" for c in hidden_hosts["targets"])


def test_ssh_config_alias_user_port_identity(sandbox, app_repo, tmp_path):
    sb = sandbox(1)
    h = sb.hosts[0]
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(
        f"Host web-alias\n  HostName 127.0.0.1\n  Port {h.port}\n  User deploy\n  IdentityFile {sb.key_path}\n"
    )
    kh = sb.known_hosts_path.read_text()
    cfg = write_config(tmp_path, ["web-alias"], {"config_file": str(ssh_config)}, kh, app_repo)
    proc = cli(cfg, "check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "web-alias" in proc.stdout and "deploy" in proc.stdout
    off = write_config(
        tmp_path, ["web-alias"], {"config_file": str(ssh_config), "config": False, "connect_timeout": 3}, kh, app_repo
    )
    proc = cli(off, "check")
    assert proc.returncode == 1 and "web-alias" in proc.stderr


def test_host_key_policies(sandbox, app_repo, tmp_path):
    sb = sandbox(2)
    # strict + unknown key: refused with the fingerprint, known_hosts untouched
    sb.known_hosts_path.write_text("")
    proc = cli(sb, "check")
    assert proc.returncode == 1 and "unknown host key" in proc.stderr and "SHA256:" in proc.stderr
    assert sb.known_hosts_path.read_text() == ""
    # accept-new: unknown keys recorded
    doc = toml.loads(sb.config_path.read_text())
    doc["ssh"]["host_key_policy"] = "accept-new"
    sb.config_path.write_text(toml.dumps(doc))
    assert cli(sb, "check").returncode == 0
    recorded = sb.known_hosts_path.read_text()
    assert recorded.count("ssh-ed25519") == 2
    # ... but a changed key is refused even then, and known_hosts stays as it was
    sandbox_mod.regenerate_host_key(sb.hosts[0])
    proc = cli(sb, "check")
    assert proc.returncode == 1 and "host key CHANGED" in proc.stderr and "host-1" in proc.stderr
    assert sb.known_hosts_path.read_text() == recorded


def test_agent_forwarding_off_unless_asked(sandbox):
    sb = sandbox(1)
    cfg = config_mod.load(str(sb.config_path))
    host = cfg.stage("sandbox").hosts[0]
    conn = Connection(host).open()
    try:
        assert conn._conn.forward_agent is False
        assert conn._conn.connect_timeout == host.ssh.connect_timeout == 10
        assert conn._conn.transport.packetizer._Packetizer__keepalive_interval == host.ssh.keepalive
    finally:
        conn.close()


def test_a_direct_login_is_on_our_own_socket_with_nagle_off_from_the_first_byte(sandbox, monkeypatch, tmp_path):
    """Without a gateway the TCP connection is opened by the transport with TCP_NODELAY already on
    (with Nagle, the handshake's second small message waited for the server's delayed ACK: 40 ms a
    login), and the server's host-key notice is answered (else sshd's reply to the first channel
    open waits for our delayed ACK: 40 ms more). The socket is closed with the connection, and
    when the login fails; a closed port is named."""
    sb = sandbox(1)
    host = config_mod.load(str(sb.config_path)).stage("sandbox").hosts[0]
    made = []
    real_tcp = tuning.tcp

    def recording(*args, **kw):
        sock = real_tcp(*args, **kw)
        made.append((sock, sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)))
        return sock

    monkeypatch.setattr(tuning, "tcp", recording)
    ignores = record_ignores(monkeypatch)
    conn = Connection(host).open()
    try:
        assert len(made) == 1 and made[0][1]
        assert conn._conn.transport.sock is made[0][0]
        assert type(made[0][0]) is socket.socket  # not a relay: ACKs as the kernel likes
        assert conn.run("true").ok
        # sshd's host-key notice after login was answered (see tuning.AckingTransport)
        assert ignores == {id(conn._conn.transport): 1}
    finally:
        conn.close()
    assert made[0][0].fileno() == -1

    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    unknown = dataclasses.replace(host, ssh=dataclasses.replace(host.ssh, known_hosts=str(empty)))
    with pytest.raises(TransportError, match="unknown host key"):
        Connection(unknown).open()
    assert len(made) == 2 and made[1][0].fileno() == -1

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    closed = dataclasses.replace(host, ssh=dataclasses.replace(host.ssh, port=port))
    with pytest.raises(TransportError, match=f"connection refused on port {port}"):
        Connection(closed).open()

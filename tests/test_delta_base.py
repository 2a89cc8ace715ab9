"""A delta whose base's .json is not in the local artifact store: the base's manifest is asked of
one host on it (one command per base, not per host), checked against the sha256 its release
recorded; anything wrong is a full upload, never a failed deploy. The pure parts first; then on
real hosts (sshd containers), direct and through the connection agent."""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
from pathlib import Path

import helpers
import pytest
from helpers import cli, commit_change, host_conn, sandbox_host
from test_delta_hosts import bigger_app

from benchmarks.netproxy import NetProxy
from deployer.artifact import delta as artifact_delta
from deployer.config.settings import Host, SSHSettings
from deployer.engine import base_manifest
from deployer.engine.backend import READ_ONLY_STEPS
from deployer.engine.fleet import HostRun
from deployer.plan.paths import MANIFEST, Paths
from deployer.remote import delta as remote_delta
from deployer.remote import state
from deployer.ssh import agent_client, runloop, transport_for
from deployer.ssh.types import WHOLE_OUTPUT_MAX, TransportError

FILES = {"app.py": "a" * 64, "dir/caf\udce9.txt": "b" * 64, "z": "c" * 64}  # a name that is not UTF-8
TEXT = artifact_delta.manifest_text(FILES).decode("utf-8", "surrogateescape")
SHA = hashlib.sha256(artifact_delta.manifest_text(FILES)).hexdigest()


# -- the pure parts ---------------------------------------------------------------------------------


def test_a_manifest_is_accepted_only_with_the_recorded_sha256_and_exact_bytes():
    assert base_manifest.accept(TEXT, SHA) == FILES
    with pytest.raises(base_manifest.Unusable, match="not the recorded"):
        base_manifest.accept(TEXT.replace("c" * 64, "d" * 64), SHA)
    with pytest.raises(base_manifest.Unusable, match="not the recorded"):
        base_manifest.accept(TEXT + "\n", SHA)
    odd = TEXT + "not a manifest line\n"
    with pytest.raises(base_manifest.Unusable, match="not a manifest"):
        base_manifest.accept(odd, hashlib.sha256(odd.encode("utf-8", "surrogateescape")).hexdigest())


def test_the_recorded_sha256_comes_from_the_release_json():
    run = HostRun(Host(name="h", address="h", ssh=SSHSettings()))
    with pytest.raises(base_manifest.Unusable, match="recorded no manifest"):
        base_manifest.recorded_sha(run, 1)
    run.state = state.parse(f'release\t1 1 0 0 0\t{{"release": 1, "manifest_sha256": "{SHA}"}}\n')
    assert base_manifest.recorded_sha(run, 1) == SHA
    run.state = state.parse('release\t1 1 0 0 0\t{"release": 1, "manifest_sha256": ""}\n')
    with pytest.raises(base_manifest.Unusable):
        base_manifest.recorded_sha(run, 1)
    assert base_manifest.STEP in READ_ONLY_STEPS  # a dry run reads it for real


def test_a_base_is_named_only_by_a_sha256_the_host_cannot_turn_into_a_path(tmp_path):
    """The base's artifact sha256 comes from the host's release.json and names the delta's file
    on this machine: anything but 64 lowercase hex digits means no delta (a full upload)."""
    from deployer.engine.delta import Deltas

    def base(sha: str):
        meta = json.dumps({"release": 1, "artifact_sha256": sha})
        return Deltas(None).base(state.parse(f"current\tlink releases/1\nrelease\t1 1 0 0 0\t{meta}\n", "/srv/a"))

    assert base("a" * 64) == (1, "a" * 64)
    for bad in ["../" * 21 + "x", "A" * 64, "a" * 63 + "/", "a" * 65, "a" * 63 + "\n"]:
        assert base(bad) is None, bad


def test_whole_keeps_every_byte_up_to_its_cap_and_refuses_more():
    whole = runloop.Whole(10)
    whole.add(b"\xffabc")
    whole.add(b"defghi")
    assert whole.text().encode("utf-8", "surrogateescape") == b"\xffabcdefghi" and not whole.over
    whole.add(b"j")
    assert whole.over == "output over 10 bytes refused"
    assert runloop.Whole(WHOLE_OUTPUT_MAX * 2).cap == WHOLE_OUTPUT_MAX
    tail = runloop.Tail()
    tail.add(b"x" * (3 * runloop.OUTPUT_TAIL))
    assert not tail.over and len(tail.buf) <= 2 * runloop.OUTPUT_TAIL


def test_the_read_script_prints_the_manifest_with_hostile_paths(tmp_path):
    root = tmp_path / "srv; $(touch pwn) 'q'"
    paths = Paths(str(root))
    release = Path(paths.release(3))
    (release / ".deployer").mkdir(parents=True)
    (release / MANIFEST).write_bytes(artifact_delta.manifest_text(FILES))
    script = remote_delta.read_manifest(paths, 3)
    proc = subprocess.run(["sh", "-c", script], capture_output=True, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout == artifact_delta.manifest_text(FILES), proc.stderr
    assert not (tmp_path / "pwn").exists()
    (release / MANIFEST).unlink()
    (release / MANIFEST).symlink_to("/etc/passwd")
    proc = subprocess.run(["sh", "-c", script], capture_output=True, cwd=tmp_path)
    assert proc.returncode == 1 and proc.stdout == b"" and b"no manifest" in proc.stderr


# -- the transport keeps one command's whole stdout -----------------------------------------------

PERSIST = {"ssh": {"persist": 30}}


@pytest.fixture
def no_agent_left():
    helpers.kill_agents(str(agent_client.socket_path().parent))
    yield
    helpers.kill_agents(str(agent_client.socket_path().parent))


@pytest.mark.parametrize("persist", [0, 30], ids=["direct", "agent"])
def test_max_output_keeps_all_of_stdout_exactly_and_refuses_more(sandbox, no_agent_left, persist):
    """5 MB of stdout (more than an agent frame holds), non-UTF-8 bytes in it: every byte with
    max_output, only the tail without; over the cap the command is killed and the link still works."""
    sb = sandbox(1)
    conn = transport_for(sandbox_host(sb, persist=persist)).open() if persist else host_conn(sb)
    try:
        make = "head -c 5000000 /dev/zero | tr '\\0' 'a'; printf '\\377\\n'"
        want = b"a" * 5_000_000 + b"\xff\n"
        whole = conn.run(make, max_output=6_000_000)
        assert whole.ok and whole.stdout.encode("utf-8", "surrogateescape") == want
        tail = conn.run(make)
        assert tail.ok and len(tail.stdout) <= 2 * runloop.OUTPUT_TAIL and tail.stdout.endswith("a\ufffd\n")
        with pytest.raises(TransportError, match="output over 1000000 bytes refused"):
            conn.run("head -c 3000000 /dev/zero; sleep 1003", max_output=1_000_000)
        helpers.wait_until(
            lambda: sb.exec(0, "pgrep -f 'sleep 100[3]' || echo none")[1].strip() == "none", 10, "the command killed"
        )
        if persist:
            conn.open()  # an agent's client marks the link lost on any error; the agent kept it
        assert conn.run("echo still", max_output=100).stdout == "still\n"
    finally:
        conn.close()


# -- deploys on real hosts --------------------------------------------------------------------------


def forget_artifacts(sb) -> None:
    """The client's local store loses every artifact's .json (another machine, a cleaned store)."""
    store = sb.config_path.parent / "artifacts"
    gone = list(store.glob("*.json"))
    assert gone, list(store.iterdir())
    for path in gone:
        path.unlink()


@pytest.mark.parametrize("persist", [0, 30], ids=["direct", "agent"])
def test_a_base_missing_from_the_store_is_asked_of_one_host(sandbox, app_repo, no_agent_left, persist):
    """3 hosts on release 1, its .json gone from the store: a delta on every host, one extra
    command in all (not per host), a small upload (measured on host 0's link), the same tree."""
    sb = sandbox(3, **(PERSIST if persist else {}))
    bigger_app(app_repo)
    assert cli(sb, "deploy").returncode == 0
    forget_artifacts(sb)
    commit_change(app_repo, "pkg/m1/f60.py", "changed\n")
    from test_faults import via_proxy

    proxy = NetProxy(("127.0.0.1", sb.hosts[0].port)).start()
    try:
        via_proxy(sb, 0, proxy)
        before = [sb.command_count(h) for h in sb.hosts]
        proc = cli(sb, "deploy")
        assert proc.returncode == 0, proc.stderr + proc.stdout
        assert proc.stdout.count("against release 1") == 3, proc.stdout
        assert "not usable" not in proc.stdout and "full artifact" not in proc.stdout
        extra = sorted(sb.command_count(h) - b for h, b in zip(sb.hosts, before, strict=True))
        assert extra == [4, 4, 5], extra
        assert 0 < proxy.bytes_up <= 100 * 1024, proxy.bytes_up
    finally:
        proxy.stop()
    for h in sb.hosts:
        assert helpers.current(sb, h) == "releases/2"
        code, out = sb.exec(h, "cd /srv/app/current && sha256sum -c --quiet .deployer/manifest.sha256")
        assert code == 0, out


def test_an_edited_manifest_on_the_host_means_the_full_artifact(sandbox, app_repo):
    """The host's copy of the base manifest no longer hashes to what release 1 recorded: no delta,
    one line saying why, the full artifact; the deploy succeeds. A dry run reads it too, changes nothing."""
    sb = sandbox(1)
    bigger_app(app_repo)
    first = sb.command_count(0)
    assert cli(sb, "deploy").returncode == 0
    first = sb.command_count(0) - first  # a full deploy's commands on this host
    forget_artifacts(sb)
    code, out = sb.exec(0, "sed -i '1d' /srv/app/releases/1/.deployer/manifest.sha256")
    assert code == 0, out
    commit_change(app_repo, "pkg/m1/f60.py", "changed\n")
    dry = cli(sb, "deploy", "--dry-run")
    assert dry.returncode == 0, dry.stderr + dry.stdout
    assert "manifest from this host is not usable" in dry.stdout, dry.stdout
    before = sb.command_count(0)
    proc = cli(sb, "deploy")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    lines = [line for line in proc.stdout.splitlines() if "not usable" in line]
    assert len(lines) == 1 and "is not the recorded" in lines[0], proc.stdout
    assert "full artifact" in proc.stdout and "against release" not in proc.stdout
    assert sb.command_count(0) - before == first + 1  # the manifest read, then the same as a full deploy
    assert helpers.current(sb, 0) == "releases/2"
    code, out = sb.exec(0, "cd /srv/app/current && sha256sum -c --quiet .deployer/manifest.sha256")
    assert code == 0, out


def test_a_host_slow_to_answer_holds_up_only_its_own_base(sandbox, app_repo):
    """host-1 runs release 1 (its .json gone from the store: asked of the host), host-2 release 2
    (in the store). host-1's manifest read hangs: host-2 prepares its delta meanwhile; host-1's
    read is cut at min(30 s, command_timeout) and it gets the full artifact. Both deploy."""
    sb = sandbox(2, ssh={"command_timeout": 6})
    bigger_app(app_repo)
    assert cli(sb, "deploy").returncode == 0
    forget_artifacts(sb)  # release 1's artifact: only the hosts know its manifest now
    commit_change(app_repo, "pkg/m1/f60.py", "second\n")
    assert cli(sb, "deploy", "-H", "host-2").returncode == 0  # release 2 on host-2, its .json kept
    # host-1's cat stalls on that manifest (a hung disk), not on anything else
    stall = '#!/bin/sh\ncase "$*" in *manifest.sha256*) sleep 60;; esac\nexec /bin/cat "$@"\n'
    code, out = sb.exec(0, f"printf %s {shlex.quote(stall)} > /usr/local/bin/cat && chmod 755 /usr/local/bin/cat")
    assert code == 0, out
    commit_change(app_repo, "pkg/m1/f61.py", "third\n")
    proc = cli(sb, "deploy")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    lines = proc.stdout.splitlines()
    fast = [i for i, line in enumerate(lines) if "host-2" in line and "against release 2" in line]
    slow = [i for i, line in enumerate(lines) if "host-1" in line and "not usable" in line]
    assert fast and slow and fast[0] < slow[0], proc.stdout  # host-2 did not wait for host-1's answer
    assert "timed out after 6s" in lines[slow[0]], lines[slow[0]]
    assert [helpers.current(sb, h) for h in sb.hosts] == ["releases/3", "releases/3"]
    for h in sb.hosts:
        code, out = sb.exec(h, "cd /srv/app/current && /bin/sha256sum -c --quiet .deployer/manifest.sha256")
        assert code == 0, out

"""Fault injection against real sshd hosts: one named test per row of the fault matrix.

Each test breaks something at a chosen moment and checks what the deployer promises: which hosts
switched, what is left on disk, the exit code and message, and that the next run works without
manual cleanup (except the documented `unlock --yes` after a stale lock).

Windows between steps are hit deterministically with the test-only pause in deploy.py:
DEPLOYER_TEST_PAUSE_BEFORE=<step>:<file> makes the deploy create <file> before <step> and wait
until the test removes it. Slow links and stalls use benchmarks.netproxy.NetProxy (loopback only).
"""

from __future__ import annotations

import base64
import dataclasses
import getpass
import hashlib
import io
import json
import os
import secrets
import signal
import socket
import subprocess
import tarfile
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
import toml
from helpers import (
    big_artifact,
    cli,
    cli_popen,
    commit_change,
    current,
    host_conn,
    release_dirs,
    status,
    tar_member,
    wait_until,
    write_tar_gz,
)

from benchmarks.netproxy import NetProxy
from deployer.config.settings import SSHSettings
from deployer.errors import DeployerError
from deployer.plan import releases as planning
from deployer.plan.paths import Paths
from deployer.remote import commands
from deployer.remote import lock as remote_lock
from deployer.remote import state as host_state
from deployer.sandbox import hosts as sandbox_mod
from deployer.sandbox import image as image_mod
from deployer.ssh import liveness, runloop
from deployer.ssh.liveness import Watch, dead_link_window
from deployer.ssh.types import Cancelled, TransportError

D = "/srv/app"
PATHS = Paths(D)


# --- helpers -----------------------------------------------------------------------------------


@pytest.fixture
def procs():
    """Deployer processes started by a test; any still running at teardown is killed."""
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)


def popen(procs, sb, *args: str, env: dict | None = None) -> subprocess.Popen:
    """helpers.cli_popen, kept in `procs` so the test's cleanup kills it if it is still running."""
    p = cli_popen(sb, *args, env=env)
    procs.append(p)
    return p


def finish(p: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


class Pause:
    """The test-only pause before one deploy step (see deploy._test_pause)."""

    def __init__(self, tmp_path: Path, step: str):
        self.flag = tmp_path / f"pause-{step}-{secrets.token_hex(4)}"
        self.env = {"DEPLOYER_TEST_PAUSE_BEFORE": f"{step}:{self.flag}"}

    def wait(self, p: subprocess.Popen, timeout: float = 90) -> None:
        wait_until(lambda: self.flag.exists() or p.poll() is not None, timeout, f"pause {self.flag.name}")
        if not self.flag.exists():
            out, err = p.communicate()
            pytest.fail(f"deploy ended (exit {p.returncode}) before the pause:\n{out}\n{err}")

    def release(self) -> None:
        self.flag.unlink(missing_ok=True)


def edit_config(sb, change) -> None:
    doc = toml.loads(sb.config_path.read_text())
    change(doc)
    sb.config_path.write_text(toml.dumps(doc))


def via_proxy(sb, index: int, proxy: NetProxy) -> None:
    """Route one host through a NetProxy: its port in the config, its key pinned for that port."""

    def change(doc):
        doc["stages"]["sandbox"]["hosts"][index]["port"] = proxy.port

    edit_config(sb, change)
    line = sandbox_mod.host_key_line(sb.hosts[index]).split(" ", 1)[1]
    with open(sb.known_hosts_path, "a") as fh:
        fh.write(f"[127.0.0.1]:{proxy.port} {line}\n")


def direct(sb, index: int) -> None:
    """Undo via_proxy: the host's own port again."""

    def change(doc):
        doc["stages"]["sandbox"]["hosts"][index]["port"] = sb.hosts[index].port

    edit_config(sb, change)


def files(sb, h, deploy_to: str = D) -> str:
    """Everything under deploy_to except the deployer's own .deployer/ (lock, cache, ledger)."""
    code, out = sb.exec(
        h, f"cd '{deploy_to}' 2>/dev/null && find . -path ./.deployer -prune -o -printf '%p %y %l %m\\n' | sort"
    )
    return out


def leftovers(sb, h, deploy_to: str = D) -> list[str]:
    """Temp releases, partial uploads, temp links and the lock: what an aborted run must not leave."""
    code, out = sb.exec(
        h, f"cd '{deploy_to}' 2>/dev/null || exit 0; ls -A releases .deployer .deployer/cache . 2>/dev/null"
    )
    return sorted({name for name in out.split() if name.startswith((".tmp-", ".part-", ".current-")) or name == "lock"})


def lock_info(sb, h) -> dict | None:
    code, out = sb.exec(h, f"cat {D}/.deployer/lock/info 2>/dev/null")
    return json.loads(out) if code == 0 and out.strip() else None


def built_artifact(sb) -> Path:
    assert cli(sb, "build").returncode == 0
    return max((sb.config_path.parent / "artifacts").glob("*.tar.gz"), key=lambda p: p.stat().st_mtime)


def restart_host(sb, index: int) -> None:
    """Start a killed host again (new port, new host key) and point the config and known_hosts at it."""
    old = sb.hosts[index]
    container = sb.container(index)
    container.start()
    port = wait_until(lambda: _published_port(container), 30, "a published port")
    sb.hosts[index] = dataclasses.replace(old, port=port)
    sandbox_mod._wait_ready(sb.hosts[index])
    sandbox_mod.write_known_hosts(sb.known_hosts_path, sb.hosts)

    def change(doc):
        doc["stages"]["sandbox"]["hosts"][index]["port"] = port

    edit_config(sb, change)


def _published_port(container) -> int | None:
    container.reload()
    ports = (container.attrs["NetworkSettings"]["Ports"] or {}).get("22/tcp")
    return int(ports[0]["HostPort"]) if ports else None


# --- 1. SIGINT during upload -------------------------------------------------------------------


@pytest.mark.slow
def test_sigint_while_host_2_of_5_uploads(sandbox, procs, tmp_path):
    """The first deploy: host 2's link hiccups (held by a NetProxy) until the other four have
    extracted release 1; it flows again and Ctrl-C comes while host 2 is mid-upload. Every host
    is left as it was, empty (a live release stays live: the SIGTERM/SIGHUP test below)."""
    sb = sandbox(5)
    proxy = NetProxy(("127.0.0.1", sb.hosts[1].port)).start()
    try:
        via_proxy(sb, 1, proxy)
        artifact = big_artifact(tmp_path, 40)
        p = popen(procs, sb, "deploy", "--artifact", str(artifact))
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(p.stdout), daemon=True)
        reader.start()

        def ready(name: str) -> bool:
            return any(f" {name} " in line and "release 1 ready" in line for line in list(lines))

        start = proxy.bytes_forwarded
        wait_until(
            lambda: proxy.bytes_forwarded - start > (1 << 20) or p.poll() is not None,
            60,
            "host-2's upload to start",
            0.005,
        )
        proxy.stall()
        wait_until(
            lambda: p.poll() is not None or all(ready(f"host-{i}") for i in (1, 3, 4, 5)),
            25,
            "the other four hosts to prepare",
            0.02,
        )
        flowing = proxy.bytes_forwarded
        proxy.resume()
        wait_until(
            lambda: proxy.bytes_forwarded - flowing > (1 << 20) or p.poll() is not None,
            10,
            "host-2's upload to flow again",
            0.002,
        )
        at_signal = proxy.bytes_forwarded
        p.send_signal(signal.SIGINT)
        assert not ready("host-2"), "".join(lines)
        p.wait(timeout=30)
        after_signal = proxy.bytes_forwarded - at_signal
        reader.join(timeout=10)
        code, out, err = p.returncode, "".join(lines), p.stderr.read()
    finally:
        proxy.stop()
    # the upload was cut, not finished: far less than the rest of the artifact crossed after Ctrl-C
    assert after_signal < artifact.stat().st_size - (at_signal - start) - (4 << 20), after_signal
    assert code == 130, out + err
    assert "interrupted" in err and "host-2 (prepare)" in err
    assert all(f"host-{i}" in err for i in range(1, 6))
    for h in sb.hosts:
        assert current(sb, h) == ""
        assert release_dirs(sb, h) == []
        assert leftovers(sb, h) == []
    # the next run needs no cleanup (host-2 straight this time)
    direct(sb, 1)
    proc = cli(sb, "deploy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(current(sb, h) == "releases/1" for h in sb.hosts)


# --- 1b. SIGTERM / SIGHUP: a cancelled CI job, a closed terminal --------------------------------


def ledger_lines(sb, h) -> list[dict]:
    code, out = sb.exec(h, f"cat {D}/.deployer/ledger.jsonl 2>/dev/null")
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def signal_mid_upload(sb, procs, artifact: Path, sig: int) -> tuple[int, str, str]:
    """Host-2's link is held (a NetProxy) until the others have prepared, flows again, and the
    signal comes while host-2 is mid-upload."""
    proxy = NetProxy(("127.0.0.1", sb.hosts[1].port)).start()
    try:
        via_proxy(sb, 1, proxy)
        p = popen(procs, sb, "deploy", "--artifact", str(artifact))
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(p.stdout), daemon=True)
        reader.start()

        def ready(name: str) -> bool:  # uploaded, or (cached by an earlier case) extracted
            return any(f" {name} " in line and (" ready" in line or " extracted" in line) for line in list(lines))

        start = proxy.bytes_forwarded
        wait_until(
            lambda: proxy.bytes_forwarded - start > (1 << 20) or p.poll() is not None,
            60,
            "host-2's upload to start",
            0.005,
        )
        proxy.stall()
        wait_until(
            lambda: p.poll() is not None or all(ready(f"host-{i}") for i in (1, 3)),
            25,
            "the other hosts to prepare",
            0.02,
        )
        flowing = proxy.bytes_forwarded
        proxy.resume()
        wait_until(
            lambda: proxy.bytes_forwarded - flowing > (1 << 20) or p.poll() is not None,
            10,
            "host-2's upload to flow again",
            0.002,
        )
        p.send_signal(sig)
        assert not ready("host-2"), "".join(lines)
        p.wait(timeout=30)
        reader.join(timeout=10)
        return p.returncode, "".join(lines), p.stderr.read()
    finally:
        proxy.stop()
        direct(sb, 1)


def signal_mid_switch(sb, procs, sig: int) -> tuple[int, str, str]:
    """A rolling deploy, one host per batch: the signal comes after host-1 switched, before the others."""
    p = popen(procs, sb, "deploy", "--strategy", "rolling", "--batch", "1", "--pause", "60")
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(p.stdout), daemon=True)
    reader.start()
    wait_until(lambda: p.poll() is not None or any("pausing" in line for line in list(lines)), 90, "host-1 to switch")
    assert current(sb, 0) != "releases/1", "".join(lines)  # host-1 switched, the others not yet
    p.send_signal(sig)
    p.wait(timeout=30)
    reader.join(timeout=10)
    return p.returncode, "".join(lines), p.stderr.read()


@pytest.mark.slow
def test_sigterm_and_sighup_mid_upload_and_mid_switch_abort_like_ctrl_c(sandbox, app_repo, procs, tmp_path):
    """A cancelled CI job (SIGTERM) or a closed terminal (SIGHUP) at two moments on 3 hosts: the
    same clean abort as Ctrl-C (remote processes killed, partials removed, switched hosts put
    back, locks released, a ledger line naming the signal), exit 143 / 129, and the next deploy
    needs no `unlock`."""
    sb = sandbox(3)
    assert cli(sb, "deploy").returncode == 0
    artifact = big_artifact(tmp_path, 40)
    cases = [
        (signal.SIGTERM, "upload"),
        (signal.SIGHUP, "upload"),
        (signal.SIGTERM, "switch"),
        (signal.SIGHUP, "switch"),
    ]
    for n, (sig, moment) in enumerate(cases):
        if moment == "upload":
            code, out, err = signal_mid_upload(sb, procs, artifact, sig)
        else:
            commit_change(app_repo, "app.py", f"VERSION = {n}\n")
            code, out, err = signal_mid_switch(sb, procs, sig)
        name = signal.Signals(sig).name
        assert code == 128 + sig, (name, moment, out + err)
        assert f"interrupted ({name})" in err and "Traceback" not in err, (moment, err)
        for h in sb.hosts:
            assert current(sb, h) == "releases/1", (name, moment, h.name)
            assert release_dirs(sb, h) == ["1"], (name, moment, h.name)
            assert leftovers(sb, h) == [], (name, moment, h.name)
            last = ledger_lines(sb, h)[-1]
            assert last["result"] == "interrupted" and last["error"] == f"interrupted ({name})", last
        code, out = sb.exec(1, "pgrep -u deploy -f 'cat|tar|sleep' || true")
        assert out.strip() == "", out  # no remote process left behind
    proc = cli(sb, "deploy")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_second_signal_during_the_put_back_is_ignored(sandbox, app_repo, procs, tmp_path):
    """A CI runner's SIGTERM mid-switch, then another SIGTERM (and a SIGHUP, a Ctrl-C) while the
    deployer holds just before putting host-1 back: the cleanup is not cut short. Exit 143, every
    host on the old release, no lock, no leftovers, the ledger names the first signal."""
    sb = sandbox(3)
    assert cli(sb, "deploy").returncode == 0
    commit_change(app_repo, "app.py", "VERSION = 2\n")
    pause = Pause(tmp_path, "restore")
    p = popen(procs, sb, "deploy", "--strategy", "rolling", "--batch", "1", "--pause", "60", env=pause.env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(p.stdout), daemon=True)
    reader.start()
    wait_until(lambda: p.poll() is not None or any("pausing" in line for line in list(lines)), 90, "host-1 to switch")
    assert current(sb, 0) == "releases/2" and current(sb, 1) == "releases/1", "".join(lines)
    p.send_signal(signal.SIGTERM)
    pause.wait(p)  # inside the cleanup, host-1 not yet put back
    assert current(sb, 0) == "releases/2"
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        p.send_signal(sig)  # an ignored signal is discarded when sent: nothing pends past this line
    assert p.poll() is None
    pause.release()
    p.wait(timeout=60)
    reader.join(timeout=10)
    out, err = "".join(lines), p.stderr.read()
    assert p.returncode == 143, out + err
    assert "interrupted (SIGTERM)" in err and "Traceback" not in err, err
    assert any(line.split()[1:3] == ["host-1", "restore"] for line in lines), out
    for h in sb.hosts:
        assert current(sb, h) == "releases/1", h.name
        assert release_dirs(sb, h) == ["1"], h.name
        assert leftovers(sb, h) == [] and lock_info(sb, h) is None, h.name
        last = ledger_lines(sb, h)[-1]
        assert last["result"] == "interrupted" and last["error"] == "interrupted (SIGTERM)", last


def test_a_host_lost_before_its_put_back_is_named_not_claimed_back(sandbox, app_repo, procs, tmp_path):
    """SIGTERM after host-1 switched (a rolling deploy pausing after its first batch), and host-1
    dies before it is put back: the last line names host-1 as maybe still on the new release and
    still locked, instead of claiming no host is left switched and every lock released; the
    others end clean."""
    sb = sandbox(3)
    assert cli(sb, "deploy").returncode == 0
    commit_change(app_repo, "app.py", "VERSION = 2\n")
    pause = Pause(tmp_path, "restore")
    p = popen(procs, sb, "deploy", "--strategy", "rolling", "--batch", "1", "--pause", "60", env=pause.env)
    wait_until(lambda: p.poll() is not None or current(sb, 0) == "releases/2", 90, "host-1 to switch")
    time.sleep(0.5)  # into the pause after the batch
    p.send_signal(signal.SIGTERM)
    pause.wait(p)
    sb.container(0).kill()
    pause.release()
    code, out, err = finish(p, 120)
    assert code == 143 and "Traceback" not in err, out + err
    assert "host-1 could not be put back and may still run release 2" in err, err
    assert "no host left switched" not in err and "locks released except on host-1" in err, err
    for h in sb.hosts[1:]:
        assert current(sb, h) == "releases/1" and lock_info(sb, h) is None and leftovers(sb, h) == [], h.name


# --- 2. SIGKILL between extraction and switch --------------------------------------------------


def test_sigkill_before_switch_leaves_stale_lock_and_orphan(sandbox, app_repo, procs, tmp_path):
    sb = sandbox(3)
    assert cli(sb, "deploy").returncode == 0
    commit_change(app_repo, "app.py", "VERSION = 2\n")
    assert cli(sb, "deploy").returncode == 0
    commit_change(app_repo, "app.py", "VERSION = 3\n")
    pause = Pause(tmp_path, "switch")
    p = popen(procs, sb, "deploy", env=pause.env)
    pause.wait(p)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=10)
    pause.release()
    for h in sb.hosts:
        assert current(sb, h) == "releases/2"
        assert release_dirs(sb, h) == ["1", "2", "3"]  # 3: complete, never switched
        assert lock_info(sb, h)["pid"] == p.pid

    # the next run names the stale lock: who, pid, age, and how to clear it
    proc = cli(sb, "deploy")
    assert proc.returncode == 3
    assert f"{getpass.getuser()}@{socket.gethostname()} pid {p.pid}" in proc.stderr
    assert "ago" in proc.stderr and "started" in proc.stderr
    assert "deployer unlock --stage sandbox --yes" in proc.stderr
    assert cli(sb, "rollback").returncode == 3
    assert all(current(sb, h) == "releases/2" for h in sb.hosts)
    unlock = cli(sb, "unlock", "--yes")
    assert unlock.returncode == 0 and f"pid {p.pid}" in unlock.stdout

    # the orphan is never a rollback target
    before = [files(sb, h) for h in sb.hosts]
    proc = cli(sb, "rollback", "--to", "3")
    assert proc.returncode == 1 and "never" in proc.stdout + proc.stderr
    assert [files(sb, h) for h in sb.hosts] == before
    # and cleanup purges it
    proc = cli(sb, "cleanup")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for h in sb.hosts:
        assert release_dirs(sb, h) == ["1", "2"] and leftovers(sb, h) == []
    proc = cli(sb, "rollback")
    assert proc.returncode == 0 and all(current(sb, h) == "releases/1" for h in sb.hosts)
    proc = cli(sb, "deploy")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_heartbeat_from_the_future_is_taken_over_after_lock_ttl_by_the_hosts_clock(
    sandbox, app_repo, procs, tmp_path
):
    """The host's clock stepped back an hour after a killed run's last renewal (`touch -d` on its
    heartbeat): the next run says so and waits out lock_ttl by the host's clock, then takes over.
    A live holder whose heartbeat is put in the future renews it and is never taken over."""
    sb = sandbox(1, app={"lock_ttl": 3})
    h = sb.hosts[0]
    assert cli(sb, "deploy").returncode == 0
    commit_change(app_repo, "app.py", "VERSION = 2\n")
    to_the_future = f"touch -d '+1 hour' {PATHS.lock_beat}"

    pause = Pause(tmp_path, "switch")
    live = popen(procs, sb, "deploy", env=pause.env)
    pause.wait(live)
    assert sb.exec(h, to_the_future)[0] == 0
    time.sleep(4)  # past lock_ttl: the holder renewed meanwhile (every lock_ttl / 4)
    for _ in range(2):
        proc = cli(sb, "deploy")
        assert proc.returncode == 3 and "in the future" not in proc.stderr, proc.stderr
    assert lock_info(sb, h)["pid"] == live.pid
    pause.release()
    assert finish(live)[0] == 0 and current(sb, h) == "releases/2"

    commit_change(app_repo, "app.py", "VERSION = 3\n")
    pause = Pause(tmp_path, "switch")
    dead = popen(procs, sb, "deploy", env=pause.env)
    pause.wait(dead)
    dead.send_signal(signal.SIGKILL)
    dead.wait(timeout=10)
    pause.release()
    assert sb.exec(h, to_the_future)[0] == 0
    proc = cli(sb, "deploy")
    assert proc.returncode == 3 and "heartbeat is in the future (host clock stepped back?)" in proc.stderr, proc.stderr
    time.sleep(4)  # past lock_ttl since the future heartbeat was first seen
    proc = cli(sb, "deploy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    said = proc.stdout + proc.stderr
    assert "took over a stale lock" in said and "heartbeat is in the future (host clock stepped back?)" in said
    assert current(sb, h) == "releases/4" and lock_info(sb, h) is None and leftovers(sb, h) == []


def test_orphans_are_never_kept_or_chosen():
    """Planning: a complete release above the live one that was never switched to."""
    state = host_state.parse("current\tlink releases/1\nrelease\t1 1 0 0 0\t{}\nrelease\t2 1 0 0 0\t{}\n")
    # the next deploy (3) purges the orphan 2 instead of keeping it as 3's rollback target
    assert planning.cleanup(state, 5, 3, 1) == ["2"]
    assert planning.cleanup(state, 5, 1) == ["2"]
    with pytest.raises(DeployerError, match="never"):
        planning.rollback_target(state, 2)
    # a release rolled back from is not an orphan: it may be rolled forward to
    state = host_state.parse("current\tlink releases/1\nrelease\t1 1 0 0 0\t{}\nrelease\t2 1 0 1 0\t{}\n")
    assert planning.cleanup(state, 5, 3, 1) == []
    assert planning.rollback_target(state, 2) == 2


# --- 3. sshd killed on one host after upload ---------------------------------------------------


def test_host_3_of_5_dies_before_switch(sandbox, app_repo, procs, tmp_path):
    sb = sandbox(5, ssh={"connect_timeout": 3})
    assert cli(sb, "deploy").returncode == 0
    commit_change(app_repo, "app.py", "VERSION = 2\n")
    pause = Pause(tmp_path, "switch")
    p = popen(procs, sb, "deploy", env=pause.env)
    pause.wait(p)
    sb.container(2).kill()
    pause.release()
    code, out, err = finish(p, 60)
    assert code == 1, out + err
    assert "host-3" in err and "before any switch" in err
    assert "current -> releases/2" not in out  # nobody switched, not even briefly
    for i, h in enumerate(sb.hosts):
        if i == 2:
            continue
        assert current(sb, h) == "releases/1"
        assert release_dirs(sb, h) == ["1"]
        assert leftovers(sb, h) == []

    # host-3 comes back: its stale lock is reported, cleared as documented, and the deploy works
    restart_host(sb, 2)
    proc = cli(sb, "deploy")
    assert proc.returncode == 3 and "host-3" in proc.stderr and f"pid {p.pid}" in proc.stderr
    assert cli(sb, "unlock", "--yes").returncode == 0
    proc = cli(sb, "deploy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for h in sb.hosts:
        assert current(sb, h) == "releases/3"
        assert release_dirs(sb, h) == ["1", "3"]  # host-3's orphan 2 purged
        assert leftovers(sb, h) == []


# --- 4. network stalled mid-transfer -----------------------------------------------------------


def test_default_dead_link_window_is_at_most_45s():
    """With the defaults a stalled host is declared gone 3 x keepalive (30 s) after the last byte;
    the abort then tries one reconnect bounded by connect_timeout (10 s): 40 s <= 45 s."""
    ssh = SSHSettings()
    assert dead_link_window(ssh) == 3 * ssh.keepalive == 30
    assert dead_link_window(ssh) + ssh.connect_timeout <= 45


def silent_for(watch: Watch, clock: list[float], seconds: float) -> float | None:
    """Seconds of silence after which `watch` declared the link dead (0.1 s steps), or None."""
    start = clock[0]
    for tick in range(int(seconds * 10) + 1):
        clock[0] = start + tick / 10
        if watch.dead():
            return tick / 10
    return None


def probe_answered(answers: bool):
    def probe() -> threading.Event:
        event = threading.Event()
        if answers:
            event.set()
        return event

    return probe


@pytest.mark.parametrize("keepalive", [1, 3, 10])
def test_the_watch_declares_a_silent_link_dead_at_the_dead_link_window(keepalive):
    """The liveness rule the run loop applies, on a fake clock: silence → probe → no answer → dead
    at dead_link_window (3 x keepalive); an answered probe (a slow command on a live link) never is."""
    ssh = SSHSettings(keepalive=keepalive)
    clock = [1000.0]
    silent = Watch(probe_answered(False), ssh, clock=lambda: clock[0])
    assert silent.window == dead_link_window(ssh) == 3 * keepalive
    dead_at = silent_for(silent, clock, 2 * dead_link_window(ssh))
    assert dead_at is not None and dead_link_window(ssh) <= dead_at <= dead_link_window(ssh) + 0.2

    slow = Watch(probe_answered(True), ssh, clock=lambda: clock[0])
    assert silent_for(slow, clock, 600) is None  # 10 minutes without a byte of output


def test_the_watch_takes_its_bound_from_dead_link_window(monkeypatch):
    """One rule, not two copies of it: the watch's bound is whatever dead_link_window says."""
    monkeypatch.setattr(liveness, "dead_link_window", lambda ssh: 5.0)
    clock = [1000.0]
    watch = Watch(probe_answered(False), SSHSettings(keepalive=1), clock=lambda: clock[0])
    dead_at = silent_for(watch, clock, 20)
    assert watch.window == 5.0 and dead_at is not None and 5.0 <= dead_at <= 5.2


def test_a_slow_link_is_timed_and_each_command_runs_on_a_channel_opened_ahead(sandbox, app_repo, monkeypatch):
    """Behind 80 ms of round trip: the connection measures at least that, sends small messages at
    once (no Nagle), and every command after the first starts on the channel opened while the one
    before it ran (one round trip per command, not two). The deploy through that link extracts
    the upload as it arrives, and ends up with the same release as the host reached directly."""
    sb = sandbox(2)
    proxy = NetProxy(("127.0.0.1", sb.hosts[0].port), delay=0.04).start()
    try:
        via_proxy(sb, 0, proxy)
        conn = host_conn(sb, 0)
        started = []
        real_start = runloop.send_exec
        monkeypatch.setattr(
            runloop, "send_exec", lambda chan, command: (started.append(chan), real_start(chan, command))
        )
        try:
            assert conn._conn.transport.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert conn.run("true").ok
            for _ in range(3):
                spare = conn._spare
                assert conn.run("true").ok
                assert started[-1] is spare._chan  # the channel opened during the run before
            assert len({id(c) for c in started}) == 4
            assert conn.rtt() >= 0.08
        finally:
            conn.close()
        monkeypatch.undo()

        proc = cli(sb, "deploy")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        streamed = [line.split()[1] for line in proc.stdout.splitlines() if "extracted as it arrived" in line]
        assert "host-1" in streamed, proc.stdout
        proc = cli(sb, "verify")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert files(sb, 0) == files(sb, 1)
        assert "artifact already on host" in cli(sb, "deploy").stdout  # cached by the streamed upload
    finally:
        proxy.stop()


def test_stalled_link_mid_upload_is_noticed_and_aborted(sandbox, procs, tmp_path):
    sb = sandbox(3, ssh={"keepalive": 3, "connect_timeout": 3})
    assert cli(sb, "deploy").returncode == 0
    proxy = NetProxy(("127.0.0.1", sb.hosts[1].port)).start()
    try:
        via_proxy(sb, 1, proxy)
        artifact = big_artifact(tmp_path, 60)
        before = proxy.bytes_forwarded
        p = popen(procs, sb, "deploy", "--artifact", str(artifact))
        wait_until(
            lambda: proxy.bytes_forwarded - before > (8 << 20) or p.poll() is not None, 60, "upload under way", 0.005
        )
        proxy.stall()
        stalled = time.monotonic()
        code, out, err = finish(p, 60)
        took = time.monotonic() - stalled
        # expected: 3 x keepalive to notice + one reconnect attempt (connect_timeout) in the abort
        assert took <= 3 * 3 + 3 + 10, f"took {took:.1f}s"
        assert took <= 45
        assert code == 1, out + err
        assert "host-2" in err and "before any switch" in err
        assert "stopped answering" in out
        for h in (0, 2):
            assert current(sb, sb.hosts[h]) == "releases/1"
            assert release_dirs(sb, h) == ["1"] and leftovers(sb, h) == []
        proxy.resume()
        # host-2 could not be cleaned up while unreachable: its lock is the documented stale lock
        proc = cli(sb, "deploy")
        assert proc.returncode == 3 and "host-2" in proc.stderr
        assert cli(sb, "unlock", "--yes").returncode == 0
        proc = cli(sb, "deploy")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        for h in sb.hosts:
            assert current(sb, h) == "releases/2" and leftovers(sb, h) == []
    finally:
        proxy.stop()


def test_stall_while_a_command_runs_or_at_exec_is_bounded(sandbox, monkeypatch):
    """The same rule on a bare connection: a link stalling while a command runs, or right when the
    command is sent (the exec request is not waited for; the silence watch still ends it)."""
    sb = sandbox(1)
    proxy = NetProxy(("127.0.0.1", sb.hosts[0].port)).start()
    try:
        via_proxy(sb, 0, proxy)
        conn = host_conn(sb, 0, keepalive=1, connect_timeout=2)
        threading.Timer(0.5, proxy.stall).start()
        started = time.monotonic()
        window = dead_link_window(conn.host.ssh)
        with pytest.raises(TransportError, match=f"stopped answering \\(nothing heard for {window:g}s\\)"):
            conn.run("sleep 30")
        assert time.monotonic() - started < 0.5 + 3 + 2
        assert not conn.alive

        proxy.resume()
        conn = host_conn(sb, 0, keepalive=1, connect_timeout=2)
        original = runloop.send_exec

        def exec_on_a_stalling_link(chan, command):
            proxy.stall()
            return original(chan, command)

        monkeypatch.setattr(runloop, "send_exec", exec_on_a_stalling_link)
        started = time.monotonic()
        with pytest.raises(TransportError, match="stopped answering"):
            conn.run("true")
        assert time.monotonic() - started < 3 + 2
    finally:
        proxy.stop()


# --- 5. switch fails on one host after others switched ------------------------------------------


def test_switch_fails_on_host_3_after_others_switched(sandbox, app_repo, procs, tmp_path):
    sb = sandbox(3)
    assert cli(sb, "deploy").returncode == 0
    commit_change(app_repo, "app.py", "VERSION = 2\n")
    pause = Pause(tmp_path, "switch")
    p = popen(procs, sb, "deploy", env=pause.env)
    pause.wait(p)
    sb.exec(2, f"chmod 555 {D}")  # host-3 cannot create its temp link any more
    pause.release()
    code, out, err = finish(p)
    assert code == 1, out + err
    assert "switch failed on host-3" in err
    lines = out.splitlines()
    for name in ("host-1", "host-2"):
        assert any(name in line and "switch" in line and "current -> releases/2" in line for line in lines), out
        assert any(name in line and "restore" in line and "current -> 1 again" in line for line in lines), out
    # the final table reports every host's state
    table = {line.split()[0]: line for line in lines if line.startswith("host-")}
    assert "restored" in table["host-1"] and "restored" in table["host-2"]
    assert "failed" in table["host-3"] and "switch" in table["host-3"] and "Permission denied" in table["host-3"]
    for h in sb.hosts:
        assert current(sb, h) == "releases/1"
        assert release_dirs(sb, h) == ["1"] and leftovers(sb, h) == []
    sb.exec(2, f"chmod 755 {D}")
    proc = cli(sb, "deploy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(current(sb, h) == "releases/2" for h in sb.hosts)


# --- 6. disk full during extraction ------------------------------------------------------------


def test_disk_full_during_extraction(sandbox, app_repo, procs, tmp_path):
    sb = sandbox(2, docker_kwargs={"tmpfs": {"/srv": "size=2m,uid=1000,gid=1000"}})
    assert cli(sb, "deploy").returncode == 0
    # 1 MB unpacked, a few KB packed: passes the free-space check, then the disk fills up
    commit_change(app_repo, "data.txt", "0" * (1 << 20))
    pause = Pause(tmp_path, "prepare")
    p = popen(procs, sb, "deploy", env=pause.env)
    pause.wait(p)
    sb.exec(
        0, "avail=$(df -Pk /srv | awk 'NR==2{print $4}'); head -c $(( (avail - 200) * 1024 )) /dev/zero > /srv/filler"
    )
    before = files(sb, 0)
    pause.release()
    code, out, err = finish(p)
    assert code == 1, out + err
    assert "host-1" in err and "failed to prepare" in err
    assert "no space left" in out.lower(), out
    for h in sb.hosts:
        assert current(sb, h) == "releases/1"
        assert release_dirs(sb, h) == ["1"] and leftovers(sb, h) == []
    assert files(sb, 0) == before
    sb.exec(0, "rm -f /srv/filler")
    proc = cli(sb, "deploy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(current(sb, h) == "releases/2" for h in sb.hosts)


# --- 7. artifact corrupted in transit ----------------------------------------------------------


def test_corrupted_or_truncated_artifact_never_becomes_a_release(sandbox, procs, tmp_path):
    sb = sandbox(2)
    artifact = built_artifact(sb)
    good = artifact.read_bytes()

    def deploy_with(damage) -> tuple[int, str, str]:
        """Damage the file after it was verified locally, while the deploy waits before prepare."""
        pause = Pause(tmp_path, "prepare")
        p = popen(procs, sb, "deploy", "--artifact", str(artifact), env=pause.env)
        pause.wait(p)
        damage()
        pause.release()
        result = finish(p)
        artifact.write_bytes(good)
        return result

    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x01
    for damage in (lambda: artifact.write_bytes(bytes(flipped)), lambda: artifact.write_bytes(good[: len(good) // 2])):
        code, out, err = deploy_with(damage)
        assert code == 1, out + err
        assert "failed to prepare" in err
        assert "sha256 mismatch" in out and "truncated or corrupted in transit" in out
        for h in sb.hosts:
            code, listing = sb.exec(h, f"ls -A {D}/releases {D}/.deployer/cache")
            assert release_dirs(sb, h) == [] and ".tar.gz" not in listing and leftovers(sb, h) == []

    # a cached artifact damaged on the host is caught on the redeploy that reuses it
    proc = cli(sb, "deploy", "--artifact", str(artifact))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sha = hashlib.sha256(good).hexdigest()
    sb.exec(1, f"printf 'X' | dd of={D}/.deployer/cache/{sha}.tar.gz bs=1 seek=100 conv=notrunc 2>/dev/null")
    proc = cli(sb, "deploy", "--artifact", str(artifact))
    assert proc.returncode == 1
    assert "host-2" in proc.stderr and "sha256 mismatch" in proc.stdout
    assert release_dirs(sb, 1) == ["1"] and leftovers(sb, 1) == []
    code, _ = sb.exec(1, f"test -e {D}/.deployer/cache/{sha}.tar.gz")
    assert code != 0  # the bad copy is gone: the next run uploads
    proc = cli(sb, "deploy", "--artifact", str(artifact))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(current(sb, h) == "releases/2" for h in sb.hosts)


# --- 8. two deploys 10 ms apart ----------------------------------------------------------------


def test_racing_deploys_loser_leaves_winners_lock_alone(sandbox, procs, tmp_path):
    sb = sandbox(3)
    artifact = built_artifact(sb)
    pause = Pause(tmp_path, "switch")
    a = popen(procs, sb, "deploy", "--artifact", str(artifact), env=pause.env)
    time.sleep(0.01)
    b = popen(procs, sb, "deploy", "--artifact", str(artifact), env=pause.env)
    loser = wait_until(lambda: next((p for p in (a, b) if p.poll() is not None), None), 60, "one deploy to end")
    winner = b if loser is a else a
    code, out, err = finish(loser)
    assert code == 3, out + err
    pause.wait(winner)
    assert "held by" in err and f"pid {winner.pid}" in err and "deployer unlock" in err
    # the winner's lock is intact on every host, with one token
    tokens = set()
    for h in sb.hosts:
        assert lock_info(sb, h)["pid"] == winner.pid
        tokens.add(sb.exec(h, f"cat {D}/.deployer/lock/token")[1])
    assert len(tokens) == 1
    # a wrong token does not unlock
    conn = host_conn(sb, 0)
    try:
        assert conn.run(remote_lock.unlock(PATHS, "0" * 16)).ok
    finally:
        conn.close()
    assert lock_info(sb, 0)["pid"] == winner.pid
    pause.release()
    code, out, err = finish(winner)
    assert code == 0, out + err
    for h in sb.hosts:
        assert current(sb, h) == "releases/1" and lock_info(sb, h) is None
    assert all(r["lock"] is None for r in status(sb))


# --- 8b. a lock whose holder stopped: the lease, its takeover and fencing -----------------------


def heartbeat_age(sb, h) -> int:
    """Seconds since the lock's holder renewed it, by the host's clock (-1: no lock)."""
    code, out = sb.exec(h, f"b=$(stat -c %Y {D}/.deployer/lock/beat) && echo $(( $(date +%s) - b )) || echo -1")
    return int(out.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_frozen_holder_is_taken_over_after_lock_ttl_and_changes_nothing_when_it_wakes(
    sandbox, app_repo, procs, tmp_path
):
    """lock_ttl = 3 s. A holder waiting longer than that keeps its lease (renewed in the
    background); SIGSTOPped past it, the next run takes the lock over by itself, says so, records
    it and deploys; SIGCONT: the first run fails at its switch and changes nothing."""
    sb = sandbox(3, app={"lock_ttl": 3})
    assert cli(sb, "deploy").returncode == 0
    commit_change(app_repo, "app.py", "VERSION = 2\n")
    pause = Pause(tmp_path, "switch")
    first = popen(procs, sb, "deploy", env=pause.env)
    pause.wait(first)
    # alive but idle for 3 x lock_ttl: the lease is renewed, the lock is not taken
    time.sleep(9)
    assert max(heartbeat_age(sb, h) for h in sb.hosts) <= 3
    held = cli(sb, "deploy")
    assert held.returncode == 3 and f"pid {first.pid}" in held.stderr and "lease renewed" in held.stderr

    first.send_signal(signal.SIGSTOP)
    wait_until(lambda: min(heartbeat_age(sb, h) for h in sb.hosts) > 3, 20, "the frozen run's lease to expire", 0.2)
    commit_change(app_repo, "app.py", "VERSION = 3\n")
    second = cli(sb, "deploy")
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.count("took over a stale lock") == 3 and f"pid {first.pid}" in second.stdout
    for h in sb.hosts:
        assert current(sb, h) == "releases/3"
        takeover = [e for e in ledger_lines(sb, h) if e["action"] == "takeover"]
        assert len(takeover) == 1 and takeover[0]["stale"]["holder"]["pid"] == first.pid
        assert takeover[0]["stale"]["silent_s"] > 3 and takeover[0]["run"] == "deploy"
    after = [(files(sb, h), ledger_lines(sb, h)) for h in sb.hosts]

    first.send_signal(signal.SIGCONT)
    pause.release()
    code, out, err = finish(first, 60)
    assert code == 1, out + err
    assert "this run lost the lock on host-1, host-2, host-3" in err and "Traceback" not in err
    assert [(files(sb, h), ledger_lines(sb, h)) for h in sb.hosts] == after  # nothing changed, not even a record
    assert all(lock_info(sb, h) is None and current(sb, h) == "releases/3" for h in sb.hosts)
    assert cli(sb, "deploy").returncode == 0


def test_an_abort_outlasting_its_lease_records_nothing_after_a_takeover(sandbox, app_repo, procs):
    """lock_ttl = 3 s. A deploy whose smoke test fails on host-2 aborts there; the abort is held
    (removing the partial upload) past lock_ttl, and another deploy takes the lock over and
    completes. When the held abort goes on, it records nothing after the takeover and leaves the
    lock alone; the first run exits 1."""
    sb = sandbox(2, app={"lock_ttl": 3})
    assert cli(sb, "deploy").returncode == 0
    edit_config(sb, lambda doc: doc.__setitem__("smoke", {"command": 'test "$DEPLOY_HOST" != host-2'}))
    commit_change(app_repo, "app.py", "VERSION = 2\n")
    hold_once(sb, 1, "rm", '[ "$1" = -rf ] && [ "${2#*/.part-}" != "$2" ]')
    first = run_until_held(procs, sb, 1, "rm", "deploy")
    wait_until(lambda: heartbeat_age(sb, sb.hosts[1]) > 3, 20, "the aborting run's lease to run out", 0.2)
    edit_config(sb, lambda doc: doc.pop("smoke"))
    second = cli(sb, "deploy")
    assert second.returncode == 0 and "took over a stale lock" in second.stdout, second.stdout + second.stderr
    after = ledger_lines(sb, 1)
    assert [(e["action"], e["result"]) for e in after[-2:]] == [("takeover", "ok"), ("deploy", "ok")], after

    sb.exec(1, "touch /tmp/rm-go")
    code, out, err = finish(first, 60)
    assert code == 1 and "Traceback" not in err, out + err
    assert ledger_lines(sb, 1) == after  # no line of the aborted run after the takeover
    assert lock_info(sb, 1) is None and current(sb, 1) == "releases/2"
    sb.exec(1, "/bin/rm -f /usr/local/bin/rm")


@pytest.mark.slow
def test_a_command_running_past_lock_ttl_keeps_the_lease_and_the_lock(sandbox, procs):
    """lock_ttl = 2 s and a smoke test that runs for several of them: while it runs, the lease is
    renewed beside it (the heartbeat's mtime keeps moving, by the host's clock), so a second
    deploy is refused as locked, nothing is taken over, and the first deploy succeeds."""
    ttl = 2
    beat = f"{D}/.deployer/lock/beat"
    # once a second: the heartbeat's mtime and its age; ends when the test says so (at most 60 s)
    smoke = (
        "i=0; while [ ! -e /tmp/smoke-go ] && [ $i -lt 60 ]; do "
        f'b=$(stat -c %Y {beat}); echo "$b $(( $(date +%s) - b ))" >> /tmp/beats; sleep 1; i=$((i + 1)); done'
    )
    sb = sandbox(2, app={"lock_ttl": ttl}, smoke={"command": smoke})
    artifact = built_artifact(sb)
    first = popen(procs, sb, "deploy", "--artifact", str(artifact))

    def samples(h) -> list[tuple[int, int]]:
        code, out = sb.exec(h, "cat /tmp/beats 2>/dev/null || true")
        return [(int(b), int(age)) for b, age in (line.split() for line in out.splitlines() if line.strip())]

    # the smoke test has run for 3 x lock_ttl on both hosts
    wait_until(
        lambda: min(len(samples(h)) for h in sb.hosts) >= 3 * ttl or first.poll() is not None,
        60,
        "the smoke test to run past lock_ttl",
        0.2,
    )
    assert first.poll() is None, finish(first)
    held = cli(sb, "deploy", "--artifact", str(artifact))
    assert held.returncode == 3, held.stdout + held.stderr
    assert f"pid {first.pid}" in held.stderr and "lease renewed" in held.stderr
    assert first.poll() is None  # still in its smoke test
    for h in sb.hosts:
        sb.exec(h, "touch /tmp/smoke-go")
    code, out, err = finish(first)
    assert code == 0, out + err
    assert "took over" not in out + err and "lost the lock" not in err
    for h in sb.hosts:
        seen = samples(h)
        assert len(seen) >= 3 * ttl
        # renewed while the one command ran: many distinct heartbeats, none older than lock_ttl
        assert len({b for b, _ in seen}) >= len(seen) // ttl, seen
        assert max(age for _, age in seen) <= ttl, seen
        assert current(sb, h) == "releases/1" and lock_info(sb, h) is None
        assert [e["action"] for e in ledger_lines(sb, h)] == ["deploy"]


def test_lock_wait_queues_behind_a_live_holder_then_gives_up_with_exit_3(sandbox, procs, tmp_path):
    sb = sandbox(2)
    artifact = built_artifact(sb)
    pause = Pause(tmp_path, "switch")
    holder = popen(procs, sb, "deploy", "--artifact", str(artifact), env=pause.env)
    pause.wait(holder)
    waiter = popen(procs, sb, "deploy", "--artifact", str(artifact), "--lock-wait", "60")
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(waiter.stdout), daemon=True)
    reader.start()
    said = wait_until(
        lambda: next((line for line in list(lines) if "waiting up to 60s" in line), None) or waiter.poll() is not None,
        30,
        "the waiting run to say whom it waits for",
    )
    assert isinstance(said, str) and f"pid {holder.pid}" in said, "".join(lines)
    assert waiter.poll() is None
    pause.release()
    assert finish(holder)[0] == 0
    waiter.wait(timeout=60)
    reader.join(timeout=10)
    assert waiter.returncode == 0, "".join(lines) + waiter.stderr.read()
    assert all(current(sb, h) == "releases/2" for h in sb.hosts)

    # the wait has an end: still held after it, exit 3
    pause = Pause(tmp_path, "switch")
    holder = popen(procs, sb, "deploy", "--artifact", str(artifact), env=pause.env)
    pause.wait(holder)
    late = cli(sb, "rollback", "--lock-wait", "2")
    assert late.returncode == 3 and "still held after waiting 2s" in late.stderr and f"pid {holder.pid}" in late.stderr
    bad = cli(sb, "cleanup", "--lock-wait", "soon")
    assert bad.returncode == 2 and "--lock-wait" in bad.stderr
    pause.release()
    assert finish(holder)[0] == 0


# --- 9. failed releases, misleading mtimes, keep_releases --------------------------------------


def test_cleanup_orders_by_number_not_mtime(sandbox, app_repo):
    sb = sandbox(2, app={"keep_releases": 10})
    for i in range(4):
        commit_change(app_repo, "n.txt", str(i))
        assert cli(sb, "deploy").returncode == 0
    for h in sb.hosts:
        code, out = sb.exec(
            h,
            f"""set -e; cd {D}/releases
            cp -a 4 5; rm 5/.deployer/complete                      # extraction never finished
            cp -a 4 6; touch 6/.deployer/bad                         # failed its health check
            cp -a 4 7                                                # complete, never switched to
            cp -a 4 8; rm 8/.deployer/complete
            mkdir -p 9 .tmp-10-dead     # no .deployer/: another tool's (kept), and a temp dir
            touch -d '2030-01-01' 1 2; touch -d '2001-01-01' 3 4 5 6 7 8 9
            chown -R deploy:deploy .""",
        )
        assert code == 0, out
    edit_config(sb, lambda doc: doc["app"].update(keep_releases=3))
    commit_change(app_repo, "n.txt", "new")
    proc = cli(sb, "deploy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for h in sb.hosts:
        assert current(sb, h) == "releases/10"
        assert sorted(release_dirs(sb, h), key=int) == ["3", "4", "9", "10"]
    proc = cli(sb, "rollback")
    assert proc.returncode == 0 and all(current(sb, h) == "releases/4" for h in sb.hosts)
    proc = cli(sb, "cleanup")
    assert proc.returncode == 0
    assert all(sorted(release_dirs(sb, h), key=int) == ["3", "4", "9", "10"] for h in sb.hosts)
    proc = cli(sb, "cleanup", "--foreign")
    assert proc.returncode == 0
    assert all(sorted(release_dirs(sb, h), key=int) == ["3", "4", "10"] for h in sb.hosts)


# --- 10. current is not a sane link ------------------------------------------------------------


def test_broken_current_refused_before_any_change(sandbox, app_repo):
    sb = sandbox(5)
    assert cli(sb, "deploy").returncode == 0
    broken = {
        1: (f"rm {D}/current && mkdir {D}/current && echo mine > {D}/current/keep", "real directory"),
        2: (f"ln -sfn releases/99 {D}/current", "dangling"),
        3: (f"ln -sfn /tmp {D}/current", "outside releases"),
        4: (f"rm {D}/current && echo x > {D}/current", "real file"),
    }
    for i, (cmd, _) in broken.items():
        assert sb.exec(i, f"{cmd} && chown -hR deploy:deploy {D}")[0] == 0
    before = [files(sb, h) for h in sb.hosts]
    commit_change(app_repo, "app.py", "VERSION = 2\n")
    proc = cli(sb, "deploy")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and all(f"host-{i + 1}: current " in lines[0] for i in broken), proc.stderr
    for i, (_, said) in broken.items():
        row = next(line for line in proc.stdout.splitlines() if line.startswith(f"host-{i + 1} "))
        assert said in row, row
    assert [files(sb, h) for h in sb.hosts] == before
    assert all(leftovers(sb, h) == [] for h in sb.hosts)
    assert sb.exec(1, f"ls -A {D}/current")[1].split() == ["keep"]  # nothing moved into it

    # repaired by hand, plus stale temp links of dead runs: the deploy works and removes those
    for i in broken:
        sb.exec(i, f"rm -rf {D}/current && ln -s releases/1 {D}/current && chown -h deploy:deploy {D}/current")
    sb.exec(0, f"ln -s releases/1 {D}/.current-0123456789abcdef && chown -h deploy {D}/.current-0123456789abcdef")
    sb.exec(1, f"ln -s releases/77 {D}/.current-fedcba9876543210 && chown -h deploy {D}/.current-fedcba9876543210")
    proc = cli(sb, "deploy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for h in sb.hosts:
        assert current(sb, h) == "releases/2" and leftovers(sb, h) == []


# --- 11. readers never see a missing or incomplete current ------------------------------------


@pytest.mark.slow
def test_current_never_missing_during_1000_switches(sandbox):
    sb = sandbox(1)
    assert cli(sb, "deploy").returncode == 0
    assert cli(sb, "deploy").returncode == 0
    sb.exec(
        0,
        "nohup sh -c 'end=$(($(date +%s)+300)); n=0; bad=0; "
        "while [ ! -f /tmp/stop ] && [ $(date +%s) -lt $end ]; do "
        f"t=$(readlink -e {D}/current) || bad=$((bad+1)); "
        '[ -f "$t/.deployer/complete" ] && [ -f "$t/REVISION" ] || bad=$((bad+1)); n=$((n+1)); done; '
        "echo $n $bad > /tmp/reader' >/dev/null 2>&1 &",
    )
    # the deployer's own switch script, 1000 times: 25 per remote command (each in its own
    # subshell) so the test spends its time switching rather than opening SSH sessions
    conn = host_conn(sb)
    try:
        for _batch in range(40):
            script = remote_lock.unleased(
                "\n".join(f"( {commands.switch(PATHS, 1 + i % 2, 'swap')} ) >/dev/null || exit 1" for i in range(25))
            )
            result = conn.run(script)
            assert result.ok, result.stderr
    finally:
        conn.close()
    sb.exec(0, "touch /tmp/stop")
    out = wait_until(lambda: sb.exec(0, "cat /tmp/reader 2>/dev/null")[1].strip(), 10, "the reader's tally")
    reads, bad = map(int, out.split())
    assert reads > 1000 and bad == 0


# --- 11b. a rollback whose switch fails on one host ------------------------------------------------


def test_rollback_switch_failing_on_one_host_puts_the_others_back(sandbox, app_repo):
    """Hosts 1-2 switch back (and release their lock in the same command), host-3's switch fails:
    1-2 are put back on the release they had, though their lock is already gone, and say so in
    their ledger; nothing is left locked."""
    sb = sandbox(3)
    assert cli(sb, "deploy").returncode == 0
    commit_change(app_repo, "app.py", "VERSION = 2\n")
    assert cli(sb, "deploy").returncode == 0
    sb.exec(2, f"chmod a-w {D}")  # host-3 cannot create its temp link next to current
    try:
        proc = cli(sb, "rollback")
    finally:
        sb.exec(2, f"chmod u+w {D}")
    assert proc.returncode == 1 and "switched hosts put back" in proc.stderr, proc.stdout + proc.stderr
    for h in sb.hosts:
        assert current(sb, h) == "releases/2" and lock_info(sb, h) is None
    for h in sb.hosts[:2]:
        last = ledger_lines(sb, h)[-1]
        assert last["action"] == "rollback" and last["result"] == "failed" and last["release"] == 2, last
    assert cli(sb, "rollback").returncode == 0
    assert all(current(sb, h) == "releases/1" for h in sb.hosts)


# --- 11c. a rollback interrupted ----------------------------------------------------------------

BLOCKING_HOOK = (
    'test "$DEPLOY_HOST" != host-2 || { touch /tmp/hook-in; i=0; '
    "while [ ! -f /tmp/hook-go ] && [ $i -lt 900 ]; do sleep 0.1; i=$((i+1)); done; }"
)
# holds once: a put-back's restart goes on
BLOCKING_ONCE = BLOCKING_HOOK.replace("|| {", "|| test -f /tmp/hook-in || {")


def test_an_interrupted_rollback_is_undone(sandbox, app_repo, procs):
    """A rollback of 3 hosts interrupted while host-2 runs a before_rollback hook (every host
    locked, none switched) or its restart (every host switched back, locks released): every host
    ends on the release it had, unlocked, nothing left behind, the interruption in its ledger,
    exit 128 + the signal, and the next rollback works. (During after_rollback the target stays
    live: the next test.)"""
    sb = sandbox(3)
    assert cli(sb, "deploy").returncode == 0
    commit_change(app_repo, "app.py", "VERSION = 2\n")
    assert cli(sb, "deploy").returncode == 0
    for sig, point in ((signal.SIGINT, "restart"), (signal.SIGTERM, "restart"), (signal.SIGTERM, "before_rollback")):
        name = "Ctrl-C" if sig == signal.SIGINT else signal.Signals(sig).name

        def held_at(doc, point=point):
            doc.pop("restart", None)
            doc.pop("hooks", None)
            if point == "restart":
                doc["restart"] = {"command": BLOCKING_ONCE}
            else:
                doc["hooks"] = {point: [{"command": BLOCKING_HOOK}]}

        edit_config(sb, held_at)
        sb.exec(1, "rm -f /tmp/hook-in /tmp/hook-go")
        p = popen(procs, sb, "rollback")
        wait_until(
            lambda p=p: p.poll() is not None or sb.exec(1, "test -f /tmp/hook-in")[0] == 0, 60, f"{point} on host-2"
        )
        assert p.poll() is None, p.communicate()
        switched = [current(sb, h) for h in sb.hosts]
        assert switched == ["releases/1"] * 3 if point == "restart" else ["releases/2"] * 3, switched
        p.send_signal(sig)
        code, out, err = finish(p, 60)
        assert code == 128 + sig, (name, point, out + err)
        assert f"interrupted ({name})" in err and "Traceback" not in err, err
        for h in sb.hosts:
            assert current(sb, h) == "releases/2", (name, point, h.name)
            assert release_dirs(sb, h) == ["1", "2"] and leftovers(sb, h) == [], (name, point, h.name)
            assert lock_info(sb, h) is None, (name, point, h.name)
            last = ledger_lines(sb, h)[-1]
            assert last["action"] == "rollback" and last["result"] == "interrupted", (point, last)
            assert f"interrupted ({name})" in last["error"], (point, last)
        code, out = sb.exec(1, "pgrep -u deploy -f 'hook-go|sleep' || true")
        assert out.strip() == "", out  # the hook was killed, not left waiting
    sb.exec(1, "touch /tmp/hook-go")
    proc = cli(sb, "rollback")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(current(sb, h) == "releases/1" for h in sb.hosts)


def test_a_signal_during_after_rollback_keeps_the_target_live(sandbox, app_repo, procs):
    """Every host switched to the rollback's target and restarted; Ctrl-C or SIGTERM while host-2
    runs an after_rollback hook keeps the target live on every host (putting hosts back would
    bring back the release the operator was escaping): each host's ledger has the rollback's `ok`
    line, once, and nothing after it; no lock is left; the hook is killed; exit 130 or 143 saying
    the target is live on every host."""
    sb = sandbox(3)
    for n in (1, 2):
        commit_change(app_repo, "app.py", f"VERSION = {n}\n")
        assert cli(sb, "deploy").returncode == 0
    edit_config(sb, lambda doc: doc.__setitem__("hooks", {"after_rollback": [{"command": BLOCKING_HOOK}]}))
    for sig, target in ((signal.SIGINT, 1), (signal.SIGTERM, 2)):
        name = "Ctrl-C" if sig == signal.SIGINT else signal.Signals(sig).name
        sb.exec(1, "rm -f /tmp/hook-in /tmp/hook-go")
        before = [len(ledger_lines(sb, h)) for h in sb.hosts]
        p = run_until_held(procs, sb, 1, "hook", "rollback", "--to", str(target))
        p.send_signal(sig)
        code, out, err = finish(p, 60)
        assert code == 128 + sig and "Traceback" not in err, (name, out + err)
        assert f"interrupted ({name}) during after_rollback" in err, err
        assert f"(release {target}) is live on every host" in err and "locks released" in err, err
        for h, seen in zip(sb.hosts, before, strict=True):
            assert current(sb, h) == f"releases/{target}", (name, h.name, out + err)
            assert lock_info(sb, h) is None and leftovers(sb, h) == [], (name, h.name)
            lines = ledger_lines(sb, h)[seen:]
            assert [(x["action"], x["result"], x["release"]) for x in lines] == [("rollback", "ok", target)], lines
        code, hook = sb.exec(1, "pgrep -u deploy -f 'hook-go|sleep' || true")
        assert hook.strip() == "", hook  # the hook was killed, not left waiting
    edit_config(sb, lambda doc: doc.pop("hooks"))
    proc = cli(sb, "rollback", "--to", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(current(sb, h) == "releases/1" for h in sb.hosts)


# --- 11d. a signal while a switch's answer is still on its way -------------------------------


def hold_once(sb, index: int, tool: str, match: str = "true", after: bool = False) -> None:
    """Put a wrapper of `tool` first in a host's PATH: the first call for which `match` (a shell
    test of its arguments) holds says so in /tmp/<tool>-in and waits for /tmp/<tool>-go (at most
    90 s), before running the real tool or, with `after`, once it ran (its answer held back)."""
    hold = (
        f"if {match} && [ -f /tmp/hold-{tool} ]; then /bin/rm -f /tmp/hold-{tool}; touch /tmp/{tool}-in; i=0\n"
        f"  while [ ! -f /tmp/{tool}-go ] && [ $i -lt 900 ]; do sleep 0.1; i=$((i+1)); done; fi\n"
    )
    run = f'/bin/{tool} "$@"'
    body = f"{run}; s=$?\n{hold}exit $s\n" if after else f"{hold}exec {run}\n"
    sb.exec(index, f"cat > /usr/local/bin/{tool} <<'EOF'\n#!/bin/sh\n{body}EOF\nchmod 755 /usr/local/bin/{tool}")
    sb.exec(index, f"/bin/rm -f /tmp/{tool}-*; touch /tmp/hold-{tool}; chown deploy /tmp/hold-{tool}")


ONTO_CURRENT = f'{{ for a; do :; done; [ "$a" = {D}/current ]; }}'  # mv's last argument: a switch


def run_until_held(procs, sb, index: int, what: str, *args: str) -> subprocess.Popen:
    """Start the deployer and wait until host <index> says /tmp/<what>-in (held there)."""
    p = popen(procs, sb, *args)
    wait_until(lambda: p.poll() is not None or sb.exec(index, f"test -f /tmp/{what}-in")[0] == 0, 90, what)
    assert p.poll() is None, p.communicate()
    return p


def test_a_signal_while_a_switch_answer_is_in_flight_leaves_no_host_switched(sandbox, app_repo, procs):
    """SIGTERM while host-2's switch (of a deploy, then of a rollback) has renamed current but its
    answer has not come back, and while it has not renamed yet: every host ends on the release it
    had, unlocked, the interruption in its ledger, exit 143. A switch whose answer never came is
    put back only where current points at what it switched to."""
    sb = sandbox(3)
    assert cli(sb, "deploy").returncode == 0
    commit_change(app_repo, "app.py", "VERSION = 2\n")

    def interrupt(action: str, when: str) -> tuple[int, str, str]:
        hold_once(sb, 1, "mv", ONTO_CURRENT, after=when == "after")
        p = run_until_held(procs, sb, 1, "mv", action)
        held = current(sb, 1)
        p.send_signal(signal.SIGTERM)
        code, out, err = finish(p, 60)
        assert code == 143, (action, when, out + err)
        assert "interrupted (SIGTERM)" in err and "Traceback" not in err, err
        return held, out, err

    for action, when, was, releases in (
        ("deploy", "after", "releases/1", ["1"]),
        ("deploy", "before", "releases/1", ["1"]),
        ("rollback", "after", "releases/2", ["1", "2"]),
        ("rollback", "before", "releases/2", ["1", "2"]),
    ):
        if action == "rollback" and current(sb, 0) != "releases/2":
            assert cli(sb, "deploy").returncode == 0
        before = len(ledger_lines(sb, 1))
        held, out, err = interrupt(action, when)
        assert (held != was) == (when == "after"), (action, when, held)  # the rename had (not) happened
        for h in sb.hosts:
            assert current(sb, h) == was, (action, when, h.name, out + err)
            assert release_dirs(sb, h) == releases and leftovers(sb, h) == [], (action, when, h.name)
            assert lock_info(sb, h) is None, (action, when, h.name)
            last = ledger_lines(sb, h)[-1]
            assert last["action"] == action and last["result"] == "interrupted", (action, when, last)
        assert len(ledger_lines(sb, 1)) == before + 1, (action, when)  # one line for its one run
    sb.exec(1, "rm -f /usr/local/bin/mv")
    assert cli(sb, "rollback").returncode == 0
    assert all(current(sb, h) == "releases/1" for h in sb.hosts)


# --- 11e. a signal while a lock's answer is on its way -------------------------------------


def test_a_signal_while_a_lock_answer_is_in_flight_leaves_no_lock(sandbox, app_repo, procs):
    """SIGTERM after host-2's lock command took the lock but before its answer came back: this
    run's token is released there too, with an `interrupted` line, so the next deploy needs no
    `unlock` and no wait for lock_ttl."""
    sb = sandbox(3)
    assert cli(sb, "deploy").returncode == 0
    commit_change(app_repo, "app.py", "VERSION = 2\n")
    hold_once(sb, 1, "df")  # the lock command's free-space read, after the lock is taken
    p = run_until_held(procs, sb, 1, "df", "deploy")
    assert lock_info(sb, 1) is not None  # taken, its answer held
    p.send_signal(signal.SIGTERM)
    code, out, err = finish(p, 60)
    assert code == 143 and "interrupted (SIGTERM)" in err and "Traceback" not in err, out + err
    for h in sb.hosts:
        assert lock_info(sb, h) is None and leftovers(sb, h) == [], h.name
        assert current(sb, h) == "releases/1" and release_dirs(sb, h) == ["1"], h.name
        last = ledger_lines(sb, h)[-1]
        assert last["result"] == "interrupted" and last["error"] == "interrupted (SIGTERM)", (h.name, last)
    sb.exec(1, "rm -f /usr/local/bin/df")
    proc = cli(sb, "deploy")
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- 11f. a signal during the finish, the release live everywhere -----------------------------


def test_a_signal_during_the_finish_leaves_the_release_live_everywhere(sandbox, app_repo, procs):
    """SIGTERM while host-2 removes old releases, after host-1 and host-3 finished: the release
    switched and passed its checks on every host, so it stays live on all three (never a mixed
    fleet); every lock is released; exit 143, saying so; the next deploy cleans up."""
    sb = sandbox(3, app={"keep_releases": 1})
    for n in (1, 2):
        commit_change(app_repo, "app.py", f"VERSION = {n}\n")
        assert cli(sb, "deploy").returncode == 0
    commit_change(app_repo, "app.py", "VERSION = 3\n")
    hold_once(sb, 1, "rm", '[ "$1 $2" = "-rf --" ]')  # the finish removing old releases
    p = run_until_held(procs, sb, 1, "rm", "deploy")
    wait_until(lambda: lock_info(sb, 0) is None and lock_info(sb, 2) is None, 30, "host-1 and host-3 to finish")
    p.send_signal(signal.SIGTERM)
    code, out, err = finish(p, 60)
    assert code == 143 and "interrupted (SIGTERM)" in err and "Traceback" not in err, out + err
    assert "release 3 is live on every host" in err and "cleanup cut short on host-2" in err, err
    # the release the held cleanup was removing lost its mark first: never a rollback target
    assert sb.exec(1, f"test -d {D}/releases/1 && ! test -e {D}/releases/1/.deployer/complete")[0] == 0
    sb.exec(1, "/bin/rm -f /usr/local/bin/rm")

    def check(number: int, cut: list[str]) -> None:
        for h in sb.hosts:
            assert current(sb, h) == f"releases/{number}", (h.name, out + err)
            assert lock_info(sb, h) is None and leftovers(sb, h) == [], h.name
            lines = [line for line in ledger_lines(sb, h) if line["release"] == number]
            deploys = [line["result"] for line in lines if line["action"] == "deploy"]
            cleanups = [line["result"] for line in lines if line["action"] == "cleanup"]
            assert deploys == ["ok"], (h.name, lines)  # recorded once, by the finish or after it
            assert cleanups == (["interrupted"] if h.name in cut else []), (h.name, lines)

    check(3, ["host-2"])
    # a signal during a before_finish hook (no finish started): every host records it after
    commit_change(app_repo, "app.py", "VERSION = 4\n")
    hook = BLOCKING_HOOK.replace("hook-in", "finish-hook-in")
    edit_config(sb, lambda doc: doc.__setitem__("hooks", {"before_finish": [{"command": hook}]}))
    sb.exec(1, "/bin/rm -f /tmp/finish-hook-in /tmp/hook-go")
    p = run_until_held(procs, sb, 1, "finish-hook", "deploy")
    p.send_signal(signal.SIGTERM)
    code, out, err = finish(p, 60)
    assert code == 143 and "release 4 is live on every host" in err, out + err
    check(4, ["host-1", "host-2", "host-3"])
    edit_config(sb, lambda doc: doc.pop("hooks"))
    commit_change(app_repo, "app.py", "VERSION = 5\n")
    assert cli(sb, "deploy").returncode == 0
    assert all(release_dirs(sb, h) == ["4", "5"] for h in sb.hosts)


def test_a_failed_finish_records_the_live_release_as_deployed(sandbox, app_repo, procs):
    """The release switched and passed its checks on every host, then its finish fails: a
    before_finish hook failing on host-2, or host-2's connection killed while it removes old
    releases. Each host's ledger gets the deploy `ok` with its release, once, and the finish's
    failure apart (a `cleanup` line `failed`), never a `deploy failed` without a release; --json
    gives every host that release; locks are released; exit 1 saying it is live everywhere."""
    sb = sandbox(3, app={"keep_releases": 1})
    for n in (1, 2):
        commit_change(app_repo, "app.py", f"VERSION = {n}\n")
        assert cli(sb, "deploy").returncode == 0

    def check(number: int, proc_out: str, before: list[int], failed_step: str) -> None:
        doc = json.loads(proc_out)
        assert doc["exit_code"] == 1 and f"release {number} is live everywhere, but " in doc["error"], doc
        rows = {row["host"]: row for row in doc["hosts"]}
        assert [rows[h.name]["release"] for h in sb.hosts] == [number] * 3, rows
        assert (rows["host-2"]["result"], rows["host-2"]["step"]) == ("failed", failed_step), rows
        for h, seen in zip(sb.hosts, before, strict=True):
            assert current(sb, h) == f"releases/{number}" and lock_info(sb, h) is None, h.name
            lines = [(x["action"], x["result"], x["release"]) for x in ledger_lines(sb, h)[seen:]]
            cut = h.name == "host-2" or failed_step == "before_finish"
            assert lines == [("deploy", "ok", number)] + ([("cleanup", "failed", number)] if cut else []), lines

    commit_change(app_repo, "app.py", "VERSION = 3\n")
    edit_config(sb, lambda doc: doc.__setitem__("hooks", {"before_finish": [{"command": HOST_2_FAILS}]}))
    before = [len(ledger_lines(sb, h)) for h in sb.hosts]
    proc = cli(sb, "deploy", "--json")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    check(3, proc.stdout, before, "before_finish")

    edit_config(sb, lambda doc: doc.pop("hooks"))
    commit_change(app_repo, "app.py", "VERSION = 4\n")
    before = [len(ledger_lines(sb, h)) for h in sb.hosts]
    hold_once(sb, 1, "rm", '[ "$1 $2" = "-rf --" ]')  # the finish removing old releases
    p = run_until_held(procs, sb, 1, "rm", "deploy", "--json")
    sb.exec(1, "pkill -KILL -f 'deploy@notty'")  # host-2's connection dies mid-finish
    code, out, err = finish(p, 120)
    assert code == 1 and "Traceback" not in err, out + err
    sb.exec(1, "touch /tmp/rm-go")  # the orphaned cleanup goes on
    wait_until(lambda: sb.exec(1, "pgrep -f '[/]usr/local/bin/rm")[0] != 0, 30, "the orphaned cleanup to end")
    check(4, out, before, "finish")
    sb.exec(1, "/bin/rm -f /usr/local/bin/rm")
    commit_change(app_repo, "app.py", "VERSION = 5\n")
    assert cli(sb, "deploy").returncode == 0


HOST_2_FAILS = 'test "$DEPLOY_HOST" != host-2'


def test_one_host_whose_switch_carried_its_finish_is_told_apart_after_a_signal(sandbox, app_repo, procs):
    """One host, nothing between its switch and its finish: they ride one command. A SIGTERM with
    its answer held back after the rename: the host is read once and the release stays live,
    recorded once, lock released, exit 143 saying so. Held after the whole finish (the lock
    already gone): the same, nothing added. Held before the rename: the usual clean abort."""
    sb = sandbox(1)
    assert cli(sb, "deploy").returncode == 0
    cases = (
        ("mv", ONTO_CURRENT, True, 2, True),
        ("rm", f'[ "$1 $2" = "-rf {D}/.deployer/lock" ]', True, 3, False),
        ("mv", ONTO_CURRENT, False, 3, None),
    )
    for n, (tool, match, after, live, cut) in enumerate(cases, start=2):
        commit_change(app_repo, "app.py", f"VERSION = {n}\n")
        hold_once(sb, 0, tool, match, after)
        p = run_until_held(procs, sb, 0, tool, "deploy")
        p.send_signal(signal.SIGTERM)
        code, out, err = finish(p, 60)
        assert code == 143 and "Traceback" not in err, (tool, out + err)
        assert current(sb, 0) == f"releases/{live}" and lock_info(sb, 0) is None, (tool, out + err)
        lines = [line for line in ledger_lines(sb, 0) if line["release"] == n]
        if cut is None:  # never switched: aborted, its release removed
            assert "no host left switched" in err and str(n) not in release_dirs(sb, 0), err
            assert [line["result"] for line in lines] == ["interrupted"], lines
            continue
        assert f"release {n} is live on every host" in err and ("cleanup cut short" in err) == cut, err
        assert [line["result"] for line in lines if line["action"] == "deploy"] == ["ok"], lines
        assert len(lines) == (2 if cut else 1), lines  # + the cleanup's interrupted line
    sb.exec(0, "rm -f /usr/local/bin/mv /usr/local/bin/rm")
    assert cli(sb, "deploy").returncode == 0


# --- 11g. a signal during the put-back's restart -----------------------------------------------

HELD_RESTART = (
    'if [ -f /tmp/hold-restart ] && [ "$DEPLOY_HOST" = host-2 ]; then touch /tmp/restart-in; i=0; '
    "while [ ! -f /tmp/restart-go ] && [ $i -lt 900 ]; do sleep 0.1; i=$((i+1)); done; fi; "
    'readlink /srv/app/current > "/tmp/restarted-$DEPLOY_HOST"'
)


def test_a_signal_during_the_put_back_restart_does_not_cut_it_short(sandbox, app_repo, procs):
    """An after_switch hook fails, so the deploy puts every host back and restarts the old release;
    a SIGTERM while host-2's restart runs is ignored like any signal during the put-back: the
    restart completes on every host, the release is marked bad, locks are released, exit 1."""
    sb = sandbox(3, restart={"command": HELD_RESTART})
    assert cli(sb, "deploy").returncode == 0
    commit_change(app_repo, "app.py", "VERSION = 2\n")
    edit_config(sb, lambda doc: doc.__setitem__("hooks", {"after_switch": [{"command": "exit 7"}]}))
    sb.exec(1, "rm -f /tmp/restart-* /tmp/restarted-*; touch /tmp/hold-restart")
    for h in (0, 2):
        sb.exec(h, "rm -f /tmp/restarted-*")
    p = run_until_held(procs, sb, 1, "restart", "deploy")
    assert all(current(sb, h) == "releases/1" for h in sb.hosts)  # put back, restarting
    p.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert p.poll() is None  # ignored: the put-back goes on
    sb.exec(1, "touch /tmp/restart-go")
    code, out, err = finish(p, 60)
    assert code == 1 and "rolled back" in err and "release marked bad" in err, out + err
    for h in sb.hosts:
        assert current(sb, h) == "releases/1" and lock_info(sb, h) is None, h.name
        assert sb.exec(h, "cat /tmp/restarted-*")[1].strip() == "releases/1", h.name  # restarted on the old
        assert sb.exec(h, f"test -f {D}/releases/2/.deployer/bad")[0] == 0, h.name


def test_a_host_lost_before_a_rollbacks_put_back_is_named(sandbox, app_repo, procs):
    """A rollback interrupted during host-2's restart, host-1 dead by then: the last line names
    host-1 as maybe still on the rollback's target instead of claiming every switched host was
    put back; host-2 and host-3 end on the release they had, unlocked."""
    sb = sandbox(3)
    assert cli(sb, "deploy").returncode == 0
    commit_change(app_repo, "app.py", "VERSION = 2\n")
    assert cli(sb, "deploy").returncode == 0
    edit_config(sb, lambda doc: doc.__setitem__("restart", {"command": BLOCKING_ONCE}))
    sb.exec(1, "rm -f /tmp/hook-in /tmp/hook-go")
    p = run_until_held(procs, sb, 1, "hook", "rollback")
    sb.container(0).kill()
    p.send_signal(signal.SIGTERM)
    code, out, err = finish(p, 120)
    assert code == 143 and "Traceback" not in err, out + err
    assert "host-1 could not be put back and may still be on the rollback's target" in err, err
    assert "switched hosts put back" not in err, err
    for h in sb.hosts[1:]:
        assert current(sb, h) == "releases/2" and lock_info(sb, h) is None, h.name


def test_a_signal_during_a_rollbacks_restart_restarts_the_release_put_back(sandbox, app_repo, procs):
    """A rollback from release 2 to 1: every host switched and host-1, host-3 restarted in release
    1; SIGTERM while host-2's restart is held. Every host goes back to release 2 and is restarted
    there (its processes no longer run the target's code), locks released, exit 143."""
    restarts = "/tmp/restarts"  # on each host: the release each restart ran in, one a line
    sb = sandbox(3, restart={"command": f'echo "$DEPLOY_RELEASE" | tee -a {restarts}'})
    for n in (1, 2):
        commit_change(app_repo, "app.py", f"VERSION = {n}\n")
        assert cli(sb, "deploy").returncode == 0
    hold_once(sb, 1, "tee", f'[ "$2" = {restarts} ]')
    p = run_until_held(procs, sb, 1, "tee", "rollback")
    wait_until(lambda: all(sb.exec(h, f"tail -n 1 {restarts}")[1].strip() == "1" for h in (0, 2)), 30, "restarts")
    assert [current(sb, h) for h in sb.hosts] == ["releases/1"] * 3
    p.send_signal(signal.SIGTERM)
    code, out, err = finish(p, 60)
    assert code == 143 and "Traceback" not in err, out + err
    for h in sb.hosts:
        assert current(sb, h) == "releases/2" and lock_info(sb, h) is None, h.name
        assert sb.exec(h, f"tail -n 1 {restarts}")[1].strip() == "2", (h.name, out)  # restarted where put back
        last = ledger_lines(sb, h)[-1]
        assert (last["action"], last["result"]) == ("rollback", "interrupted"), last
    sb.exec(1, "touch /tmp/tee-go; /bin/rm -f /usr/local/bin/tee")


# --- 11h. a config push cut off, a dead one's upload -------------------------------------------


def test_a_takeover_removes_a_dead_config_push_env_upload(sandbox, app_repo, procs):
    """A config push killed (SIGKILL, its shell on the host too) once its env upload is on the
    host: after lock_ttl the next run takes the lock over, records it, and removes that upload
    (it holds the env's values) with the dead run's other temp files."""
    sb = sandbox(1, app={"lock_ttl": 3}, env={"APP_MODE": "one"})
    assert cli(sb, "deploy").returncode == 0
    edit_config(sb, lambda doc: doc["env"].__setitem__("APP_MODE", "two"))
    hold_once(sb, 0, "cat", "[ $# -eq 0 ]", after=True)  # write_env.sh's upload, received
    p = run_until_held(procs, sb, 0, "cat", "config.push")
    p.kill()
    p.wait(timeout=10)
    sb.exec(0, "pkill -KILL -u deploy")  # its shell on the host dies too
    upload = f"{D}/releases/1/.deployer/env.tmp-*"
    assert sb.exec(0, f"ls {upload}")[0] == 0
    sb.exec(0, "/bin/rm -f /usr/local/bin/cat")
    wait_until(lambda: heartbeat_age(sb, 0) > 3, 30, "the lease to run out")
    before = len(ledger_lines(sb, 0))
    proc = cli(sb, "deploy")
    assert proc.returncode == 0 and "took over a stale lock" in proc.stdout, proc.stdout + proc.stderr
    assert sb.exec(0, f"ls {upload}")[0] != 0, "the dead push's env upload is still there"
    assert [x["action"] for x in ledger_lines(sb, 0)[before:]] == ["takeover", "deploy"]


def test_a_config_push_whose_answer_is_cut_off_records_what_happened(sandbox, app_repo, procs):
    """SIGTERM while config.push's answer is on its way: held after the whole write (recorded,
    lock released), after the env's rename (not yet recorded, lock held), and before the upload is
    read. Written: the ledger gets the push's `ok`, once, and nothing after it, and the last line
    says the env was written but not restarted, with the command to run; not written: one
    `interrupted` line, the env as it was. No lock left, exit 143 each time."""
    sb = sandbox(1, env={"APP_MODE": "m0"}, restart={"command": "touch /tmp/restarted"})
    assert cli(sb, "deploy").returncode == 0
    cases = (
        ("rm", f'[ "$1 $2" = "-rf {D}/.deployer/lock" ]', True),
        ("mv", '[ "$1" = -f ] && case "$2" in *env.tmp-*) true;; *) false;; esac', True),
        ("cat", "[ $# -eq 0 ]", False),
    )
    for n, (tool, match, written) in enumerate(cases, start=1):
        edit_config(sb, lambda doc, n=n: doc["env"].__setitem__("APP_MODE", f"m{n}"))
        sb.exec(0, "rm -f /tmp/restarted")
        before = len(ledger_lines(sb, 0))
        hold_once(sb, 0, tool, match, after=written)
        p = run_until_held(procs, sb, 0, tool, "config.push")
        p.send_signal(signal.SIGTERM)
        code, out, err = finish(p, 60)
        sb.exec(0, f"touch /tmp/{tool}-go")  # whatever still runs there goes on, and stops
        wait_until(lambda tool=tool: sb.exec(0, f"pgrep -f '[/]usr/local/bin/{tool}'")[0] != 0, 30, "the held tool")
        sb.exec(0, f"/bin/rm -f /usr/local/bin/{tool}")
        assert code == 143 and "interrupted (SIGTERM)" in err and "Traceback" not in err, (tool, out + err)
        assert lock_info(sb, 0) is None, tool
        lines = [(x["action"], x["result"]) for x in ledger_lines(sb, 0)[before:]]
        env = sb.exec(0, f"cat {D}/current/.env")[1]
        assert sb.exec(0, "test -e /tmp/restarted")[0] != 0, tool
        if written:
            assert lines == [("config", "ok")], (tool, lines)
            assert f"APP_MODE=m{n}" in env, (tool, env)
            assert "env written on host-1; not restarted on host-1: run `" in err, err
            assert "config.push --stage sandbox` to write and restart" in err, err
        else:
            assert lines == [("config", "interrupted")], (tool, lines)
            assert f"APP_MODE=m{n - 1}" in env and "env written" not in err, (tool, env, err)
    proc = cli(sb, "config.push")
    assert proc.returncode == 0 and sb.exec(0, "test -e /tmp/restarted")[0] == 0, proc.stdout + proc.stderr


# --- 12. rollback without a usable target ------------------------------------------------------


def test_rollback_without_usable_target_changes_nothing(sandbox, app_repo):
    sb = sandbox(3)
    assert cli(sb, "deploy").returncode == 0
    before = [files(sb, h) for h in sb.hosts]
    proc = cli(sb, "rollback")
    assert proc.returncode == 1 and "no earlier complete release" in proc.stdout
    assert [files(sb, h) for h in sb.hosts] == before

    commit_change(app_repo, "app.py", "VERSION = 2\n")
    assert cli(sb, "deploy").returncode == 0
    sb.exec(0, f"rm -rf {D}/releases/1")  # target deleted
    sb.exec(1, f"rm {D}/releases/1/.deployer/complete")  # target incomplete
    sb.exec(2, f"touch {D}/releases/1/.deployer/bad")  # target marked bad
    before = [files(sb, h) for h in sb.hosts]
    proc = cli(sb, "rollback")
    assert proc.returncode == 1 and "host-1, host-2, host-3" in proc.stderr
    proc = cli(sb, "rollback", "--to", "1")
    assert proc.returncode == 1
    for name, said in (("host-1", "does not exist"), ("host-2", "is incomplete"), ("host-3", "is marked bad")):
        row = next(line for line in proc.stdout.splitlines() if line.startswith(name + " "))
        assert said in row, row
    assert [files(sb, h) for h in sb.hosts] == before
    assert all(current(sb, h) == "releases/2" and leftovers(sb, h) == [] for h in sb.hosts)
    commit_change(app_repo, "app.py", "VERSION = 3\n")
    proc = cli(sb, "deploy")
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- 13. unsafe tarballs -----------------------------------------------------------------------


def test_unsafe_tarballs_rejected_before_upload(sandbox, tmp_path):
    sb = sandbox(2)
    evil = {
        "dotdot": [tar_member("../x", b"x")],
        "absolute": [tar_member("/etc/x", b"x")],
        "symlink-escape": [
            tar_member("a", type=tarfile.SYMTYPE, linkname="/etc"),
            tar_member("a/passwd", b"root::0:0"),
        ],
        "hardlink-outside": [tar_member("h", type=tarfile.LNKTYPE, linkname="../../etc/passwd")],
        "device": [tar_member("dev", type=tarfile.CHRTYPE, devmajor=1, devminor=3)],
        "setuid": [tar_member("suid", b"#!/bin/sh\n", mode=0o4755)],
    }
    counts = [sb.command_count(h) for h in sb.hosts]
    for name, members in evil.items():
        path = write_tar_gz(tmp_path / f"evil-{name}.tar.gz", [tar_member("REVISION", b"x\n"), *members])
        proc = cli(sb, "deploy", "--artifact", str(path))
        assert proc.returncode == 2, (name, proc.stdout, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and "unsafe member" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    # with a matching .json beside it the members are still checked
    path = tmp_path / "evil-symlink-escape.tar.gz"
    data = path.read_bytes()
    path.with_suffix("").with_suffix(".json").write_text(
        json.dumps({"name": "evil", "version": "1", "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
    )
    proc = cli(sb, "deploy", "--artifact", str(path))
    assert proc.returncode == 2 and "unsafe member 'a'" in proc.stderr, proc.stderr
    assert [sb.command_count(h) for h in sb.hosts] == counts  # no host was even contacted
    for h in sb.hosts:
        assert sb.exec(h, "ls -A /srv")[1].strip() == ""
    assert cli(sb, "deploy").returncode == 0


# --- 14. hostile values in config and metadata --------------------------------------------------


def test_hostile_config_values_are_never_executed(sandbox, tmp_path):
    pwn = f"/tmp/pwn-{secrets.token_hex(4)}"
    payloads = [f"; touch {pwn}", f"$(touch {pwn})", f"`touch {pwn}`", f"' ; touch {pwn} ; '", f'" ; touch {pwn}"']
    deploy_to = "/srv/a b" + "".join(payloads)
    shared = [f"log{p}" for p in payloads] + [f"line\nbreak; touch {pwn}"]
    sb = sandbox(2, app={"deploy_to": deploy_to, "shared_dirs": shared})
    artifact = built_artifact(sb)
    edit_config(sb, lambda doc: doc["app"].update(name=f"app$(touch {pwn})"))
    refused = cli(sb, "deploy", "--artifact", str(artifact))  # an app name names files and a unit
    assert refused.returncode == 2 and "app.name" in refused.stderr, refused.stderr
    edit_config(sb, lambda doc: doc["app"].update(name="app.x_y-z"))
    meta = json.loads(artifact.with_suffix("").with_suffix(".json").read_text())
    meta["version"] = f"v1\n$(touch {pwn})`touch {pwn}`; touch {pwn}"
    artifact.with_suffix("").with_suffix(".json").write_text(json.dumps(meta))

    proc = cli(sb, "deploy", "--artifact", str(artifact))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert cli(sb, "status").returncode == 0 and cli(sb, "releases").returncode == 0
    proc = cli(sb, "deploy", "--artifact", str(artifact))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert cli(sb, "rollback").returncode == 0
    assert cli(sb, "cleanup").returncode == 0
    assert cli(sb, "unlock", "--yes").returncode == 0
    for h in sb.hosts:
        code, out = sb.exec(h, f"test -e {pwn} || test -e /tmp/pwn; echo $?")
        assert out.strip() == "1", f"{pwn} appeared on {h.name}"
        # the odd paths exist literally
        quoted = "'" + deploy_to.replace("'", "'\\''") + "'"
        code, out = sb.exec(h, f"readlink {quoted}/current")
        assert out.strip() == "releases/1", out
        code, out = sb.exec(h, f"ls -Ab {quoted}/shared | wc -l")
        assert int(out) == len(shared)
    # newlines in deploy_to are refused as bad input, before any host is contacted
    edit_config(sb, lambda doc: doc["app"].update(deploy_to=f"/srv/x\n$(touch {pwn})"))
    proc = cli(sb, "deploy", "--artifact", str(artifact))
    assert proc.returncode == 2 and "newline" in proc.stderr
    assert not os.path.exists(pwn)


# --- 15. unknown or changed host key -----------------------------------------------------------


def _fp(key_line: str) -> str:
    blob = base64.b64decode(key_line.split()[2])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def test_unknown_or_changed_host_key_refused(sandbox):
    sb = sandbox(2)
    full = sb.known_hosts_path.read_text()
    # unknown: host-2's key is not pinned (strict policy)
    sb.known_hosts_path.write_text(full.splitlines()[0] + "\n")
    pinned = sb.known_hosts_path.read_text()
    proc = cli(sb, "deploy")
    assert proc.returncode == 1
    assert "host-2" in proc.stderr and "unknown host key" in proc.stdout
    assert _fp(sandbox_mod.host_key_line(sb.hosts[1])) in proc.stdout
    assert sb.known_hosts_path.read_text() == pinned
    assert sb.exec(1, "ls -A /srv")[1].strip() == ""
    assert release_dirs(sb, 0) == [] and leftovers(sb, 0) == []

    # changed: refused even under accept-new, both fingerprints shown
    sb.known_hosts_path.write_text(full)
    edit_config(sb, lambda doc: doc["ssh"].update(host_key_policy="accept-new"))
    old = sandbox_mod.host_key_line(sb.hosts[0])
    new = sandbox_mod.regenerate_host_key(sb.hosts[0])
    proc = cli(sb, "deploy")
    assert proc.returncode == 1
    assert "host key CHANGED" in proc.stdout + proc.stderr
    assert _fp(old) in proc.stdout and _fp(new) in proc.stdout
    assert sb.known_hosts_path.read_text() == full
    assert all(release_dirs(sb, h) == [] for h in sb.hosts)
    # once known_hosts is fixed by a person, the deploy works
    sandbox_mod.write_known_hosts(sb.known_hosts_path, sb.hosts)
    assert cli(sb, "deploy").returncode == 0


# --- 16. sudo wants a password, no TTY ---------------------------------------------------------


def test_sudo_password_prompt_fails_fast_without_tty(sandbox):
    sb = sandbox(1)
    conn = host_conn(sb, 0, user="needpw")
    try:
        for cmd in ("sudo -n true", "sudo true", "sudo -S true"):
            started = time.monotonic()
            result = conn.run(cmd, timeout=30)
            took = time.monotonic() - started
            assert took < 10 and result.exit_code != 0, (cmd, result)
            said = result.tail().lower()
            assert "password" in said and ("required" in said or "no password" in said), said
            assert image_mod.NEEDPW_PASSWORD not in result.stdout + result.stderr
    finally:
        conn.close()


# --- 17. hung and flooding remote commands -----------------------------------------------------


def test_hung_command_times_out_and_its_process_group_is_killed(sandbox):
    sb = sandbox(1)
    conn = host_conn(sb)
    try:
        started = time.monotonic()
        with pytest.raises(TransportError, match="timed out after 2s"):
            conn.run("sleep 1000 & sleep 1001; echo never", timeout=2)
        assert time.monotonic() - started < 8
        assert conn.run("true").ok  # the connection is still usable
    finally:
        conn.close()
    gone = wait_until(
        lambda: sb.exec(0, "pgrep -f 'sleep 100[01]' || echo none")[1].strip() == "none",
        5,
        "the remote sleeps to be killed",
    )
    assert gone

    # the same on cancel (Ctrl-C in a deploy sets it)
    conn = host_conn(sb)
    cancel = threading.Event()
    threading.Timer(1, cancel.set).start()
    try:
        started = time.monotonic()
        with pytest.raises(Cancelled):
            conn.run("sleep 1002", cancel=cancel)
        assert time.monotonic() - started < 5
    finally:
        conn.close()
    assert wait_until(
        lambda: sb.exec(0, "pgrep -f 'sleep 100[2]' || echo none")[1].strip() == "none",
        5,
        "the cancelled sleep to be killed",
    )


def test_flood_on_stdout_and_stderr_does_not_deadlock(sandbox):
    """10 MB on each of stdout and stderr, written before the command reads its 8 MB of stdin."""
    sb = sandbox(1)
    conn = host_conn(sb)
    stdin = io.BytesIO(os.urandom(8 << 20))
    tracemalloc.start()
    try:
        started = time.monotonic()
        result = conn.run(
            "head -c 10485760 /dev/zero | tr '\\0' o; head -c 10485760 /dev/zero | tr '\\0' e >&2; wc -c",
            stdin=stdin,
            timeout=120,
        )
        took = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        conn.close()
    assert result.ok and took < 60
    assert result.stdout.endswith(f"{8 << 20}\n")  # every stdin byte arrived
    assert set(result.stderr) == {"e"}  # the pgid marker is not in the output
    assert len(result.stdout) <= 2 * 64 * 1024 and len(result.stderr) <= 2 * 64 * 1024
    assert peak < 8 << 20, f"peak {peak / 1e6:.1f} MB"  # bounded: far below the 20 MB received


# --- the abort meets this run's own prepare still running (its link dropped) ---------------------


def test_abort_while_this_runs_prepare_still_extracts_leaves_no_release(sandbox, tmp_path):
    """A dropped link leaves the prepare running on the host while the deployer aborts over a new
    connection. The abort must win: no releases/N (not even a half-removed tree marked complete),
    no temp dir, no lock, and the prepare itself stops without renaming anything."""
    sb = sandbox(1)
    paths, token = Paths(D), "run1"
    members = [tar_member(f"d{i % 40}/f{i}.txt", os.urandom(512)) for i in range(20000)]
    artifact = write_tar_gz(tmp_path / "many.tar.gz", members)
    sha = hashlib.sha256(artifact.read_bytes()).hexdigest()
    first, second = host_conn(sb, 0), host_conn(sb, 0)
    try:
        took = first.run(remote_lock.inspect(paths, lock_info="{}", lock_token=token))
        assert took.ok and lock_info(sb, 0) is not None, took.tail()
        outcome: list = []

        def prepare() -> None:
            script = remote_lock.lease(paths, token) + commands.prepare(
                paths, 1, token, sha, upload=True, release_json="{}"
            )
            with artifact.open("rb") as stdin:
                outcome.append(first.run(script, stdin=stdin, timeout=120))

        worker = threading.Thread(target=prepare, daemon=True)
        worker.start()
        tmp = f"{D}/releases/.tmp-1-{token}"
        wait_until(
            lambda: (
                int(sb.exec(0, f"find {tmp} -type f 2>/dev/null | wc -l")[1].split()[0]) > 500 or not worker.is_alive()
            ),
            60,
            "tar to be extracting",
            0.02,
        )
        assert worker.is_alive(), "the prepare ended before the abort: the race was not opened"
        aborted = second.run(remote_lock.lease(paths, token) + commands.abort(paths, 1, token))
        worker.join(timeout=120)
    finally:
        first.close()
        second.close()
    assert aborted.ok, aborted.tail()
    assert outcome and not outcome[0].ok, "the prepare went on to the end after the abort"
    assert release_dirs(sb, 0) == [] and leftovers(sb, 0) == []
    assert sb.exec(0, f"ls -A {D}/releases")[1].strip() == ""

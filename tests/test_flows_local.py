"""The flows in-process, without Docker: deploy, rollback, the put-back of hosts whose answer was
lost, the lease's fencing and the finish, against hosts that are directories on this machine
(deployer/ssh/local.py runs each rendered script in a real `sh` there), with faults planned at the
command a step sends. The container tests stay for what needs a real sshd."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from helpers import commit_change, git

from deployer.artifact.build import build_artifact
from deployer.config import load as config_mod
from deployer.engine.deploy import deploy
from deployer.engine.rollback import rollback
from deployer.errors import RunFailed
from deployer.plan.options import Options
from deployer.remote import render
from deployer.report.output import Output
from deployer.ssh import transport_for
from deployer.ssh.local import GONE, LOST, SIGNAL, Fault, LocalHost, serving
from deployer.ssh.types import Cancelled, TransportError

DEPLOY_TO = "/srv/app"
SWITCH = render.text("switch.sh")  # in a deploy's switch, a rollback's and a put-back's
FINISH = render.text("finish.sh")
PREPARE = render.text("prepare_shared.sh")
VERIFY = "verify-marker"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """Two builds of a small app: v1 and v2."""
    repo = tmp_path_factory.mktemp("repo")
    (repo / "app.py").write_text("VERSION = 1\n")
    (repo / "bin").mkdir()
    (repo / "bin" / "run").write_text("#!/bin/sh\necho running\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "v1")
    out = tmp_path_factory.mktemp("artifacts")
    first = build_artifact(repo, "sample", out, log=lambda _: None)
    commit_change(repo, "app.py", "VERSION = 2\n")
    second = build_artifact(repo, "sample", out, log=lambda _: None)
    return first, second


@pytest.fixture
def sigint():
    """Ctrl-C as a terminal leaves it (a background shell may have it ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


class Fleet:
    """n local hosts and the stage that names them (host-1 has the migrate role); `config` adds
    TOML tables. Output is kept in `printed`."""

    def __init__(self, tmp_path: Path, n: int, config: str = ""):
        tag = uuid.uuid4().hex[:8]
        self.hosts = [LocalHost(f"{tag}-host-{i}", tmp_path / f"host-{i}", DEPLOY_TO) for i in range(1, n + 1)]
        roles = ['["migrate"]'] + ["[]"] * n
        listed = ", ".join(
            f'{{host = "{h.address}", name = "host-{i}", roles = {roles[i - 1]}}}' for i, h in enumerate(self.hosts, 1)
        )
        (tmp_path / "known_hosts").write_text("")
        text = (
            f'[app]\nname = "sample"\ndeploy_to = "{DEPLOY_TO}"\n'
            f'[ssh]\nknown_hosts = "{tmp_path / "known_hosts"}"\n'
            f"{config}\n"
            f"[stages.prod]\nhosts = [{listed}]\n"
        )
        self.config_dir = tmp_path
        self.stage = config_mod.parse(text, tmp_path / "hosts.toml").stage("prod")
        self.printed = io.StringIO()
        self.out = Output(stream=self.printed, live=False)

    def __getitem__(self, i: int) -> LocalHost:
        return self.hosts[i]

    def deploy(self, artifact, **options):
        return deploy(self.stage, self.stage.hosts, artifact, self.out, Options(**options), self.config_dir)

    def rollback(self, **kw):
        return rollback(self.stage, self.stage.hosts, self.out, config_dir=self.config_dir, **kw)

    def failed(self, call, *args, **kw) -> RunFailed:
        with pytest.raises(RunFailed) as caught:
            call(*args, **kw)
        return caught.value


def current(h: LocalHost) -> str:
    link = h.deploy_dir / "current"
    return os.readlink(link) if link.is_symlink() else ""


def releases(h: LocalHost) -> list[str]:
    where = h.deploy_dir / "releases"
    return sorted(os.listdir(where), key=lambda n: (len(n), n)) if where.is_dir() else []


def ledger(h: LocalHost) -> list[dict]:
    path = h.deploy_dir / ".deployer" / "ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def locked(h: LocalHost) -> bool:
    return (h.deploy_dir / ".deployer" / "lock").exists()


def leftovers(h: LocalHost) -> list[str]:
    """Temp releases, partial uploads, temp links: what an undone run must not leave."""
    names = [*os.listdir(h.deploy_dir), *releases(h)]
    cache = h.deploy_dir / ".deployer" / "cache"
    names += os.listdir(cache) if cache.is_dir() else []
    return sorted(n for n in names if n.startswith((".tmp-", ".part-", ".current-")))


def files(h: LocalHost) -> list[tuple[str, str | bool, float]]:
    """Every path under deploy_to, with its link target and mtime: a change to any shows."""
    return sorted(
        (str(p.relative_to(h.deploy_dir)), p.is_symlink() and os.readlink(p), p.lstat().st_mtime)
        for p in h.deploy_dir.rglob("*")
    )


# --- a deploy, a second one, a rollback ------------------------------------------------------------


def test_a_deploy_to_three_hosts_then_a_second_and_a_rollback(tmp_path, artifacts):
    fleet = Fleet(tmp_path, 3)
    first, second = artifacts
    with serving(fleet.hosts):
        runs = fleet.deploy(first)
        assert [(r.name, r.result, r.release) for r in runs] == [(f"host-{i}", "ok", 1) for i in (1, 2, 3)]
        for h in fleet.hosts:
            assert current(h) == "releases/1" and releases(h) == ["1"]
            assert (h.deploy_dir / "current" / "app.py").read_text() == "VERSION = 1\n"
            assert not locked(h) and leftovers(h) == []
            assert [(e["action"], e["result"], e["release"]) for e in ledger(h)] == [("deploy", "ok", 1)]

        fleet.deploy(second)
        for h in fleet.hosts:
            assert current(h) == "releases/2" and releases(h) == ["1", "2"]
            assert (h.deploy_dir / "current" / "app.py").read_text() == "VERSION = 2\n"

        runs = fleet.rollback()
        assert [r.result for r in runs] == ["ok"] * 3
        for h in fleet.hosts:
            assert current(h) == "releases/1" and not locked(h)
            assert [(e["action"], e["release"]) for e in ledger(h)][-1] == ("rollback", 1)


# --- after the switch: a failed health check, an answer lost ---------------------------------------


def test_a_failed_verify_puts_every_switched_host_back_and_marks_the_release_bad(tmp_path, artifacts):
    verify = f'test "$DEPLOY_RELEASE" != 2 || test "$DEPLOY_HOST" != host-3 || {{ echo {VERIFY} >&2; exit 3; }}'
    fleet = Fleet(tmp_path, 3, f"[verify]\ncommand = '{verify}'\n")
    with serving(fleet.hosts):
        fleet.deploy(artifacts[0])
        failed = fleet.failed(fleet.deploy, artifacts[1])
    assert failed.exit_code == 1 and "rolled back: verify: health check failed on host-3" in str(failed), failed
    assert VERIFY in str(failed) and "release marked bad" in str(failed)
    assert {r.name: r.result for r in failed.runs} == {f"host-{i}": "restored" for i in (1, 2, 3)}
    for h in fleet.hosts:
        assert current(h) == "releases/1" and not locked(h) and leftovers(h) == [], h.name
        assert (h.deploy_dir / "releases" / "2" / ".deployer" / "bad").exists(), h.name
        assert [(e["action"], e["result"]) for e in ledger(h)] == [("deploy", "ok"), ("deploy", "rolled back")]


@pytest.mark.parametrize("after", [True, False], ids=["answer-lost", "lost-before-the-rename"])
def test_a_switch_whose_answer_is_lost_is_put_back_only_where_it_happened(tmp_path, artifacts, after):
    """host-2's switch: the connection drops after current was renamed (the answer lost), or
    before the command ran. host-1 and host-3 switched: all are put back where current points at
    the new release, and only there (a conditional switch, only_from): host-2 whose switch never
    ran is left as it is, not counted as put back."""
    fleet = Fleet(tmp_path, 3)
    with serving(fleet.hosts):
        fleet.deploy(artifacts[0])
        fleet[1].faults.append(Fault(SWITCH, LOST, after=after))
        failed = fleet.failed(fleet.deploy, artifacts[1])
    assert failed.exit_code == 1 and "rolled back: switch failed on host-2" in str(failed), failed
    said = fleet.printed.getvalue()
    results = {r.name: r.result for r in failed.runs}
    put_back = ["host-1", "host-2", "host-3"] if after else ["host-1", "host-3"]
    assert sorted(name for name, result in results.items() if result == "restored") == put_back, results
    for name in ("host-1", "host-2", "host-3"):
        assert any(name in line and "current -> 1 again" in line for line in said.splitlines()) == (name in put_back)
    for h in fleet.hosts:
        assert current(h) == "releases/1" and releases(h) == ["1"], h.name
        assert not locked(h) and leftovers(h) == [], h.name


def test_a_rollback_whose_switch_fails_on_a_gone_host_puts_the_others_back(tmp_path, artifacts):
    """Rolling 2 back to 1, host-3 is gone as its switch goes out: host-1 and host-2, switched to
    release 1, are put back on release 2 (the fleet stays on one release); host-3, never reached,
    is named."""
    fleet = Fleet(tmp_path, 3)
    with serving(fleet.hosts):
        fleet.deploy(artifacts[0])
        fleet.deploy(artifacts[1])
        fleet[2].faults.append(Fault(SWITCH, GONE, after=False))
        failed = fleet.failed(fleet.rollback)
    assert "rollback switch failed on host-3; host-3 could not be put back" in str(failed), failed
    assert "every other host is on the release it had" in str(failed)
    said = fleet.printed.getvalue().splitlines()
    assert {r.name: r.result for r in failed.runs} == {"host-1": "restored", "host-2": "restored", "host-3": "failed"}
    for name in ("host-1", "host-2"):  # the same put-back as a deploy's, said the same way
        assert any(name in line and "current -> 2 again" in line for line in said), said
    for h in fleet.hosts:
        assert current(h) == "releases/2" and releases(h) == ["1", "2"], h.name
    for h in fleet.hosts[:2]:
        assert not locked(h), h.name
        assert [(e["action"], e["result"]) for e in ledger(h)][-2:] == [("rollback", "ok"), ("rollback", "failed")]
    assert locked(fleet[2])  # unreachable: its lock waits for lock_ttl or `unlock`


# --- the put-back's restart: deploy and rollback alike -------------------------------------------

RESTARTS = f"{DEPLOY_TO}/restarts"  # on each host: "<release> <previous>" for every restart there
RESTART = f"[restart]\ncommand = 'echo \"$DEPLOY_RELEASE $DEPLOY_PREVIOUS_RELEASE\" >> {RESTARTS}'\n"


def restarts(h: LocalHost) -> list[str]:
    path = h.deploy_dir / "restarts"
    return path.read_text().splitlines() if path.exists() else []


def test_a_signal_during_a_deploys_verify_puts_back_and_restarts_in_the_release_put_back(tmp_path, artifacts, sigint):
    """Ctrl-C as host-2's health check starts: the restart in release 2 went out everywhere, so
    every host goes back to release 1 and is restarted there (DEPLOY_PREVIOUS_RELEASE: the release
    it left), as a rollback's put-back does; exit 130, locks released."""
    fleet = Fleet(tmp_path, 3, RESTART + f"[verify]\ncommand = 'echo {VERIFY}'\n")
    with serving(fleet.hosts):
        fleet.deploy(artifacts[0])
        fleet[1].faults.append(Fault(VERIFY, SIGNAL, after=False))
        failed = fleet.failed(fleet.deploy, artifacts[1])
    said = (str(failed), fleet.printed.getvalue())
    assert failed.exit_code == 130 and "interrupted (Ctrl-C) during host-1 (verify)" in str(failed), said
    for i, h in enumerate(fleet.hosts, 1):
        assert current(h) == "releases/1" and not locked(h) and leftovers(h) == [], (h.name, said)
        assert restarts(h) == ["1 ", "2 1", "1 2"], (h.name, said)
        assert any(f"host-{i} " in line and "ok (release 1, put back)" in line for line in said[1].splitlines()), said


def test_a_signal_during_a_rollbacks_restart_restarts_the_release_put_back(tmp_path, artifacts, sigint):
    """Rolling 2 back to 1, Ctrl-C as host-2's restart in release 1 goes out: every host's restart
    went out, so every host is put back on release 2 and restarted there, its ledger saying so."""
    fleet = Fleet(tmp_path, 3, RESTART)
    with serving(fleet.hosts):
        fleet.deploy(artifacts[0])
        fleet.deploy(artifacts[1])
        fleet[1].faults.append(Fault(RESTARTS, SIGNAL, after=False))
        failed = fleet.failed(fleet.rollback)
    said = (str(failed), fleet.printed.getvalue())
    assert failed.exit_code == 130 and "switched hosts put back" in str(failed), said
    for h in fleet.hosts:
        assert current(h) == "releases/2" and not locked(h), (h.name, said)
        assert restarts(h)[-1] == "2 1", (h.name, restarts(h), said)
        assert [(e["action"], e["result"]) for e in ledger(h)][-2:] == [("rollback", "ok"), ("rollback", "interrupted")]


def test_a_rollbacks_notification_carries_the_fields_a_deploys_does(tmp_path, artifacts):
    notes = tmp_path / "notes"
    fleet = Fleet(tmp_path, 2, f"[notify]\ncommand = 'cat >> {notes}; echo >> {notes}'\n")
    with serving(fleet.hosts):
        fleet.deploy(artifacts[0])
        fleet.deploy(artifacts[1])
        fleet.rollback()
    sent = [json.loads(line) for line in notes.read_text().splitlines() if line.strip()]
    deployed, rolled = sent[-2], sent[-1]
    assert (deployed["action"], deployed["event"], rolled["action"], rolled["event"]) == (
        "deploy",
        "succeeded",
        "rollback",
        "rolled back",
    ), sent
    assert sorted(rolled) == sorted(deployed) and rolled["failed_hosts"] == [] and rolled["release"] == 1, rolled


# --- before the switch: a host gone ----------------------------------------------------------------


def test_a_host_gone_after_prepare_switches_nobody(tmp_path, artifacts):
    """host-2 prepared, then stops answering: the deploy checks every host before the first
    switch, so nobody switches; the others are cleaned up and unlocked, host-2 is named as
    possibly still locked."""
    fleet = Fleet(tmp_path, 3)
    with serving(fleet.hosts):
        fleet.deploy(artifacts[0])
        fleet[1].faults.append(Fault(PREPARE, lambda: setattr(fleet[1], "gone", True)))
        failed = fleet.failed(fleet.deploy, artifacts[1])
    assert "deploy aborted before any switch: host-2 stopped answering after prepare" in str(failed), failed
    assert "locks released except on host-2" in str(failed)
    assert not any(SWITCH in script for h in fleet.hosts for script in h.scripts[-3:])
    for h in fleet.hosts:
        assert current(h) == "releases/1", h.name
    for h in (fleet[0], fleet[2]):
        assert releases(h) == ["1"] and not locked(h) and leftovers(h) == [], h.name
        assert ledger(h)[-1]["result"] == "failed"
    assert locked(fleet[1])  # unreachable: its lock waits for lock_ttl or `unlock`


# --- the lease: a run whose lock was taken over changes nothing ------------------------------------


def test_a_run_whose_lock_was_taken_over_changes_nothing_after(tmp_path, artifacts):
    """Deploy A stalls after its migration (its lease not renewed for lock_ttl: the heartbeat is
    made an hour old); deploy B takes every lock over, says so, records it and deploys. A then
    reaches its switch: every host refuses it (the fencing token), A says it lost the lock and
    changes nothing there, not even a ledger line."""
    fleet = Fleet(tmp_path, 3, '[migrate]\ncommand = "echo migrated"\n')
    after: dict[str, tuple] = {}

    def other_run() -> None:
        for h in fleet.hosts:
            beat = h.deploy_dir / ".deployer" / "lock" / "beat"
            os.utime(beat, (time.time() - 3600, time.time() - 3600))
        printed = io.StringIO()
        deploy(fleet.stage, fleet.stage.hosts, artifacts[0], Output(stream=printed, live=False))
        took = printed.getvalue()
        assert took.count("took over a stale lock") == 3, took
        after.update({h.name: (files(h), ledger(h)) for h in fleet.hosts})

    with serving(fleet.hosts):
        fleet.deploy(artifacts[0])
        fleet[0].faults.append(Fault(render.text("migrate.sh"), other_run))
        failed = fleet.failed(fleet.deploy, artifacts[1])
    assert "this run lost the lock on host-1, host-2, host-3" in str(failed), failed
    assert len(after) == 3
    for h in fleet.hosts:
        assert (files(h), ledger(h)) == after[h.name], h.name  # nothing changed, not even a record
        assert current(h) == "releases/3" and not locked(h), h.name
        assert [e["action"] for e in ledger(h)] == ["deploy", "takeover", "deploy"], h.name


# --- a signal during the finish --------------------------------------------------------------------


def test_a_signal_during_the_finish_keeps_the_release_live_everywhere(tmp_path, artifacts, sigint):
    """Ctrl-C as host-2's finish starts, the release switched and checked on every host: it stays
    live on all three (never a mixed fleet), every lock is released, each host records the deploy
    once, and the run exits 130 saying so."""
    fleet = Fleet(tmp_path, 3)
    with serving(fleet.hosts):
        fleet.deploy(artifacts[0])
        fleet[1].faults.append(Fault(FINISH, SIGNAL, after=False))
        failed = fleet.failed(fleet.deploy, artifacts[1])
    said = (str(failed), fleet.printed.getvalue())
    assert failed.exit_code == 130, said
    assert "interrupted (Ctrl-C) during finish: release 2 is live on every host" in str(failed), said
    for h in fleet.hosts:
        assert current(h) == "releases/2" and not locked(h) and leftovers(h) == [], (h.name, said)
        deploys = [(e["result"], e["release"]) for e in ledger(h) if e["action"] == "deploy"]
        assert deploys == [("ok", 1), ("ok", 2)], (h.name, ledger(h), said)


# --- the transport itself --------------------------------------------------------------------------


@pytest.fixture
def one_host(tmp_path):
    """One served local host and its open transport."""
    fleet = Fleet(tmp_path, 1)
    with serving(fleet.hosts):
        yield fleet[0], transport_for(fleet.stage.hosts[0]).open()


def gone(pid_file: Path) -> bool:
    """The process whose pid the file holds is dead (killed with its group): no longer there, or
    a zombie its new parent has not reaped yet.
    A kill is delivered asynchronously, so this asks again for up to 5 s before saying no."""
    deadline = time.monotonic() + 5
    while True:
        ps = subprocess.run(["ps", "-o", "stat=", "-p", pid_file.read_text().strip()], capture_output=True, text=True)
        if ps.stdout.strip() in ("", "Z") or ps.stdout.strip().startswith("Z"):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def test_a_script_runs_in_sh_with_stdin_streamed_and_deploy_to_mapped_both_ways(one_host):
    host, conn = one_host
    seen: list[int] = []
    data = b"x" * (3 * 256 * 1024 + 5)
    result = conn.run(
        f"cat > {DEPLOY_TO}/got; wc -c < {DEPLOY_TO}/got; echo {DEPLOY_TO}/a {DEPLOY_TO}x >&2; exit 3",
        stdin=io.BytesIO(data),
        progress=seen.append,
    )
    assert result.exit_code == 3 and result.stdout.strip() == str(len(data))
    assert result.stderr.strip() == f"{DEPLOY_TO}/a {DEPLOY_TO}x"  # the host's own path never shows
    assert (host.deploy_dir / "got").read_bytes() == data and seen[-1] == len(data)
    assert host.scripts[-1].startswith("cat > /srv/app/got")


def test_output_keeps_its_tail_and_counts_what_it_left_out_or_refuses_it_whole(one_host):
    from deployer.ssh.runloop import OUTPUT_TAIL

    _, conn = one_host
    flood = "head -c 300000 /dev/zero | tr '\\0' o; head -c 200000 /dev/zero | tr '\\0' e >&2"
    result = conn.run(flood)
    assert result.stdout == "o" * OUTPUT_TAIL and result.stdout_cut == 300000 - OUTPUT_TAIL
    assert result.stderr == "e" * OUTPUT_TAIL and result.stderr_cut == 200000 - OUTPUT_TAIL
    assert conn.run("printf abc", max_output=3).stdout == "abc"
    with pytest.raises(TransportError, match="output over 3 bytes refused"):
        conn.run("printf abcd", max_output=3)


def test_a_timeout_or_a_cancel_kills_the_whole_process_group(one_host, tmp_path):
    host, conn = one_host
    child = tmp_path / "child.pid"
    started = f"sleep 60 & echo $! > {child}; wait"
    with pytest.raises(TransportError, match="timed out after 0.5s"):
        conn.run(started, timeout=0.5)
    assert gone(child)
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    with pytest.raises(Cancelled):
        conn.run(started, cancel=cancel)
    assert gone(child) and conn.alive


def test_planned_faults_strike_once_and_a_host_nobody_serves_cannot_be_reached(tmp_path):
    fleet = Fleet(tmp_path, 1)
    host, settings = fleet[0], fleet.stage.hosts[0]
    host.faults += [Fault("one", LOST), Fault("two", LOST, after=False), Fault("three", GONE, after=False)]
    with serving(fleet.hosts):
        conn = transport_for(settings).open()
        with pytest.raises(TransportError):
            conn.run(f"touch {DEPLOY_TO}/one")
        assert (host.deploy_dir / "one").exists() and not conn.alive  # ran; its answer lost
        conn = transport_for(settings).open()
        assert conn.run(f"touch {DEPLOY_TO}/one").ok  # once only
        with pytest.raises(TransportError):
            conn.run(f"touch {DEPLOY_TO}/two")
        assert not (host.deploy_dir / "two").exists()
        conn = transport_for(settings).open()
        with pytest.raises(TransportError):
            conn.run("echo three")
        assert not conn.ping()
        with pytest.raises(TransportError, match="no local host answers"):
            transport_for(settings).open()
    with pytest.raises(TransportError, match="no local host answers"):
        transport_for(settings).open()

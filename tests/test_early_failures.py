"""Every failure after the lock is taken and before the first switch releases the lock on every
host and leaves no partial release, with its own exit code and one line; a Python hook failing
after the switch puts the switched hosts back (or, once every host switched and checked, keeps the
release live) and releases every lock too (real hosts)."""

from __future__ import annotations

import json

import pytest
import toml
from helpers import cli, commit_change, current, release_dirs, status

D = "/srv/app"

PY_HOOK = """
import os

from deployer.errors import ConfigError

def refuse(ctx):
    raise ConfigError("warm-up settings are wrong")




def refuse_the_second(ctx):  # a rolling deploy's second batch
    if os.path.exists("called-once"):
        refuse(ctx)
    open("called-once", "w").close()


def bug(ctx):  # a bug in the deployer: its report of the hook's error breaks (a TypeError, no DeployerError)
    import deployer.engine.hooks

    deployer.engine.hooks._said = None
    raise ValueError("the hook's own error")


def leave(ctx):
    import sys

    sys.exit(3)
"""
BROKEN_HOOK = 'raise RuntimeError("broken at import")\n'  # a hook module that cannot be imported

# name: (config added for the failing deploy, root shell command on host-2 before it, exit code, said)
CASES = {
    "release numbers used up": ({}, f"install -d -o deploy {D}/releases/1000000000", 1, "release numbers are used up"),
    "current broken on the second host": (
        {},
        f"rm {D}/current && mkdir {D}/current",
        1,
        "deploy failed before any change: host-2: current is a real directory, not a symlink",
    ),
    "before_prepare hook": ({"hooks": {"before_prepare": [{"command": "exit 7"}]}}, "", 1, "before_prepare"),
    "prepare": ({}, f"chmod 555 {D}/releases", 1, "failed to prepare"),
    "after_prepare hook": ({"hooks": {"after_prepare": [{"command": "exit 7"}]}}, "", 1, "after_prepare"),
    "migrate": ({"migrate": {"command": "echo boom >&2; exit 9"}}, "", 1, "migrate"),
    "smoke": ({"smoke": {"command": 'test "$DEPLOY_HOST" != host-2'}}, "", 1, "smoke"),
    "before_switch hook": ({"hooks": {"before_switch": [{"command": "exit 4"}]}}, "", 1, "before_switch"),
    "python hook's own error": ({"hooks": {"after_prepare": [{"python": "early_hook:refuse"}]}}, "", 2, "warm-up"),
    "python hook calls sys.exit": (
        {"hooks": {"after_prepare": [{"python": "early_hook:leave"}]}},
        "",
        1,
        "(early_hook:leave) called sys.exit(3)",
    ),
    "python hook's module fails at import": (
        {"hooks": {"after_prepare": [{"python": "broken_hook:any"}]}},
        "",
        1,
        "cannot load broken_hook:any: RuntimeError: broken at import",
    ),
}


def lock_on(sb, host) -> bool:
    code, _ = sb.exec(host, f"test -e {D}/.deployer/lock")
    return code == 0


@pytest.mark.parametrize("case", list(CASES))
def test_a_failure_before_the_first_switch_releases_every_lock(sandbox, app_repo, case):
    extra, on_host_2, code, said = CASES[case]
    sb = sandbox(2)
    (sb.config_path.parent / "early_hook.py").write_text(PY_HOOK)  # importable: the CLI runs in that directory
    (sb.config_path.parent / "broken_hook.py").write_text(BROKEN_HOOK)
    assert cli(sb, "deploy").returncode == 0
    doc = toml.loads(sb.config_path.read_text())
    doc.update(extra)
    sb.config_path.write_text(toml.dumps(doc))
    if on_host_2:
        assert sb.exec(sb.hosts[1], on_host_2)[0] == 0
    before = [(release_dirs(sb, h), current(sb, h)) for h in sb.hosts]
    commit_change(app_repo, "n.txt", case)

    proc = cli(sb, "deploy")
    assert [lock_on(sb, h) for h in sb.hosts] == [False, False], proc.stderr
    assert proc.returncode == code, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and said in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert "locks released" in lines[0] and "no host switched" in lines[0] or case.startswith("current"), lines[0]
    assert [(release_dirs(sb, h), current(sb, h)) for h in sb.hosts] == before  # no partial release left
    sb.exec(sb.hosts[1], f"chmod 755 {D}/releases")
    assert [r["lock"] for r in json.loads(cli(sb, "status", "--json").stdout)["hosts"]] == [None, None]
    assert [r["lock"] for r in status(sb)] == [None, None]


LINK_SECRET = "s3cret-T0KEN-in-a-link"


def test_a_broken_current_is_named_with_its_reason_in_one_escaped_masked_line(sandbox, app_repo, monkeypatch):
    """host-2's current is a dangling link whose target holds an escape sequence and the stage's
    secret: the one error line says why (as the table does), the escape shown as text, the secret
    masked; nothing changed, no lock left."""
    monkeypatch.setenv("TEST_LINK_SECRET", LINK_SECRET)
    sb = sandbox(2)
    doc = toml.loads(sb.config_path.read_text())
    doc["env"] = {"API_KEY": {"secret": "env:TEST_LINK_SECRET"}}
    sb.config_path.write_text(toml.dumps(doc))
    assert cli(sb, "deploy").returncode == 0
    assert sb.exec(sb.hosts[1], f"ln -sfn \"$(printf '/gone/\\033[31m{LINK_SECRET}')\" {D}/current")[0] == 0
    commit_change(app_repo, "n.txt", "2")

    proc = cli(sb, "deploy")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    said = "deploy failed before any change: host-2: current is a dangling link (-> /gone/\\x1b[31m"
    assert len(lines) == 1 and said in lines[0], proc.stderr
    assert LINK_SECRET not in proc.stdout + proc.stderr and "\x1b" not in proc.stdout + proc.stderr
    assert [lock_on(sb, h) for h in sb.hosts] == [False, False]
    assert current(sb, sb.hosts[0]) == "releases/1"


RESTARTS = "/tmp/restarts"  # on each host: the release each restart ran in, one a line

ROLLED_BACK = [("deploy", "rolled back", None)]
FINISHED_APART = [("deploy", "ok", 2), ("cleanup", "failed", 2)]
ROLLING = ("--strategy", "rolling", "--batch", "1")

# name: (hook point, hook function, deploy options, exit code, release live after it, last ledger lines)
LATE = {
    "after_switch": ("after_switch", "refuse", (), 2, "1", ROLLED_BACK),
    "before_verify": ("before_verify", "refuse", (), 2, "1", ROLLED_BACK),
    "second batch's before_switch": ("before_switch", "refuse_the_second", ROLLING, 2, "1", ROLLED_BACK),
    "before_finish": ("before_finish", "refuse", (), 2, "2", FINISHED_APART),
    "a bug after the switch": ("after_switch", "bug", (), 1, "1", [("deploy", "failed", 2)]),
    "a bug in the finish": ("before_finish", "bug", (), 1, "2", FINISHED_APART),
}


def ledger(sb, host) -> list[dict]:
    code, out = sb.exec(host, f"cat {D}/.deployer/ledger.jsonl 2>/dev/null")
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.mark.parametrize("case", list(LATE))
def test_a_python_hook_failing_after_the_switch_releases_every_lock(sandbox, app_repo, case):
    """A Python hook raising its own error after the switch: every switched host goes back and its
    old release is restarted, as for a failed health check, with the error's exit code and one
    line; in before_finish (every host switched and checked) the release stays live, recorded as
    deployed, the finish's failure apart. An unexpected exception (a bug) puts back and releases
    every lock before its traceback."""
    point, function, options, code, live, last = LATE[case]
    restart = {"command": f'echo "$DEPLOY_RELEASE" >> {RESTARTS}'}
    sb = sandbox(2, verify={"command": "true"}, restart=restart)
    (sb.config_path.parent / "early_hook.py").write_text(PY_HOOK)
    assert cli(sb, "deploy").returncode == 0
    doc = toml.loads(sb.config_path.read_text())
    doc["hooks"] = {point: [{"python": f"early_hook:{function}"}]}
    sb.config_path.write_text(toml.dumps(doc))
    seen = [len(ledger(sb, h)) for h in sb.hosts]
    commit_change(app_repo, "n.txt", case)

    proc = cli(sb, "deploy", *options)
    assert [lock_on(sb, h) for h in sb.hosts] == [False, False], proc.stdout + proc.stderr
    assert proc.returncode == code, proc.stdout + proc.stderr
    if function == "bug":
        assert "Traceback" in proc.stderr and "TypeError" in proc.stderr, proc.stderr
    else:
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and f"{point}: warm-up settings are wrong" in lines[0], proc.stderr
        assert ("rolled back" if live == "1" else "is live everywhere") in lines[0], lines[0]
    for h, before in zip(sb.hosts, seen, strict=True):
        assert current(sb, h) == f"releases/{live}", h.name
        assert sb.exec(h, f"tail -n 1 {RESTARTS}")[1].strip() == live, h.name  # the live release restarted
        lines = [(x["action"], x["result"], x["release"]) for x in ledger(sb, h)[before:]]
        assert lines == last, (h.name, lines)
    assert [r["lock"] for r in status(sb)] == [None, None]

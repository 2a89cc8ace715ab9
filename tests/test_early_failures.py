"""Every failure after the lock is taken and before the first switch releases the lock on every
host and leaves no partial release, with its own exit code and one line (real hosts)."""

from __future__ import annotations

import json

import pytest
import toml
from helpers import cli, commit_change, current, release_dirs, status

D = "/srv/app"

PY_HOOK = """
from deployer.errors import ConfigError

def refuse(ctx):
    raise ConfigError("warm-up settings are wrong")
"""

# name: (config added for the failing deploy, root shell command on host-2 before it, exit code, said)
CASES = {
    "release numbers used up": ({}, f"install -d -o deploy {D}/releases/1000000000", 1, "release numbers are used up"),
    "current broken on the second host": ({}, f"rm {D}/current && mkdir {D}/current", 1, "host-2"),
    "before_prepare hook": ({"hooks": {"before_prepare": [{"command": "exit 7"}]}}, "", 1, "before_prepare"),
    "prepare": ({}, f"chmod 555 {D}/releases", 1, "failed to prepare"),
    "after_prepare hook": ({"hooks": {"after_prepare": [{"command": "exit 7"}]}}, "", 1, "after_prepare"),
    "migrate": ({"migrate": {"command": "echo boom >&2; exit 9"}}, "", 1, "migrate"),
    "smoke": ({"smoke": {"command": 'test "$DEPLOY_HOST" != host-2'}}, "", 1, "smoke"),
    "before_switch hook": ({"hooks": {"before_switch": [{"command": "exit 4"}]}}, "", 1, "before_switch"),
    "python hook's own error": ({"hooks": {"after_prepare": [{"python": "early_hook:refuse"}]}}, "", 2, "warm-up"),
}


def lock_on(sb, host) -> bool:
    code, _ = sb.exec(host, f"test -e {D}/.deployer/lock")
    return code == 0


@pytest.mark.parametrize("case", list(CASES))
def test_a_failure_before_the_first_switch_releases_every_lock(sandbox, app_repo, case):
    extra, on_host_2, code, said = CASES[case]
    sb = sandbox(2)
    (sb.config_path.parent / "early_hook.py").write_text(PY_HOOK)  # importable: the CLI runs in that directory
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

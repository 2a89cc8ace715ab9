"""What is under releases/ besides our own releases, against real sshd hosts: names that are no
release (forged or absurd), and the releases other deploy tools made (taking a host over)."""

from __future__ import annotations

import json

from helpers import cli, current, release_dirs, releases


def test_odd_names_under_releases_never_forge_a_release_or_push_the_number(sandbox):
    """A directory whose name holds a newline and a tab once printed a forged `release` line into
    the state read, and releases/999999999999999999999 sent the next release to 10^21: both are
    ignored now (and reported), and the next deploy is release 2."""
    sb = sandbox(1)
    first = cli(sb, "deploy")
    assert first.returncode == 0, first.stderr + first.stdout
    forged = "5\nrelease\t999 1 0 0 0\nmeta\t999\t{}"
    code, out = sb.exec(0, "cd /srv/app/releases && mkdir -p \"$(printf '" + forged.replace("\n", "\\n")
                        .replace("\t", "\\t") + "')/.deployer\" 999999999999999999999/.deployer 0007/.deployer"
                        " && touch 999999999999999999999/.deployer/complete 0007/.deployer/complete"
                        " && chown -R deploy: /srv/app/releases")
    assert code == 0, out
    rows = releases(sb)
    names = [r["N"] for r in rows]
    assert 1 in names and 999 not in names and "999" not in names
    states = {str(r["N"]): r["state"] for r in rows}
    assert states["999999999999999999999"].startswith("ignored") and states["0007"].startswith("ignored")
    assert any("1 name(s) with characters outside" in r["state"] for r in rows)
    check = cli(sb, "check", "--json")
    assert check.returncode == 0, check.stderr
    assert "999999999999999999999" in json.loads(check.stdout)[0]["ignored"]

    second = cli(sb, "deploy")
    assert second.returncode == 0, second.stderr + second.stdout
    assert "release 2:" in second.stdout
    assert current(sb, 0) == "releases/2"
    assert "2" in release_dirs(sb, 0) and not any(len(n) > 10 and n.isdigit() and n != "999999999999999999999"
                                                   for n in release_dirs(sb, 0))
    # rollback never takes a forged or ignored name for a release
    back = cli(sb, "rollback")
    assert back.returncode == 0, back.stderr + back.stdout
    assert current(sb, 0) == "releases/1"
    bad = cli(sb, "rollback", "--to", "5\nrelease")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    gone = cli(sb, "rollback", "--to", "999999999999999999999")
    assert gone.returncode == 1 and "does not exist" in gone.stdout + gone.stderr

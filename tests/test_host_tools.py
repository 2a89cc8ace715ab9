"""Hosts that are not Debian with GNU tools: a BusyBox userland (Debian's busybox applets linked
first in PATH, as Alpine has them) and hosts without python3. A BusyBox tar, find or readlink
lacks what the deploy's scripts use: `check` and `deploy` refuse before any change, one line
naming each tool and its package. With those three GNU (the packages installed) and BusyBox for
all the rest, and on a host without python3, the whole flow works and leaves the tree a GNU host
has: deploy, delta redeploy, rollback, cleanup, pull from the store."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from helpers import cli, commit_change, current, tar_gz, tar_member

from deployer.plan.host_state import HostState
from deployer.plan.paths import Paths
from deployer.remote import commands
from deployer.remote import lock as remote_lock
from deployer.remote import state as host_state

BUSYBOX = Path("/bin/busybox")  # busybox-static on the machine running the tests (scripts/setup)
# never replaced: the shells (the login shell and `sh -c` stay Debian's) and what a login needs
KEEP = {"sh", "ash", "bash", "su", "login", "passwd", "sulogin", "getty", "init", "linuxrc", "busybox"}
GNU = "/usr/bin"  # where the test's own looks at a host find Debian's tools (PATH may be BusyBox's)


def busybox_userland(sb, host, gnu: tuple[str, ...] = ()) -> list[str]:
    """Every BusyBox applet a Debian command of the same name exists for, linked in /usr/local/bin
    (first in sshd's PATH), but the shells and `gnu`; returns the applets linked."""
    applets = [a for a in _applets() if a not in KEEP and a not in gnu]
    data = BUSYBOX.read_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
    assert sb.container(host).put_archive("/opt", buf.getvalue())
    code, out = sb.exec(
        host,
        "cd /usr/local/bin && for a in " + " ".join(applets) + "; do "
        'if [ -e "/usr/bin/$a" ] || [ -e "/bin/$a" ] || [ -e "/usr/sbin/$a" ]; then '
        'ln -s /opt/busybox "$a" && echo "$a"; fi; done',
    )
    assert code == 0, out
    return out.split()


def over_ssh(sb, command: str) -> dict[str, str]:
    """`deployer run -- command` as the deploy user logs in: each host's output."""
    proc = subprocess.run(
        [sys.executable, "-m", "deployer", "run", "--config", str(sb.config_path), "--", command],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        host, bar, rest = line.partition(" | ")
        if bar:
            seen[host] = seen.get(host, "") + rest + "\n"
    return seen


TOOLS_SEEN = "tar --version | head -n 1; for t in find readlink sha256sum mv tail; do command -v $t; done"


def _applets() -> list[str]:
    return subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout.split()


def hide_python(sb, host) -> None:
    code, out = sb.exec(host, "for p in /usr/bin/python3*; do mv $p $p.hidden; done; ! command -v python3")
    assert code == 0, out


def listing(sb, host, path: str) -> str:
    """Every entry under path but the deployer's own: type, mode, owner, link target; each
    file's size, mtime and sha256 (read with Debian's tools)."""
    code, out = sb.exec(
        host,
        f"cd {path} && {GNU}/find . -path ./.deployer -prune -o -printf '%y %m %u %P -> %l\\n'"
        f" -type f -printf '%s %T@ %P\\n' | LC_ALL=C {GNU}/sort"
        f" && {GNU}/find . -path ./.deployer -prune -o -type f -print0 | LC_ALL=C {GNU}/sort -z"
        f" | {GNU}/xargs -0 {GNU}/sha256sum",
    )
    assert code == 0, out
    return out


def tree(sb, host) -> str:
    code, out = sb.exec(host, f"cd /srv/app && {GNU}/find . -printf '%y %m %P -> %l\\n' | LC_ALL=C {GNU}/sort")
    assert code == 0, out
    return out


BUSYBOX_REFUSAL = (
    "tar is BusyBox's, GNU tar is needed (install the `tar` package); "
    "find is BusyBox's, GNU find (-printf) is needed (install the `findutils` package); "
    "readlink is BusyBox's, GNU readlink (-m) is needed (install the `coreutils` package)"
)


@pytest.mark.slow
def test_a_busybox_host_is_refused_by_check_and_deploy_before_any_change(sandbox, app_repo):
    """BusyBox's tar, find (no -printf: the safety check of the extracted tree would pass
    anything) and readlink (no -m): `check` and `deploy` exit 1 with one line naming each and
    its package, in the command that reads the host (no extra one); nothing changes on the host."""
    sb = sandbox(1)
    h = sb.hosts[0]
    assert cli(sb, "deploy").returncode == 0
    before = tree(sb, h)
    busybox_userland(sb, h)
    seen = over_ssh(sb, TOOLS_SEEN)["host-1"].split()
    assert seen[:2] == ["tar", "(busybox)"] and all(t.startswith("/usr/local/bin/") for t in seen[-5:]), seen

    proc = cli(sb, "check")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"host-1: {BUSYBOX_REFUSAL}" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    proc = cli(sb, "check", "--json")
    (rec,) = json.loads(proc.stdout)["hosts"]
    assert rec["unfit_tools"] == ["tar", "find", "readlink"] and rec["missing_tools"] == []

    commit_change(app_repo, "app.py", "print('v2')\n")
    commands = sb.command_count(h)
    proc = cli(sb, "deploy")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("host-1 "))
    assert row.split()[1:3] == ["failed", "check"] and row.endswith(BUSYBOX_REFUSAL), proc.stdout
    assert "host-1 failed to check" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert sb.command_count(h) - commands <= 2, "the lock's read and its release: no extra command"
    assert tree(sb, h) == before, "no release dir, no lock left, current unchanged"
    assert current(sb, h) == "releases/1"


@pytest.mark.slow
def test_busybox_userland_and_no_python3_run_the_whole_flow_as_a_gnu_host(sandbox, s3_store, app_repo):
    """host-1 stock Debian; host-2 without python3; host-3 BusyBox for every tool but tar, find
    and readlink (as after installing the packages the refusal names), no python3 either (as
    Alpine): deploy, a delta redeploy (the shell builder), rollback, cleanup and a pull deploy
    (curl; BusyBox's tail has no --pid: downloaded whole, then extracted) leave each release the
    same tree as on host-1."""
    sb = sandbox(3, **s3_store.config("host-tools"))
    h1, h2, h3 = sb.hosts
    hide_python(sb, h2)
    linked = busybox_userland(sb, h3, gnu=("tar", "find", "readlink"))
    assert {"sha256sum", "mv", "tail", "cp", "stat", "sort", "xargs", "touch", "awk", "sed"} <= set(linked)
    hide_python(sb, h3)

    def same(number: int) -> None:
        path = f"/srv/app/releases/{number}"
        want = listing(sb, h1, path)
        assert "app.py" in want
        for h in (h2, h3):
            assert listing(sb, h, path) == want, h.name

    (app_repo / "deep" / "er").mkdir(parents=True)
    (app_repo / "deep" / "er" / "x.txt").write_text("x\n")
    (app_repo / "linked.py").symlink_to("app.py")
    commit_change(app_repo, "deep/up", "../app.py\n")
    check = cli(sb, "check", "--json")
    assert check.returncode == 0, check.stdout + check.stderr
    assert [(h["unfit_tools"], h["missing_tools"]) for h in json.loads(check.stdout)["hosts"]] == [([], [])] * 3
    proc = cli(sb, "deploy", env=s3_store.env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    same(1)
    seen = over_ssh(sb, TOOLS_SEEN)
    assert seen["host-1"] == seen["host-2"] and "GNU tar" in seen["host-1"]
    assert seen["host-3"].split("\n")[1:] == [
        "/usr/bin/find",
        "/usr/bin/readlink",
        *(f"/usr/local/bin/{t}" for t in ("sha256sum", "mv", "tail")),
        "",
    ], seen

    (app_repo / "bin" / "tool").write_text("#!/bin/sh\necho tool\n")
    (app_repo / "bin" / "tool").chmod(0o755)
    (app_repo / "deep" / "er" / "x.txt").unlink()
    commit_change(app_repo, "app.py", "print('v2')\n")
    proc = cli(sb, "deploy", env=s3_store.env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("against release 1") == 3, proc.stdout
    same(2)

    proc = cli(sb, "rollback")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(current(sb, h) == "releases/1" for h in sb.hosts)

    for h in sb.hosts:
        code, out = sb.exec(
            h,
            "mkdir -p /srv/app/releases/.tmp-dead/d && touch /srv/app/releases/.tmp-dead/d/f"
            " && chown -R deploy: /srv/app/releases/.tmp-dead",
        )
        assert code == 0, out
    proc = cli(sb, "cleanup")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for h in sb.hosts:
        assert sb.exec(h, "test -e /srv/app/releases/.tmp-dead")[0] != 0, h.name

    commit_change(app_repo, "app.py", "print('v3')\n")
    proc = cli(sb, "deploy", "--transfer", "pull", env=s3_store.env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("fetched from the store, sha256 checked") == 3, proc.stdout
    assert all(current(sb, h) == "releases/3" for h in sb.hosts)
    same(3)

    for h in sb.hosts:
        code, out = sb.exec(h, "cd /srv/app/current && echo changed >> app.py && rm README && echo new > new.txt")
        assert code == 0, out
    proc = cli(sb, "verify", "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    drift = {r["host"]: (r["modified"], r["removed"], r["added"]) for r in json.loads(proc.stdout)["hosts"]}
    assert drift == dict.fromkeys(("host-1", "host-2", "host-3"), (["app.py"], ["README"], ["new.txt"])), drift


# --- the probe in a real sh, without hosts ------------------------------------------------------

FAKE_BSD = {  # what macOS's tools answer to the probe (BSD userland)
    "tar": ("echo 'bsdtar 3.5.3 - libarchive 3.5.3 zlib/1.2.12'", 0),
    "find": ("echo 'find: -printf: unknown primary or operator' >&2", 1),
    "readlink": ("echo 'readlink: illegal option -- m' >&2; echo 'usage: readlink [-fn] [file ...]' >&2", 1),
    "mv": ("echo 'mv: illegal option -- T' >&2; echo 'usage: mv [-f | -i | -n] [-hv] source target' >&2", 64),
}


def probe(tmp_path: Path, tools: dict[str, Path | str]) -> HostState:
    """inspect.sh with TOOLS, run by sh with `tools` (name: a program, or a script's text) first in PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    for name, what in tools.items():
        if isinstance(what, Path):
            (bin_dir / name).symlink_to(what)
        else:
            (bin_dir / name).write_text(f"#!/bin/sh\n{what}\n")
            (bin_dir / name).chmod(0o755)
    paths = Paths(str(tmp_path / "app"))
    script = remote_lock.inspect(paths, free_space=False, tools=True)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LC_ALL": "C"}
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return host_state.parse(proc.stdout)


def test_the_probe_names_busybox_tools_and_bsd_ones_and_passes_gnu(tmp_path):
    gnu = probe(tmp_path / "gnu", {})
    assert gnu.unfit_tools == () and gnu.missing_tools == () and gnu.tools_problem() is None
    busybox = probe(tmp_path / "bb", {t: BUSYBOX for t in ("tar", "find", "readlink", "mv", "sha256sum", "tail")})
    assert busybox.tools_problem() == BUSYBOX_REFUSAL
    bsd = probe(tmp_path / "bsd", {t: f"{text}; exit {code}" for t, (text, code) in FAKE_BSD.items()})
    assert bsd.unfit_tools == (("tar", "other"), ("find", "other"), ("readlink", "other"), ("mv", "other"))
    assert bsd.tools_problem() == (
        "tar is not GNU tar, GNU tar is needed (install the `tar` package); "
        "find is not GNU find (-printf), GNU find (-printf) is needed (install the `findutils` package); "
        "readlink is not GNU readlink (-m), GNU readlink (-m) is needed (install the `coreutils` package); "
        "mv is not GNU mv (-T), GNU mv (-T) is needed (install the `coreutils` package)"
    )


def test_a_missing_tool_is_named_with_its_package_and_not_probed():
    state = host_state.parse("missing_tools\t find sha256sum\nunfit\ttar busybox\nunfit\tbogus busybox\n")
    assert state.tools_problem() == (
        "find is missing (install the `findutils` package); "
        "sha256sum is missing (install the `coreutils` package); "
        "tar is BusyBox's, GNU tar is needed (install the `tar` package)"
    )


@pytest.mark.parametrize("tools", ["gnu", "busybox"])
def test_the_hosts_pass_over_a_new_release_fails_closed_without_gnu_find(tmp_path, tools):
    """prepare's own pass refuses a link leaving the release. With BusyBox's find (no -printf) and
    readlink (no -m) it used to let everything through (find's error lost in the pipe): past the
    probe somehow, it now refuses the release all the same, and nothing is left."""
    payload = tar_gz([tar_member("app.py", b"x"), tar_member("out", type=tarfile.SYMTYPE, linkname="/etc")])
    sha = hashlib.sha256(payload).hexdigest()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if tools == "busybox":
        for name in ("find", "readlink"):
            (bin_dir / name).symlink_to(BUSYBOX)
    paths = Paths(str(tmp_path / "app"))
    script = remote_lock.unleased("") + commands.prepare(paths, 1, "t1", sha, upload=True, release_json="{}")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = subprocess.run(["sh", "-c", script], input=payload, capture_output=True, timeout=30, env=env)
    assert proc.returncode == commands.UNSAFE_TREE, proc.stderr
    why = "could not be checked" if tools == "busybox" else "a link resolving outside the release"
    assert why.encode() in proc.stderr, proc.stderr
    assert list((tmp_path / "app" / "releases").iterdir()) == []

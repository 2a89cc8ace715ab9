"""The ops commands' scripts (remote/ops.py): exact strings, and each run by a real `sh` against a
scratch directory, the way test_commands.py runs the deploy's scripts."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

from deployer.plan.paths import Paths
from deployer.remote import ops, render

ODD = "it's $(echo no) `echo no`"  # a value that runs something if it is not quoted


def sh(script: str, *, stdin: str = "", env: dict[str, str] | None = None, before: str = ""):
    return subprocess.run(
        ["sh", "-c", before + script],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


def test_in_current_exact_string():
    assert ops.in_current(Paths("/srv/my app"), "echo hi", {"DEPLOY_STAGE": "prod"}) == (
        "CURRENT='/srv/my app/current'\nDEPLOY_TO='/srv/my app'\nCOMMAND='echo hi'\n"
        "USER_ENV=DEPLOY_STAGE=prod\nRUN_AS=''\n" + render.text("run_in_current.sh")
    )


def test_in_current_runs_the_command_in_current_with_its_env_and_the_logins_umask(tmp_path):
    """No `umask 022` header: the command keeps the login's umask, as when typed by hand."""
    (tmp_path / "releases" / "1").mkdir(parents=True)
    (tmp_path / "current").symlink_to("releases/1")
    command = 'printf "%s|%s|" "$(pwd -P)" "$DEPLOY_STAGE"; umask'
    done = sh(ops.in_current(Paths(str(tmp_path)), command, {"DEPLOY_STAGE": ODD}), before="umask 077; ")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{tmp_path.resolve()}/releases/1|{ODD}|0077\n"


def test_in_current_without_a_release_says_so_and_exits_1(tmp_path):
    done = sh(ops.in_current(Paths(str(tmp_path / "a b")), "echo ran", {}))
    assert (done.returncode, done.stdout, done.stderr) == (1, "", f"no current release in {tmp_path}/a b\n")


def test_tail_exact_string():
    assert ops.tail(Paths("/srv/app"), "log/a b.log", 5, follow=True) == (
        "SHARED=/srv/app/shared\nDEPLOY_TO=/srv/app\nFILE='log/a b.log'\nLINES=5\nFOLLOW=1\n" + render.text("tail.sh")
    )


def test_tail_reads_a_file_or_every_log_in_a_directory_and_names_what_is_missing(tmp_path):
    logs = tmp_path / "shared" / "log"
    logs.mkdir(parents=True)
    (logs / "a.log").write_text("a1\na2\n")
    (logs / "b.log").write_text("b1\nb2\n")
    (logs / "notes.txt").write_text("never\n")
    paths = Paths(str(tmp_path))
    assert sh(ops.tail(paths, "log/a.log", 1, follow=False)).stdout == "a2\n"
    both = sh(ops.tail(paths, "log", 1, follow=False)).stdout
    assert "a2" in both and "b2" in both and "never" not in both
    missing = sh(ops.tail(paths, "log/gone.log", 1, follow=False))
    assert (missing.returncode, missing.stderr) == (1, "shared/log/gone.log: no such file\n")
    (tmp_path / "shared" / "empty").mkdir()
    empty = sh(ops.tail(paths, "empty", 1, follow=False))
    assert (empty.returncode, empty.stderr) == (1, "no *.log file in shared/empty\n")
    nothing = sh(ops.tail(Paths(str(tmp_path / "none")), "log", 1, follow=False))
    assert (nothing.returncode, nothing.stderr) == (1, f"no shared/ in {tmp_path}/none\n")


def test_maintenance_exact_string():
    assert ops.maintenance(Paths("/srv/app"), False, "page", "tok", '{"a": 1}') == (
        "set -e\nON=''\nSHARED=/srv/app/shared\nPAGE=/srv/app/shared/maintenance.html\n"
        "TMP=/srv/app/shared/.maintenance.html.tok\nCONTENT=page\nSTATE=/srv/app/.deployer\n"
        "LEDGER=/srv/app/.deployer/ledger.jsonl\nLEDGER_LINE='{\"a\": 1}'\n" + render.text("maintenance.sh")
    )


def test_maintenance_on_writes_the_page_off_removes_it_each_recorded(tmp_path):
    paths, page = Paths(str(tmp_path)), tmp_path / "shared" / "maintenance.html"
    on = sh(ops.maintenance(paths, True, ops.page(ODD), "tok", json.dumps({"state": "on", "m": ODD})))
    assert on.returncode == 0, on.stderr
    assert page.read_text() == ops.page(ODD) and stat.S_IMODE(page.stat().st_mode) == 0o644
    assert not (tmp_path / "shared" / ".maintenance.html.tok").exists()
    off = sh(ops.maintenance(paths, False, "", "tok", json.dumps({"state": "off"})))
    assert off.returncode == 0, off.stderr
    assert not page.exists()
    ledger = (tmp_path / ".deployer" / "ledger.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in ledger] == [{"state": "on", "m": ODD}, {"state": "off"}]


def test_maintenance_fails_when_its_ledger_cannot_be_written(tmp_path):
    (tmp_path / ".deployer").write_text("a file where the state directory goes")
    done = sh(ops.maintenance(Paths(str(tmp_path)), False, "", "tok", "{}"))
    assert done.returncode != 0


def test_shell_exact_string():
    assert ops.shell(Paths("/srv/app"), run_as="www data") == (
        "CURRENT=/srv/app/current\nDEPLOY_TO=/srv/app\nRUN_AS='www data'\n" + render.text("shell.sh")
    )


def test_shell_starts_in_current_else_in_deploy_to_saying_so(tmp_path: Path):
    (tmp_path / "releases" / "1").mkdir(parents=True)
    paths = Paths(str(tmp_path))
    env = {"SHELL": "/bin/sh", "ENV": "", "HOME": str(tmp_path)}
    before = sh(ops.shell(paths), stdin="pwd -P\n", env=env)
    assert before.stdout == f"no current release in {tmp_path} yet\n{tmp_path.resolve()}\n", before.stderr
    (tmp_path / "current").symlink_to("releases/1")
    after = sh(ops.shell(paths), stdin="pwd -P\n", env=env)
    assert after.stdout == f"{tmp_path.resolve()}/releases/1\n", after.stderr

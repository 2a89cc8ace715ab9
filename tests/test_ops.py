"""The everyday ops commands on real hosts: `run -- CMD` in current, `logs` (and `--follow` ended by
Ctrl-C), `ssh` through a pseudo-terminal, `maintenance on|off` served 503 by the documented nginx
snippet and recorded in the ledger."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest
from helpers import cli, cli_env, cli_popen, under_pty, write_config
from test_json_contract import VALIDATOR
from test_recipes import WEB, get, make_repo

from deployer.plan.paths import Paths
from deployer.recipes import static_site
from deployer.remote import ops as scripts
from deployer.sandbox import hosts as sandbox_mod

P = Paths("/srv/app")


# --- scripts (pure, run in a real sh) ----------------------------------------------------------


def test_shared_rel_refuses_paths_that_leave_shared():
    assert scripts.shared_rel("log/app.log") == "log/app.log"
    assert scripts.shared_rel("log/../log/app.log") == "log/app.log"
    for bad in ("../etc/passwd", "log/../../x", "/etc/passwd", "..", "", "a\nb"):
        with pytest.raises(Exception) as info:
            scripts.shared_rel(bad)
        assert getattr(info.value, "exit_code", None) == 2, bad


def test_tail_script_quotes_the_path(tmp_path):
    """A file name holding quotes, $() and spaces is tailed as that literal name; nothing runs."""
    shared = tmp_path / "shared"
    (shared / "log").mkdir(parents=True)
    name = "log/a b'$(touch PWNED)`x`.log"
    (shared / name).write_text("one\ntwo\nthree\n")
    script = scripts.tail(Paths(str(tmp_path)), name, 2, follow=False)
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "two\nthree\n"
    assert not list(tmp_path.rglob("PWNED"))


def test_maintenance_page_escapes_the_message():
    text = scripts.page("<script>alert(1)</script> & back at 5")
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; back at 5" in text


# --- real hosts ----------------------------------------------------------------------------------


def run_cli(sb, *args: str) -> subprocess.CompletedProcess:
    """`deployer run ARGS` with --config before the `--` (all after it is the command)."""
    cut = args.index("--") if "--" in args else len(args)
    return subprocess.run(
        [sys.executable, "-m", "deployer", "run", *args[:cut], "--config", str(sb.config_path), *args[cut:]],
        capture_output=True,
        text=True,
        timeout=120,
        env=cli_env(),
        cwd="/",
    )


def deployed(sandbox, n=2, **extra):
    sb = sandbox(n, **extra)
    proc = cli(sb, "deploy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return sb


def test_run_prefixes_output_by_host_and_reports_each_exit_code(sandbox):
    sb = deployed(sandbox, 2)
    sb.exec(1, "touch /tmp/fail-here")
    command = 'pwd -P; echo "it\'s $DEPLOY_STAGE"; test ! -e /tmp/fail-here || exit 3'
    proc = run_cli(sb, "--json", "--", command)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    VALIDATOR.validate(data)
    rows = {h["host"]: h for h in data["hosts"]}
    assert (data["task"], data["result"], data["exit_code"], data["command"]) == ("run", "failed", 1, command)
    assert rows["host-1"]["exit_code"] == 0 and rows["host-2"]["exit_code"] == 3
    assert rows["host-1"]["stdout"] == "/srv/app/releases/1\nit's sandbox\n"
    assert "host-2 (exit 3)" in proc.stderr

    sb.exec(1, "rm /tmp/fail-here")
    proc = run_cli(sb, "--", "echo", "from", "'$(hostname)'")  # words joined as ssh does
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "host-1 | from $(hostname)" in lines and "host-2 | from $(hostname)" in lines


def test_run_as_and_no_current_release(sandbox):
    sb = sandbox(2, app={"run_as": "app"})
    proc = run_cli(sb, "--", "id -un")
    assert proc.returncode == 1
    assert "no current release in /srv/app" in proc.stderr
    proc = cli(sb, "deploy")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli(sb, "--hosts", "host-2", "--json", "--", "id -un")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    VALIDATOR.validate(data)
    assert [(h["host"], h["stdout"]) for h in data["hosts"]] == [("host-2", "app\n")]


def test_run_without_a_command_is_bad_input(sandbox):
    sb = sandbox(1)
    proc = run_cli(sb)
    assert proc.returncode == 2 and "nothing to run" in proc.stderr
    assert sb.command_count(0) == 0


def write_log(sb, host, text: str, append: bool = False) -> None:
    code, out = sb.exec(
        host,
        f"install -d -o deploy -g deploy /srv/app/shared/log && "
        f"printf '%s' '{text}' {'>>' if append else '>'} /srv/app/shared/log/app.log && "
        "chown deploy /srv/app/shared/log/app.log",
    )
    assert code == 0, out


def test_logs_tails_shared_files_on_every_host(sandbox):
    sb = deployed(sandbox, 2)
    write_log(sb, 0, "a1\na2\na3\n")
    write_log(sb, 1, "b1\nb2\nb3\n")
    proc = cli(sb, "logs", "--path", "log/app.log", "--lines", "2")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:4] == ["host-1 | a2", "host-1 | a3", "host-2 | b2", "host-2 | b3"]
    proc = cli(sb, "logs", "--json")  # default: the *.log files of shared/log
    assert proc.returncode == 0, proc.stderr
    VALIDATOR.validate(json.loads(proc.stdout))
    assert [h["stdout"] for h in json.loads(proc.stdout)["hosts"]] == ["a1\na2\na3\n", "b1\nb2\nb3\n"]

    before = sb.command_count(0)
    proc = cli(sb, "logs", "--path", "../../../etc/passwd")
    assert proc.returncode == 2 and "leaves shared/" in proc.stderr and "Traceback" not in proc.stderr
    assert sb.command_count(0) == before
    proc = cli(sb, "logs", "--path", "log/missing.log")
    assert proc.returncode == 1 and "shared/log/missing.log: no such file" in proc.stdout


def _tails(sb, host) -> str:
    code, out = sb.exec(host, "pgrep -a tail || true")
    return out.strip()


def test_logs_follow_streams_until_ctrl_c_and_leaves_nothing_running(sandbox):
    sb = deployed(sandbox, 2)
    write_log(sb, 0, "a1\n")
    write_log(sb, 1, "b1\n")
    proc = cli_popen(sb, "logs", "--path", "log/app.log", "--follow", "--lines", "1")
    seen: list[str] = []
    partial = b""

    def read_until(line: str, timeout: float = 30) -> None:
        """Raw reads off the pipe: a buffered readline() would leave a second line that came in
        the same chunk in Python's buffer, where select() never sees it."""
        nonlocal partial
        deadline = time.monotonic() + timeout
        while line not in seen:
            assert time.monotonic() < deadline, f"{line!r} not seen; got {seen}"
            ready, _, _ = select.select([proc.stdout], [], [], 1)
            if ready:
                got = os.read(proc.stdout.fileno(), 65536)
                assert got, f"stream ended early: {seen} {proc.stderr.read()}"
                *lines, partial = (partial + got).split(b"\n")
                seen.extend(done.decode() for done in lines)

    try:
        read_until("host-1 | a1")
        read_until("host-2 | b1")
        write_log(sb, 1, "b2 new\n", append=True)
        read_until("host-2 | b2 new")
        assert _tails(sb, 0) and _tails(sb, 1)  # a tail runs on each host while following
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "stopped" in out
    assert _tails(sb, 0) == "" and _tails(sb, 1) == ""  # the remote tails were killed


def test_ssh_opens_a_shell_in_current_through_a_pty(sandbox):
    sb = deployed(sandbox, 2)
    keys = b"pwd -P; tty >/dev/null && echo ON-A-TTY; echo MARK-$((6*7)); exit 7\n"
    before = sb.command_count(0)
    code, text = under_pty(
        [sys.executable, "-m", "deployer", "ssh", "--host", "host-2", "--config", str(sb.config_path)],
        keys=keys,
        timeout=60,
    )
    assert code == 7, text
    assert "/srv/app/releases/1" in text and "ON-A-TTY" in text and "MARK-42" in text
    assert sb.command_count(0) == before  # one host only: host-1 saw nothing


def test_ssh_unknown_host_is_bad_input(sandbox):
    sb = sandbox(1)
    proc = cli(sb, "ssh", "--host", "nope")
    assert proc.returncode == 2, proc.stderr


def test_maintenance_page_is_served_503_by_the_nginx_snippet_and_recorded(sandbox, tmp_path):
    repo = make_repo(tmp_path / "site", {"public/index.html": "<p>live site</p>\n"})
    sb = sandbox(2, source=repo, docker_kwargs=WEB, app={"recipe": "static_site"})
    site = static_site.nginx_site("/srv/app").replace(
        "server_name _;\n", "server_name _;\n" + scripts.nginx_snippet("/srv/app"), 1
    )
    for h in sb.hosts:
        sandbox_mod.serve_nginx(h, site)
    proc = cli(sb, "deploy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert get(sb.hosts[0]) == (200, "<p>live site</p>\n")

    proc = cli(sb, "maintenance", "on", "--message", "Back at <5pm> & 'soon'")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for h in sb.hosts:
        status, body = get(h)
        assert status == 503 and "Back at &lt;5pm&gt; &amp; &#x27;soon&#x27;" in body
        assert get(h, "/index.html")[0] == 503
    proc = cli(sb, "maintenance", "off", "--json")
    assert proc.returncode == 0, proc.stderr
    VALIDATOR.validate(json.loads(proc.stdout))
    assert json.loads(proc.stdout)["maintenance"] == "off"
    assert all(get(h) == (200, "<p>live site</p>\n") for h in sb.hosts)

    proc = cli(sb, "audit", "--json")
    entries = [e for e in json.loads(proc.stdout)["entries"] if e["action"] == "maintenance"]
    assert [(e["host"], e["state"]) for e in entries if e["host"] == "host-1"] == [("host-1", "on"), ("host-1", "off")]

    proc = cli(sb, "maintenance", "sideways")
    assert proc.returncode == 2 and "on or off" in proc.stderr


def test_the_documented_nginx_snippet_is_the_tested_one():
    """The snippet in the user guide is exactly what the 503 test above serves (for /srv/shop)."""
    from helpers import REPO

    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    assert any(scripts.nginx_snippet("/srv/shop") in p.read_text() for p in docs)


def test_run_and_ssh_reach_hosts_only_a_bastion_can_reach(hidden_hosts, app_repo, tmp_path):
    """The same SSH settings as a deploy: through the gateway, host keys checked on both hops."""
    names = [c.name for c in hidden_hosts["targets"]]
    via = write_config(
        tmp_path,
        names,
        {
            "user": "deploy",
            "key": str(hidden_hosts["key"]),
            "gateway": f"deploy@127.0.0.1:{hidden_hosts['bastion'].port}",
        },
        hidden_hosts["known_hosts"],
        app_repo,
    )
    proc = cli(via, "deploy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run_cli(via, "--", "pwd -P")
    assert proc.returncode == 0, proc.stderr
    assert {f"{n} | /srv/app/releases/1" for n in names} <= set(proc.stdout.splitlines())  # names of equal length
    code, out = under_pty(
        [sys.executable, "-m", "deployer", "ssh", "--host", names[1], "--config", str(via.config_path)],
        keys=b"pwd -P; exit 3\n",
        timeout=60,
    )
    assert code == 3 and "/srv/app/releases/1" in out


def test_ssh_as_run_as_and_before_any_release(sandbox):
    sb = sandbox(1, app={"run_as": "app"})
    code, text = under_pty(
        [sys.executable, "-m", "deployer", "ssh", "--config", str(sb.config_path)],
        keys=b"id -un; pwd -P; exit 0\n",
        timeout=60,
    )
    assert code == 0, text
    assert "no current release in /srv/app yet" in text and "\rapp\r\n" in text  # the shell runs as app

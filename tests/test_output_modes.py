"""Output for terminals and for logs: on a TTY one line per host rewritten in place (coloured
unless NO_COLOR), elsewhere plain lines with UTC times, throttled upload progress, and
collapsible groups under GitHub Actions / GitLab CI. Unit tests on Output, then the real
console script deploying to real hosts under a pseudo-terminal and in a CI-like pipe."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import pytest
from helpers import cli_env, under_pty

from deployer.report.output import LOG_EVERY, Output, UploadProgress, close_group

STAMPED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z  (\S+) +(\S+) +(.*)$")
SGR = re.compile(r"\x1b\[[0-9;]*m")


class Terminal(io.StringIO):
    def isatty(self):
        return True


def screen(raw: str) -> list[str]:
    """What a terminal shows after raw: enough of one for the sequences Output uses (cursor up to
    line start, clear line, colours, CR/LF)."""
    lines, row = [""], 0
    for token in re.split(r"(\x1b\[\d*F|\x1b\[2K|\n)", SGR.sub("", raw).replace("\r", "")):
        if token == "\n":
            row += 1
            lines += [""] * (row + 1 - len(lines))
        elif token == "\x1b[2K":
            lines[row] = ""
        elif token.startswith("\x1b[") and token.endswith("F"):
            row -= int(token[2:-1] or 1)
        else:
            lines[row] += token
    while lines and not lines[-1]:
        lines.pop()
    return [line.rstrip() for line in lines]


@pytest.fixture(autouse=True)
def _no_ci(monkeypatch):
    for name in ("GITHUB_ACTIONS", "GITLAB_CI", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    yield
    close_group()


def test_terminal_one_line_per_host_rewritten_in_place_with_colour():
    term = Terminal()
    out = Output(stream=term)
    for host, step, text in [
        ("host-1", "lock", "ok"),
        ("host-2", "lock", "ok"),
        ("host-1", "prepare", "uploading"),
        ("host-2", "prepare", "FAILED: disk full"),
        ("host-1", "prepare", "release 2 ready"),
    ]:
        out.line(host, step, text)
    out.table([{"host": "host-1", "result": "aborted"}])
    shown = screen(term.getvalue())
    assert [" ".join(line.split()) for line in shown[:2]] == [
        "host-1 prepare release 2 ready",
        "host-2 prepare FAILED: disk full",
    ]
    assert shown[2].startswith("host") and "aborted" in shown[4]
    raw = term.getvalue()
    assert "\x1b[31mhost-2           prepare   FAILED: disk full" in raw  # failed: red
    assert "\x1b[32mhost-1           prepare   release 2 ready" in raw  # ok: green
    assert not STAMPED.match(shown[0])


def test_terminal_lines_keep_host_order_whoever_speaks_first():
    """Hosts answer in any order; their lines stay in name order (host-2 before host-10)."""
    term = Terminal()
    out = Output(stream=term)
    for host in ("host-10", "host-2", "host-1"):
        out.line(host, "lock", "ok")
    out.line("host-2", "prepare", "uploading")
    assert [line.split()[0] for line in screen(term.getvalue())] == ["host-1", "host-2", "host-10"]


def test_no_color_keeps_the_live_lines_without_colour(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    term = Terminal()
    out = Output(stream=term)
    out.line("host-1", "lock", "ok")
    out.line("host-1", "prepare", "FAILED")
    assert "\x1b[1F" in term.getvalue() and not SGR.search(term.getvalue())
    assert screen(term.getvalue()) == ["host-1           prepare   FAILED"]


def test_a_host_value_cannot_move_the_terminal_cursor():
    term = Terminal()
    Output(stream=term).line("host-1", "verify", "body \x1b[2J\x1b[1F spoofed")
    assert "\x1b[2J" not in term.getvalue() and "\\x1b[2J" in term.getvalue()


def test_log_lines_carry_utc_times_and_nothing_else():
    log = io.StringIO()
    out = Output(stream=log)
    out.line("host-1", "lock", "ok")
    out.line("host-2", "prepare", "FAILED: x")
    out.say("done")
    lines = log.getvalue().splitlines()
    assert [STAMPED.match(line).groups() for line in lines[:2]] == [
        ("host-1", "lock", "ok"),
        ("host-2", "prepare", "FAILED: x"),
    ]
    assert lines[2] == "done" and "\x1b" not in log.getvalue()


def _upload(out: Output, seconds: float, step: float = 0.1) -> list[str]:
    now = [0.0]
    progress = UploadProgress(out, "host-1", total=100 << 20, clock=lambda: now[0])
    for i in range(int(seconds / step)):
        now[0] = i * step
        progress(int((100 << 20) * now[0] / (seconds * 2)))
    return progress


def test_upload_progress_in_a_log_at_most_once_per_interval():
    log = io.StringIO()
    _upload(Output(stream=log), 30)
    lines = log.getvalue().splitlines()
    assert 1 <= len(lines) <= 30 / LOG_EVERY
    assert all("upload" in line and "/s, ETA " in line for line in lines)
    term = Terminal()
    _upload(Output(stream=term), 30)
    assert term.getvalue().count("upload") > 4 * len(lines)  # a terminal's line updates oftener
    assert "ETA 31s" in screen(term.getvalue())[0]  # half sent at 1.7 MB/s, rest in ~30 s


@pytest.mark.parametrize(
    "variables, start, end",
    [
        ({"GITHUB_ACTIONS": "true"}, r"^::group::deployer progress$", r"^::endgroup::$"),
        (
            {"GITLAB_CI": "true"},
            r"^\x1b\[0Ksection_start:\d+:deployer_progress\[collapsed=true\]\r\x1b\[0Kdeployer progress$",
            r"^\x1b\[0Ksection_end:\d+:deployer_progress\r\x1b\[0K$",
        ),
    ],
)
def test_ci_logs_get_one_collapsible_group_around_the_progress(monkeypatch, variables, start, end):
    for k, v in variables.items():
        monkeypatch.setenv(k, v)
    log = io.StringIO()
    out = Output(stream=log)
    out.line("host-1", "lock", "ok")
    out.line("host-2", "lock", "ok")
    out.table([{"host": "host-1", "result": "ok"}])
    lines = log.getvalue().split("\n")
    assert re.match(start, lines[0]) and STAMPED.match(lines[1]) and STAMPED.match(lines[2])
    assert re.match(end, lines[3]) and lines[4].startswith("host")
    assert log.getvalue().count("deployer_progress") in (0, 2)


# --- the console script on real hosts ----------------------------------------------------------


def _under_pty(sb, *args: str, env: dict | None = None) -> tuple[int, str]:
    return under_pty(
        [sys.executable, "-m", "deployer", *args, "--config", str(sb.config_path)], env=env, cwd=sb.config_path.parent
    )


def test_deploy_on_a_terminal_and_in_a_ci_log(sandbox, app_repo):
    sb = sandbox(2, smoke={"command": 'test ! -f /tmp/fail-smoke || { echo "smoke broke" >&2; exit 3; }'})
    plain = {"GITHUB_ACTIONS": "", "GITLAB_CI": "", "NO_COLOR": ""}
    # a terminal: one line per host, green when done, the table below
    code, raw = _under_pty(sb, "deploy", env=plain)
    assert code == 0, raw
    shown = screen(raw)
    table = shown.index(next(line for line in shown if line.startswith("host ") and " result " in line))
    live = [line for line in shown[:table] if re.match(r"^host-\d ", line)]
    assert [line.split()[0] for line in live] == ["host-1", "host-2"], shown  # one line each, in place
    assert shown[table - 2 : table] == live and all(line.split()[1] in ("switch", "finish") for line in live), shown
    assert re.search(r"\x1b\[[12]F", raw) and "\x1b[32m" in raw and not any(STAMPED.match(x) for x in shown)
    # NO_COLOR: the same live lines, no colour
    code, raw = _under_pty(sb, "deploy", env={**plain, "NO_COLOR": "1"})
    assert code == 0 and "\x1b[2K" in raw and not SGR.search(raw), raw
    # a GitHub Actions log: stamped lines in one group, the table after it; a failed run too
    for expected in (0, 1):
        if expected:
            sb.exec(1, "touch /tmp/fail-smoke")
        proc = subprocess.run(
            [sys.executable, "-m", "deployer", "deploy", "--config", str(sb.config_path)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=sb.config_path.parent,
            env={**cli_env(), **plain, "GITHUB_ACTIONS": "true"},
        )
        assert proc.returncode == expected, proc.stderr
        lines = proc.stdout.splitlines()
        first, last = lines.index("::group::deployer progress"), lines.index("::endgroup::")
        assert first < last and lines.count("::group::deployer progress") == lines.count("::endgroup::") == 1
        assert all(STAMPED.match(line) for line in lines[first + 1 : last])
        assert "\x1b" not in proc.stdout and any(" result " in line for line in lines[last:])

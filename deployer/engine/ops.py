"""Everyday operations on a stage's hosts: a command in `current`, the tail of a shared log, an
interactive shell, the maintenance page. Scripts are built here (every input quoted) and run
through the same connections, SSH settings and per-host collection as a deploy."""

from __future__ import annotations

import html
import os
import posixpath
import shlex
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from deployer.config.settings import Host, Stage
from deployer.engine.fleet import HostRun, message
from deployer.engine.session import Session
from deployer.errors import UsageError, command_line
from deployer.plan.paths import Paths
from deployer.redact import redact
from deployer.remote import commands
from deployer.report.output import Output
from deployer.ssh.types import Cancelled, Result, TransportError

if TYPE_CHECKING:  # paramiko is loaded only when a shell or a log follow runs
    from deployer.ssh.connection import Connection

q = shlex.quote
MAINTENANCE_PAGE = "maintenance.html"  # under shared/: nginx answers 503 with it while it exists
MAX_MESSAGE = 2000
FOLLOW_TIMEOUT = 10**9  # `logs --follow` ends with Ctrl-C, not a timeout
LINE_MAX = 64 * 1024  # `logs --follow`: a line is printed in pieces of at most this many bytes


@dataclass
class HostAnswer:
    """One host's answer to an ops command."""

    host: str
    exit_code: int | None = None  # None: the command never ran (unreachable, ...)
    stdout: str = ""
    stderr: str = ""
    error: str = ""
    stdout_cut: int = 0  # bytes left out at the start of stdout, stderr (only their tails are kept)
    stderr_cut: int = 0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.error

    def row(self) -> dict[str, object]:
        state = "ok" if self.ok else "stopped" if self.error == "stopped" else "failed"
        return {
            "host": self.host,
            "result": state,
            "exit": "" if self.exit_code is None else self.exit_code,
            "error": self.error or ("" if self.ok else _last_line(self.stderr)),
        }


# -- scripts (pure) ---------------------------------------------------------------------------


def in_current(paths: Paths, command: str, env: dict[str, str], run_as: str = "") -> str:
    """`command` run by sh in current (as run_as when set); exit 1 with a line when there is no release."""
    return "\n".join(
        [
            f"cd {q(paths.current)} 2>/dev/null || "
            f"{{ echo 'no current release in '{q(paths.deploy_to)} >&2; exit 1; }}",
            *(
                [f"exec {commands.as_user(run_as, env, command)}"]
                if run_as
                else [commands.exports(env), f"exec sh -c {q(command)}"]
            ),
            "",
        ]
    )


def shared_rel(path: str) -> str:
    """A path under shared/, normalised; bad input when it leaves shared/ or is not a plain path."""
    if not path or "\0" in path or "\n" in path or path.startswith("/"):
        raise UsageError(f"expected a path relative to shared/, got {path!r}")
    norm = posixpath.normpath(path)
    if norm == ".." or norm.startswith("../"):
        raise UsageError(f"{path!r} leaves shared/")
    return norm


def tail(paths: Paths, path: str, lines: int, follow: bool) -> str:
    """The last `lines` lines of shared/PATH (a file, or every *.log in a directory); -F follows."""
    return "\n".join(
        [
            f"cd {q(paths.shared)} 2>/dev/null || {{ echo 'no shared/ in '{q(paths.deploy_to)} >&2; exit 1; }}",
            f"p={q(path)}",
            'if [ -d "$p" ]; then',
            '  cd "$p" && set -- *.log',
            '  [ -f "$1" ] || { printf "no *.log file in shared/%s\\n" "$p" >&2; exit 1; }',
            "else",
            '  [ -f "$p" ] || { printf "shared/%s: no such file\\n" "$p" >&2; exit 1; }',
            '  set -- "$p"',
            "fi",
            f'exec tail -n {int(lines)}{" -F" if follow else ""} -- "$@"',
            "",
        ]
    )


def page(message: str) -> str:
    """The maintenance page: the message, HTML-escaped."""
    text = html.escape(message or "We are doing some maintenance. Back soon.")
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8"><title>Maintenance</title></head>\n'
        f"<body><h1>Down for maintenance</h1><p>{text}</p></body></html>\n"
    )


def maintenance_script(paths: Paths, on: bool, content: str, token: str, ledger_line: str) -> str:
    """Write (atomically: a temp file, then rename) or remove shared/maintenance.html, then record it."""
    target = paths.shared_path(MAINTENANCE_PAGE)
    if on:
        tmp = paths.shared_path(f".{MAINTENANCE_PAGE}.{token}")
        change = [
            f"mkdir -p {q(paths.shared)}",
            f"printf '%s' {q(content)} > {q(tmp)}",
            f"chmod 644 {q(tmp)}",
            f"mv -f {q(tmp)} {q(target)}",
        ]
    else:
        change = [f"rm -f {q(target)}"]
    return "\n".join(["set -e", *change, commands.append_ledger(paths, ledger_line), ""])


def nginx_snippet(deploy_to: str) -> str:
    """For an nginx server block: while shared/maintenance.html exists, every request gets it with 503."""
    shared = posixpath.join(deploy_to, "shared")
    return f"""    # deployer maintenance on|off: serve shared/{MAINTENANCE_PAGE} with 503 while it exists
    error_page 503 @maintenance;
    if (-f {shared}/{MAINTENANCE_PAGE}) {{ return 503; }}
    location @maintenance {{
        root {shared};
        add_header Retry-After 120 always;
        rewrite ^ /{MAINTENANCE_PAGE} break;
    }}
"""


# -- flows ------------------------------------------------------------------------------------


def run(stage: Stage, hosts: tuple[Host, ...], out: Output, parallel: int, command: str) -> list[HostAnswer]:
    """`command` in current on every host at once; each host's exit code and output."""
    if not command.strip():
        raise UsageError("nothing to run: give the command after --, e.g. deployer run -- uptime")
    env = {"DEPLOY_STAGE": stage.name}
    script = in_current(Paths(stage.app.deploy_to), command, env, stage.app.run_as)
    return _each(stage, hosts, out, parallel, "run", lambda session, run: script)


def logs(
    stage: Stage, hosts: tuple[Host, ...], out: Output, parallel: int, path: str, lines: int, follow: bool = False
) -> list[HostAnswer]:
    """The tail of shared/PATH on every host. With follow, lines are printed as they come, prefixed
    by host, until Ctrl-C (the remote tails are killed; every host reports "stopped")."""
    rel = shared_rel(path)
    if lines < 0:
        raise UsageError(f"--lines must be 0 or more, got {lines}")
    script = tail(Paths(stage.app.deploy_to), rel, lines, follow)
    if not follow:
        return _each(stage, hosts, out, parallel, "logs", lambda session, run: script)
    return _follow(stage, hosts, out, script)


def maintenance(
    stage: Stage, hosts: tuple[Host, ...], out: Output, parallel: int, on: bool, message: str = ""
) -> list[HostAnswer]:
    """Put up (on) or take down (off) the maintenance page on every host; each records it in its ledger."""
    if len(message) > MAX_MESSAGE:
        raise UsageError(f"--message is limited to {MAX_MESSAGE} characters")
    content = page(message)

    def script_of(session: Session, run: HostRun) -> str:
        line = session.ledger(run, "ok", state="on" if on else "off", message=message)
        return maintenance_script(session.paths, on, content, session.token, line)

    return _each(stage, hosts, out, parallel, "maintenance", script_of)


def shell(stage: Stage, host: Host) -> int:
    """An interactive login shell in current on one host (as run_as when set), through a
    pseudo-terminal; returns the shell's exit status. Without a terminal on stdin (a pipe,
    /dev/null) it is bad input: the remote shell would wait for keys that never come."""
    from deployer.ssh.connection import Connection

    if not sys.stdin or not sys.stdin.isatty():
        raise UsageError(f"stdin is not a terminal; use `{command_line('run -- CMD')}` to run a command without one")

    paths = Paths(stage.app.deploy_to)
    shell_cmd = 'exec "${SHELL:-/bin/sh}" -l'
    if stage.app.run_as:
        shell_cmd = f"exec sudo -u {q(stage.app.run_as)} -s"
    command = (
        f"cd {q(paths.current)} 2>/dev/null || {{ echo 'no current release in '{q(paths.deploy_to)}' yet'; "
        f"cd {q(paths.deploy_to)} 2>/dev/null; }}; {shell_cmd}"
    )
    try:
        conn = Connection(host).open()
    except TransportError as exc:
        from deployer.errors import DeployerError

        raise DeployerError(f"{host.name}: connect: {exc}") from None
    try:
        return _relay(conn, command)
    finally:
        conn.close()


# -- helpers ----------------------------------------------------------------------------------

ScriptOf = Callable[[Session, HostRun], str]


def _run(session: Session, run: HostRun, script: str) -> Result:
    """One script on one host; a non-zero exit is an answer, not an error."""
    if run.conn is None or not run.conn.alive:
        session.connect(run)
    assert run.conn is not None
    return run.conn.run(script, cancel=session.fleet.cancel)


def _collect(session: Session, fn: Callable[[HostRun], None], outcomes: dict[str, HostAnswer]) -> None:
    failures = session.fleet.each(session.action, fn)
    for name, exc in failures.items():
        outcomes[name].error = "stopped" if isinstance(exc, Cancelled) else redact(message(exc))


def _each(
    stage: Stage, hosts: tuple[Host, ...], out: Output, parallel: int, action: str, script_of: ScriptOf
) -> list[HostAnswer]:
    """script_of(session, run) on every host; one answer per host, in the hosts' order."""
    outcomes = {h.name: HostAnswer(h.name) for h in hosts}
    with Session(stage, hosts, out, parallel, action=action) as session:

        def one(run: HostRun) -> None:
            result = _run(session, run, script_of(session, run))
            outcomes[run.name] = HostAnswer(
                run.name,
                result.exit_code,
                result.stdout,
                result.stderr,
                stdout_cut=result.stdout_cut,
                stderr_cut=result.stderr_cut,
            )

        _collect(session, one, outcomes)
    return [outcomes[h.name] for h in hosts]


class _Prefixed:
    """Complete lines of one host's stream, printed as `host | line` as they arrive: a secret
    split between two reads is masked whole. A line longer than LINE_MAX is printed in pieces
    (a secret cut at a piece's edge is still masked: see `redact`)."""

    def __init__(self, host: str, width: int, write: Callable[[str], None]):
        self.host, self.width, self.write = host, width, write
        self.partial = b""

    def __call__(self, data: bytes) -> None:
        self.partial += data
        *done, self.partial = self.partial.split(b"\n")
        while len(self.partial) > LINE_MAX:
            cut = LINE_MAX
            while cut > LINE_MAX - 3 and self.partial[cut] & 0xC0 == 0x80:  # not inside a character
                cut -= 1
            done.append(self.partial[:cut])
            self.partial = self.partial[cut:]
        for line in done:
            self.write(prefixed(self.host, self.width, line.decode("utf-8", "replace")))

    def flush(self) -> None:
        if self.partial:
            self.write(prefixed(self.host, self.width, self.partial.decode("utf-8", "replace")))
            self.partial = b""


def prefixed(host: str, width: int, line: str) -> str:
    return f"{host:<{width}} | {redact(line)}"


def _follow(stage: Stage, hosts: tuple[Host, ...], out: Output, script: str) -> list[HostAnswer]:
    """Direct connections (the stream cannot go through the agent), one thread per host."""
    from deployer.ssh.connection import Connection

    width = max((len(h.name) for h in hosts), default=0)
    lock = threading.Lock()

    def write(text: str) -> None:
        if out.quiet:
            return
        with lock:
            out.say(text)

    outcomes = {h.name: HostAnswer(h.name) for h in hosts}
    with Session(stage, hosts, out, len(hosts) or 1, action="logs") as session:

        def follow(run: HostRun) -> None:
            conn = Connection(run.host)
            run.conn = conn
            try:
                conn.open()
            except TransportError as exc:
                raise TransportError(f"connect: {exc}") from None
            sink = _Prefixed(run.name, width, write)
            try:
                result = conn.run(script, cancel=session.fleet.cancel, timeout=FOLLOW_TIMEOUT, on_output=sink)
            finally:
                sink.flush()
            outcomes[run.name] = HostAnswer(run.name, result.exit_code, "", result.stderr)

        try:
            _collect(session, follow, outcomes)
        except KeyboardInterrupt:
            for answer in outcomes.values():
                if answer.exit_code is None and not answer.error:
                    answer.error = "stopped"
    return [outcomes[h.name] for h in hosts]


def _relay(conn: Connection, command: str) -> int:
    """Relay a terminal session: the local terminal in raw mode, window size changes passed on."""
    import select
    import signal

    fd_in, fd_out = sys.stdin.fileno(), sys.stdout.fileno()
    tty = os.isatty(fd_in)
    size = os.get_terminal_size(fd_out) if os.isatty(fd_out) else os.terminal_size((80, 24))
    chan = conn.interactive(command, os.environ.get("TERM", "xterm"), size.columns, size.lines)
    saved = None
    previous_winch = None
    if tty:
        import termios
        import tty as tty_mod

        saved = termios.tcgetattr(fd_in)
        tty_mod.setraw(fd_in, termios.TCSANOW)  # keys typed ahead are kept, not flushed
        if hasattr(signal, "SIGWINCH"):

            def resize(*_: object) -> None:
                s = os.get_terminal_size(fd_out)
                chan.resize_pty(width=s.columns, height=s.lines)

            previous_winch = signal.signal(signal.SIGWINCH, resize)
    try:
        stdin_open = True
        while True:
            watch = [chan, fd_in] if stdin_open else [chan]
            try:
                readable, _, _ = select.select(watch, [], [], 0.5)
            except InterruptedError:
                continue
            if chan in readable or chan.recv_ready():
                data = chan.recv(32768)
                if not data:
                    break
                os.write(fd_out, data)
            if fd_in in readable:
                data = os.read(fd_in, 4096)
                if data:
                    chan.sendall(data)
                else:
                    stdin_open = False
                    chan.shutdown_write()
            if chan.exit_status_ready() and not chan.recv_ready():
                break
        return int(chan.recv_exit_status())
    finally:
        if saved is not None:
            import termios

            termios.tcsetattr(fd_in, termios.TCSADRAIN, saved)
        if previous_winch is not None:
            signal.signal(signal.SIGWINCH, previous_winch)
        chan.close()


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return redact(lines[-1]) if lines else ""

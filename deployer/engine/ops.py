"""Everyday operations on a stage's hosts: a command in `current`, the tail of a shared log, an
interactive shell, the maintenance page. The scripts are built in remote/ops.py; they run through
the same connections, SSH settings and per-host collection as a deploy, and each host's answer is
kept (report/answers.py shows it)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

from deployer.config.settings import Host, Stage
from deployer.engine.fleet import HostRun, message
from deployer.engine.session import Session
from deployer.errors import DeployerError, UsageError, command_line
from deployer.plan.paths import Paths
from deployer.redact import redact
from deployer.remote import ops as scripts
from deployer.report.answers import HostAnswer, Prefixed
from deployer.report.output import Output
from deployer.ssh import terminal
from deployer.ssh.types import Cancelled, Result, TransportError

MAX_MESSAGE = 2000
FOLLOW_TIMEOUT = 10**9  # `logs --follow` ends with Ctrl-C, not a timeout


# -- flows ------------------------------------------------------------------------------------


def run(stage: Stage, hosts: tuple[Host, ...], out: Output, parallel: int, command: str) -> list[HostAnswer]:
    """`command` in current on every host at once; each host's exit code and output."""
    if not command.strip():
        raise UsageError("nothing to run: give the command after --, e.g. deployer run -- uptime")
    env = {"DEPLOY_STAGE": stage.name}
    script = scripts.in_current(Paths(stage.app.deploy_to), command, env, stage.app.run_as)
    return _each(stage, hosts, out, parallel, "run", lambda session, run: script)


def logs(
    stage: Stage, hosts: tuple[Host, ...], out: Output, parallel: int, path: str, lines: int, follow: bool = False
) -> list[HostAnswer]:
    """The tail of shared/PATH on every host. With follow, lines are printed as they come, prefixed
    by host, until Ctrl-C (the remote tails are killed; every host reports "stopped")."""
    rel = scripts.shared_rel(path)
    if lines < 0:
        raise UsageError(f"--lines must be 0 or more, got {lines}")
    script = scripts.tail(Paths(stage.app.deploy_to), rel, lines, follow)
    if not follow:
        return _each(stage, hosts, out, parallel, "logs", lambda session, run: script)
    return _follow(stage, hosts, out, script)


def maintenance(
    stage: Stage, hosts: tuple[Host, ...], out: Output, parallel: int, on: bool, message: str = ""
) -> list[HostAnswer]:
    """Put up (on) or take down (off) the maintenance page on every host; each records it in its ledger."""
    if len(message) > MAX_MESSAGE:
        raise UsageError(f"--message is limited to {MAX_MESSAGE} characters")
    content = scripts.page(message)

    def script_of(session: Session, run: HostRun) -> str:
        line = session.ledger(run, "ok", state="on" if on else "off", message=message)
        return scripts.maintenance(session.paths, on, content, session.token, line)

    return _each(stage, hosts, out, parallel, "maintenance", script_of)


def shell(stage: Stage, host: Host) -> int:
    """An interactive login shell in current on one host (as run_as when set), through a
    pseudo-terminal; returns the shell's exit status. Without a terminal on stdin (a pipe,
    /dev/null) it is bad input: the remote shell would wait for keys that never come."""
    from deployer.ssh.connection import Connection

    if not sys.stdin or not sys.stdin.isatty():
        raise UsageError(f"stdin is not a terminal; use `{command_line('run -- CMD')}` to run a command without one")

    command = scripts.shell(Paths(stage.app.deploy_to), stage.app.run_as)
    try:
        conn = Connection(host).open()
    except TransportError as exc:
        raise DeployerError(f"{host.name}: connect: {exc}") from None
    try:
        return terminal.relay(conn, command)
    finally:
        conn.close()


# -- helpers -----------------------------------------------------------------------------------

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
            sink = Prefixed(run.name, width, write)
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

"""The tasks around a deploy: `init` (scaffold a config), and the everyday ops commands `run`,
`logs`, `ssh` and `maintenance`. Same boundary, options and exit codes as the deploy tasks."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from invoke import Exit, Task

from deployer.cli import scaffold
from deployer.cli.command import Target, command, parallelism, stage_target, whole_number
from deployer.config import envfile
from deployer.engine import ops
from deployer.errors import FAILED, UsageError, command_line
from deployer.report.answers import HostAnswer, prefixed
from deployer.report.document import Outcome
from deployer.report.output import Output

USER_NAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")


@command(
    stage="The one stage to write (default production).",
    hosts="Comma-separated [user@]host[:port] of your server(s) (default: a placeholder to edit).",
    user="SSH user on the hosts (default deploy).",
    deploy_to="Where releases live on the hosts (default /srv/<app name>).",
    recipe="generic, python_wsgi, django or static_site (default: guessed from the files).",
    ci="Also write a CI workflow: github (.github/workflows/deploy.yml) or gitlab (.gitlab-ci.yml).",
    force="Overwrite files that exist already.",
)
def init(c, stage="production", hosts=None, user="deploy", deploy_to=None, recipe=None, ci=None, force=False):
    """Write a commented hosts.toml and a tasks.py (and a CI workflow) for the git repository here."""
    if recipe == "generic":
        recipe = ""
    names = [h.strip() for h in hosts.split(",") if h.strip()] if hosts else []
    plan = scaffold.plan(
        Path.cwd(), stage=stage, hosts=names, user=user, deploy_to=deploy_to or "", recipe=recipe, ci=ci or ""
    )
    written = scaffold.write(plan, force=force)
    out = Output()
    for rel in written:
        out.say(f"wrote {rel}")
    out.say(f"recipe: {plan.recipe or 'none (generic)'} ({plan.reason})")
    if not names:
        out.say(f"next: put your server(s) in [stages.{stage}] hosts of hosts.toml, then run: {command_line('check')}")
    else:
        out.say(f"next: {command_line('check')}, then {command_line('deploy')}")


def _remainder() -> str:
    """What follows `--` on the command line, joined by spaces as ssh does (quote a whole command
    line to keep its own quoting)."""
    argv = sys.argv
    return " ".join(argv[argv.index("--") + 1 :]) if "--" in argv else ""


def _outcome(
    out: Output,
    outcomes: list[HostAnswer],
    json: bool,
    what: str,
    stage: str,
    extra: dict,
    show_output: bool = True,
) -> Outcome:
    """Each host's output prefixed by its name and the table (or, with --json, one record per
    host); exit 1 naming the hosts that failed."""
    if not json:
        if show_output:
            width = max((len(o.host) for o in outcomes), default=0)
            err = Output(stream=sys.stderr)
            for o in outcomes:
                for where, text, cut in ((out, o.stdout, o.stdout_cut), (err, o.stderr, o.stderr_cut)):
                    if cut:
                        where.say(prefixed(o.host, width, f"… {cut} bytes cut"))
                    for line in text.splitlines():
                        where.say(prefixed(o.host, width, line))  # control characters shown escaped
        out.table([o.row() for o in outcomes])
    records = [
        {
            "host": o.host,
            "result": o.row()["result"],
            "exit_code": o.exit_code,
            "stdout": o.stdout,
            "stderr": o.stderr,
            "stdout_cut": o.stdout_cut,
            "stderr_cut": o.stderr_cut,
            "error": o.error or (None if o.ok else o.row()["error"] or None),
        }
        for o in outcomes
    ]
    bad = [o for o in outcomes if not o.ok and o.error != "stopped"]
    error = None
    if bad:
        error = f"{what} failed on " + ", ".join(f"{o.host} ({o.error or f'exit {o.exit_code}'})" for o in bad)
    return Outcome(records, FAILED if bad else 0, error, stage, extra)


def _masked(t: Target) -> None:
    """Register the stage's secret values before a host's output is printed: a `cat .env` or a
    log line shows them masked. One this machine cannot read gets a note on stderr."""
    for note in envfile.mask_readable(t.stage.hosts, str(t.cfg.path.parent), commands=True):
        Output(stream=sys.stderr).say(f"note: {note}")


@command(name="run")
def run_(c, stage=None, config=None, hosts=None, roles=None, parallel=10, json=False):
    """Run a command in `current` on every host: deployer run -- CMD (output prefixed by host)."""
    command = _remainder()
    t = stage_target(config, stage, hosts, roles, json)
    _masked(t)
    outcomes = ops.run(t.stage, t.hosts, t.out, parallelism(parallel), command)
    return _outcome(t.out, outcomes, json, "run", t.stage.name, {"command": command})


@command(
    path="File under shared/, or a directory of *.log files (default log).",
    follow="Keep printing new lines until Ctrl-C.",
    lines="How many lines to show first (default 20).",
)
def logs(
    c, path="log", stage=None, config=None, hosts=None, roles=None, parallel=10, follow=False, lines=20, json=False
):
    """Tail a file under shared/ on every host, each line prefixed by host (--follow: until Ctrl-C)."""
    t = stage_target(config, stage, hosts, roles, json)
    if follow and json:
        raise UsageError("--follow and --json exclude each other")
    _masked(t)
    outcomes = ops.logs(
        t.stage, t.hosts, t.out, parallelism(parallel), path, whole_number(lines, "lines"), follow=follow
    )
    return _outcome(t.out, outcomes, json, "logs", t.stage.name, {"path": path}, show_output=not follow)


@command(host="The host's name, address or address:port (default: the stage's first host).")
def ssh(c, stage=None, config=None, host=None, roles=None):
    """An interactive shell in `current` on one host (through a pseudo-terminal, same SSH settings)."""
    t = stage_target(config, stage, host, roles)
    if not t.hosts:
        raise UsageError("no host selected")
    if host and len(t.hosts) > 1:
        matches = ", ".join(f"{h.name} ({h.endpoint})" for h in t.hosts)
        raise UsageError(f"--host {host} matches {len(t.hosts)} hosts: {matches}; name one (its name or address:port)")
    code = ops.shell(t.stage, t.hosts[0])
    if code:
        raise Exit(code=code)


@command(positional=("state",), state="on or off.", message="Text of the page (HTML-escaped; default: a short notice).")
def maintenance(c, state, stage=None, config=None, hosts=None, roles=None, parallel=10, message="", json=False):
    """Put up (on) or take down (off) shared/maintenance.html, served with 503 by the nginx snippet."""
    if state not in ("on", "off"):
        raise UsageError(f"maintenance expects on or off, got {state!r}")
    t = stage_target(config, stage, hosts, roles, json)
    outcomes = ops.maintenance(t.stage, t.hosts, t.out, parallelism(parallel), state == "on", message or "")
    result = _outcome(
        t.out, outcomes, json, f"maintenance {state}", t.stage.name, {"maintenance": state}, show_output=False
    )
    if not result.exit_code:
        t.out.say(f"maintenance {state} on {len(outcomes)} host(s) of {t.stage.name}")
    return result


@command(
    login="Log in as this user to set up: root, or a user who may sudo without a password "
    "(default: the config's user).",
    user="The deploy user: created when missing, gets deploy_to and the sudo rule (default: the config's user).",
    dry_run="Show the files setup would write and what would change on each host; change nothing.",
)
def setup(
    c, stage=None, config=None, hosts=None, roles=None, parallel=10, login=None, user=None, dry_run=False, json=False
):
    """Once per host, as root: deploy user, deploy_to, the recipe's systemd unit, sudo rule, nginx site."""
    from deployer.engine import setup as setup_flow

    t = stage_target(config, stage, hosts, roles, json)
    if user is not None and not USER_NAME.match(user):
        raise UsageError(f"--user expects a user name, got {user!r}")
    if login is not None and not USER_NAME.match(login):
        raise UsageError(f"--login expects a user name, got {login!r}")
    if dry_run:
        shown: set[tuple[str, str]] = set()
        for host_plan in setup_flow.plans(t.stage, t.hosts, user).values():
            for f in host_plan.files:
                if (f.path, f.content) not in shown:
                    shown.add((f.path, f.content))
                    t.out.say(f"--- {f.path} (mode {f.mode}, owner root)\n{f.content}", multiline=True)
    answers, code, error = setup_flow.setup(
        t.stage, t.hosts, t.out, parallelism(parallel), login=login, user=user, dry_run=dry_run
    )
    if dry_run and not code:
        for a in answers:
            for key, value in a.changes:
                t.out.say(f"{a.host}: would {key} {value}")
            if not a.changes:
                t.out.say(f"{a.host}: nothing to change")
    return Outcome([a.record() for a in answers], code, error, t.stage.name, {"dry_run": bool(dry_run)})


TASKS: tuple[Task, ...] = (init, run_, logs, ssh, maintenance, setup)

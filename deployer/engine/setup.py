"""`deployer setup`: make bare hosts ready for deploys, once, as root (see plan/setup.py for what
is written, remote/scripts/setup.sh for how). Two passes over the hosts: the first only looks
(what would change, and whether each host can take it at all); the second, run only when every
host can, makes the changes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from deployer.config.settings import Host, Stage
from deployer.engine.fleet import HostRun, message
from deployer.engine.session import Session
from deployer.errors import BAD_INPUT, FAILED, UsageError
from deployer.plan import setup as plan
from deployer.remote import setup as remote_setup
from deployer.report.output import Output


@dataclass
class SetupAnswer:
    """One host: its changes (made, or with dry_run those it would make), or why it failed."""

    host: str
    changes: list[tuple[str, str]] = field(default_factory=list)
    error: str = ""
    refused: bool = False  # the host cannot take setup (no systemd, ...): nothing written anywhere

    def record(self) -> dict[str, object]:
        return {
            "host": self.host,
            "result": "refused" if self.refused else "failed" if self.error else "ok",
            "changed": [{"kind": kind, "target": target} for kind, target in self.changes],
            "error": self.error or None,
        }


def plans(stage: Stage, hosts: tuple[Host, ...], user: str | None) -> dict[str, plan.HostSetup]:
    """Each host's plan: for `user` (created when missing), else for the user the config logs in as."""
    out = {}
    for h in hosts:
        deploy_user = user or h.user
        if not deploy_user:
            raise UsageError("setup: which user deploys? Give --user NAME (or set [ssh] user in hosts.toml)")
        out[h.name] = plan.plan(
            stage.app.name,
            stage.app.recipe,
            stage.app.deploy_to,
            stage.app.shared_dirs,
            deploy_user,
            h.roles,
            create_user=bool(user),
        )
    return out


def setup(
    stage: Stage,
    hosts: tuple[Host, ...],
    out: Output,
    parallel: int,
    *,
    login: str | None,
    user: str | None,
    dry_run: bool,
) -> tuple[list[SetupAnswer], int, str | None]:
    """(answers, exit code, error). Nothing is written on any host unless every host can take it."""
    wanted = plans(stage, hosts, user)
    logins = tuple(dataclasses.replace(h, ssh=dataclasses.replace(h.ssh, user=login or h.ssh.user)) for h in hosts)
    answers = {h.name: SetupAnswer(h.name) for h in hosts}
    with Session(stage, logins, out, parallel, action="setup") as session:

        def one(run: HostRun, dry: bool) -> None:
            if run.conn is None or not run.conn.alive:
                session.connect(run)
            assert run.conn is not None
            result = run.conn.run(remote_setup.setup(wanted[run.name], dry_run=dry), cancel=session.fleet.cancel)
            answer = answers[run.name]
            answer.changes = [
                (key, value) for key, _, value in (line.partition("\t") for line in result.stdout.splitlines()) if value
            ]
            if result.exit_code:
                answer.refused = result.exit_code == remote_setup.SETUP_REFUSED
                answer.error = result.tail(1 if answer.refused else 5).removeprefix("setup: ")

        def each(dry: bool) -> list[SetupAnswer]:
            for name, exc in session.fleet.each("setup", lambda r: one(r, dry)).items():
                answers[name].error = message(exc)
            return [a for a in answers.values() if a.error]

        bad = each(dry=True)
        if bad:
            code = BAD_INPUT if all(a.refused for a in bad) else FAILED
            return list(answers.values()), code, _failed(bad, "nothing written on any host")
        if dry_run:
            return list(answers.values()), 0, None
        bad = each(dry=False)
    for answer in answers.values():
        for key, value in answer.changes:
            out.say(f"{answer.host}: {key} {value}")
    return list(answers.values()), FAILED if bad else 0, _failed(bad, "") if bad else None


def _failed(bad: list[SetupAnswer], note: str) -> str:
    text = "setup failed on " + "; ".join(f"{a.host}: {a.error}" for a in bad)
    return f"{text} ({note})" if note else text

"""Proof of what runs where: the promotion gate, the audit trail, drift checks.

All evidence is read from the hosts' own ledgers and release trees, never from a file on the
machine that happens to run the deployer, so it holds when ops deploy from different machines.
"""

from __future__ import annotations

from datetime import datetime

from deployer.artifact.load import Artifact
from deployer.config.settings import Config, Stage
from deployer.engine.fleet import HostRun
from deployer.engine.records import Drift, LedgerEntry
from deployer.engine.session import Session
from deployer.errors import DeployerError, GateRefused, UsageError
from deployer.remote import commands
from deployer.report import ledger
from deployer.report.output import Output


def _read_ledgers(stage: Stage, out: Output, match: str | None = None, parallel: int = 10) -> list[HostRun]:
    with Session(stage, stage.hosts, out, parallel, action="audit") as session:

        def read(run: HostRun) -> None:
            result = session.run(run, "inspect", commands.read_ledger(session.paths, match))
            run.ledger = ledger.parse(result.stdout, run.name)
            run.result = "ok"

        session.fleet.each("inspect", read)
        return session.runs


def passed(entries: list[LedgerEntry], stage: str, sha256: str) -> bool:
    """The artifact was deployed to this stage and finished its smoke/verify steps there."""
    return any(
        e.get("action") == "deploy"
        and e.get("result") == "ok"
        and e.get("stage") == stage
        and e.get("artifact_sha256") == sha256
        for e in entries
    )


def check_gate(cfg: Config, stage: Stage, artifact: Artifact, out: Output, *, force: bool, reason: str) -> None:
    """Refuse (exit 4) unless every required stage has every host's proof that this artifact passed."""
    problems = []
    for name in stage.requires:
        required = cfg.stage(name)
        for run in _read_ledgers(required, out, artifact.sha256):
            if run.ledger is None:
                problems.append(f"{name}/{run.name}: cannot read its ledger ({run.error})")
            elif not passed(run.ledger, name, artifact.sha256):
                problems.append(f"{name}/{run.name}: no successful, verified deploy of this artifact")
    if not problems:
        if stage.requires:
            out.say(f"gate: {artifact.version} ({artifact.sha256[:12]}) passed {', '.join(stage.requires)}")
        return
    if force:
        out.say(f"gate: FORCED past {', '.join(stage.requires)} ({'; '.join(problems)}); reason: {reason}")
        return
    raise GateRefused(
        f"refusing to deploy {artifact.version} ({artifact.sha256[:12]}) to {stage.name}: "
        f"{problems[0]}{f' (+{len(problems) - 1} more)' if len(problems) > 1 else ''}; it must pass "
        f'{", ".join(stage.requires)} first, or use --force --reason "why"'
    )


def audit(stage: Stage, out: Output, *, since: str | None = None, host: str | None = None) -> list[LedgerEntry]:
    """Every host's ledger merged, oldest first; unreachable hosts are an error."""
    if since:
        try:
            datetime.fromisoformat(since.replace("Z", "+00:00"))
        except ValueError:
            raise UsageError(f"--since expects a date like 2026-01-31 or 2026-01-31T12:00:00Z, got {since!r}") from None
    hosts = stage.select([host] if host else None)
    runs = _read_ledgers(Stage(stage.name, stage.app, hosts, stage.pipeline, stage.requires), out)
    failed = [r for r in runs if r.ledger is None]
    if failed:
        raise DeployerError("cannot read the ledger on " + "; ".join(f"{r.name}: {r.error}" for r in failed))
    entries = [e for r in runs for e in r.ledger or []]
    if since:
        entries = [e for e in entries if str(e.get("time", "")) >= since]
    return sorted(entries, key=lambda e: (str(e.get("time", "")), str(e.get("host", ""))))


def audit_rows(entries: list[LedgerEntry]) -> list[dict[str, object]]:
    return [
        {
            "time": e.get("time", ""),
            "host": e.get("host", ""),
            "action": e.get("action", ""),
            "result": e.get("result", ""),
            "release": e.get("release", "") if e.get("release") is not None else "",
            "version": e.get("version", ""),
            "git sha": str(e.get("git_sha", ""))[:8],
            "artifact": str(e.get("artifact_sha256", ""))[:12],
            "who": e.get("who", ""),
            "s": e.get("duration", ""),
            "note": "; ".join(
                str(x)
                for x in (f"FORCED: {e['reason']}" if e.get("forced") else e.get("reason", ""), e.get("error", ""))
                if x
            ),
        }
        for e in entries
    ]


def drift(stage: Stage, out: Output, parallel: int = 10) -> list[HostRun]:
    """Check every host's current tree against the manifest that came with its artifact."""
    with Session(stage, stage.hosts, out, parallel, action="verify") as session:

        def check(run: HostRun) -> None:
            app = stage.app
            result = session.run(
                run, "inspect", commands.drift(session.paths, app.shared_dirs + app.shared_files, app.generated)
            )
            found = run.drift = Drift()
            lists = {"modified": found.modified, "removed": found.removed, "added": found.added}
            for parts in (line.split("\t", 1) for line in result.stdout.splitlines()):
                if parts[0] == "no_manifest":
                    found.manifest = False
                    run.result = "no manifest"
                    return
                if parts[0] in lists and len(parts) == 2:
                    lists[parts[0]].append(parts[1])
                elif parts[0] == "checked":
                    found.checked = int(parts[1])
            run.result = "DRIFT" if found.found else "ok"

        session.fleet.each("inspect", check)
        return session.runs

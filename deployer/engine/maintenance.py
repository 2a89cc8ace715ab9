"""Read-only and maintenance flows: inspect (status, releases, check), cleanup, unlock, config."""

from __future__ import annotations

import io
from dataclasses import replace

from deployer.config import envfile
from deployer.config.settings import Host, Stage
from deployer.engine import hooks, lease, signals
from deployer.engine.fleet import HostRun, host_state
from deployer.engine.records import Maintained
from deployer.engine.session import Session, no_interrupts
from deployer.errors import HostError, UsageError, command_line
from deployer.plan import releases as planning
from deployer.plan.host_state import LockInfo
from deployer.remote import commands, lock
from deployer.report.output import Output


def inspect(
    stage: Stage, hosts: tuple[Host, ...], out: Output, parallel: int = 10, sudo: bool = False
) -> list[HostRun]:
    """Every host's state, read-only: one remote command per host (with sudo, `check`'s probe of
    the sudo rule too)."""
    with Session(stage, hosts, out, parallel, action="status") as session:
        session.fleet.each("inspect", lambda r: lease.inspect(session, r, lock=False, sudo=sudo))
        for run in session.runs:
            if run.state is not None and run.result == "pending":
                run.result = "ok"
        return session.runs


def cleanup(
    stage: Stage,
    hosts: tuple[Host, ...],
    out: Output,
    parallel: int = 10,
    foreign: bool = False,
    lock_wait: float = 0.0,
) -> list[HostRun]:
    """Remove old, failed and leftover releases under the lock; with foreign, other tools' releases
    too (never the live one, nor the one current replaced)."""
    with Session(stage, hosts, out, parallel, action="cleanup", lock_wait=lock_wait) as session:

        def clean(run: HostRun) -> None:
            state = host_state(run)
            current = state.current
            release = state.release(current) if current is not None else None
            previous = release.meta.get("previous") if release else None
            doomed = planning.cleanup(
                state,
                stage.app.keep_releases,
                current,
                previous if isinstance(previous, (int, str)) else None,
                foreign=foreign,
            )
            keep = planning.kept_artifacts(state, doomed)
            line = session.ledger(run, "ok", release=current, cleaned=doomed)
            failed = session.ledger(
                run, "failed", release=current, error=f"could not remove {', '.join(doomed) or 'cache entries'}"
            )
            result = session.run(
                run,
                "cleanup",
                commands.finish(
                    session.paths, session.token, delete=doomed, keep_artifacts=keep, ledger=line, failed=failed
                ),
            )
            run.locked = False
            if result.field(commands.CLEANUP_FAILED) is not None:
                raise HostError(run.name, "cleanup", result.tail())
            run.result = "ok"
            run.maintained = Maintained(release=current, removed=doomed)
            out.line(run.name, "cleanup", f"removed {', '.join(doomed)}" if doomed else "nothing to remove")

        try:
            lease.lock_all(session)
            session.must("cleanup", clean, undo=True)
            return session.runs
        except KeyboardInterrupt as exc:
            with no_interrupts():
                failed = session.interrupted(exc, undone="nothing removed past that point")
            raise failed from None


def unlock(stage: Stage, hosts: tuple[Host, ...], out: Output, parallel: int = 10) -> list[HostRun]:
    """Remove the lock by force, printing who held it."""
    with Session(stage, hosts, out, parallel, action="unlock") as session:

        def force(run: HostRun) -> None:
            result = session.run(run, "unlock", lock.unlock(session.paths, ledger=session.ledger(run, "ok")))
            held = [line.split("\t", 1)[1] for line in result.stdout.splitlines() if line.startswith("removed\t")]
            run.result = "ok"
            holder = LockInfo.parse(held[0]).describe() if held else ""
            run.maintained = Maintained(held_by=holder)
            out.line(run.name, "unlock", f"removed lock held by {holder}" if held else "no lock")

        session.must("unlock", force)
        return session.runs


def push_config(
    stage: Stage,
    hosts: tuple[Host, ...],
    out: Output,
    parallel: int = 10,
    config_dir: str = ".",
    lock_wait: float = 0.0,
) -> list[HostRun]:
    """Write a new version of the live release's env on each host (no new artifact), record its
    digest, then run the restart. A rollback later brings back the env of the release it goes to."""
    envs = envfile.resolve(hosts, config_dir)
    if not envs:
        raise UsageError(f"stage {stage.name} has no [env] to push")
    with Session(stage, hosts, out, parallel, action="config", lock_wait=lock_wait) as session:
        sent: dict[str, tuple[int, str]] = {}  # host: (release, ok line) of a write whose answer is awaited
        restarted: list[str] = []

        def write(run: HostRun) -> None:
            env, live = envs[run.name], host_state(run).current
            if live is None:
                raise HostError(run.name, "config", "no release of this deployer is live on this host: deploy first")
            line = session.ledger(
                run, "ok", release=live, env_file=stage.app.env_file, env_sha256=env.digest, keys=sorted(env.values)
            )
            sent[run.name] = (live, line)
            session.run(
                run,
                "config",
                commands.write_env(session.paths, stage.app.env_file, session.token, live, line),
                stdin=io.BytesIO(env.render()),
            )
            del sent[run.name]
            written(run, live, f"({len(env.values)} keys, sha256 {env.digest[:12]})")

        def written(run: HostRun, live: int, said: str) -> None:
            run.locked, run.result = False, "ok"
            run.maintained = Maintained(release=live)
            out.line(run.name, "config", f"{stage.app.env_file} of release {live} written {said}")

        # the restart sees what a deploy's does (DEPLOY_APP: the recipe's goes through systemd
        # when `deployer setup` installed the app's unit), in the live release
        ctx = hooks.HookContext(
            stage=stage.name, app=stage.app.name, deploy_to=stage.app.deploy_to, step="config", session=session
        )

        def restart_one(run: HostRun, command: str) -> None:
            live = host_state(run).current
            session.in_release(run, "restart", live, command, replace(ctx, release=live).env(run.host))
            restarted.append(run.name)

        try:
            lease.lock_all(session)
            session.must("config", write, failed="config push failed", undo=True)
            restart = stage.pipeline.restart
            command = restart.command
            if command:
                live = [r for r in session.runs if r.maintained is not None and r.maintained.release is not None]
                session.must(
                    "restart",
                    lambda r: restart_one(r, command),
                    hooks.with_roles(restart.roles, live),
                    failed="config written, but restart failed",
                )
            return session.runs
        except KeyboardInterrupt as exc:
            with no_interrupts():
                session.fleet.cancel.clear()
                how = f"interrupted ({signals.describe(exc)})"

                def settle(run: HostRun) -> None:
                    live, line = sent[run.name]
                    cut = session.ledger(run, "interrupted", release=live, error=how)
                    script = commands.config_cut(
                        session.paths, session.token, live, envs[run.name].digest, done=line, cut=cut
                    )
                    result = session.run(run, "config", lock.unleased(script), timeout=60, leased=False)
                    run.locked = False
                    if result.field("written") == "1":
                        written(run, live, "(its answer cut off)")

                session.fleet.each("abort", settle, [r for r in session.runs if r.name in sent])
                failed = session.interrupted(exc, undone=_config_undone(session, restarted))
            raise failed from None


def _config_undone(session: Session, restarted: list[str]) -> str:
    """What an interrupted config push leaves: hosts written (and whether restarted), the others."""
    written = [r.name for r in session.runs if r.maintained is not None]
    rest = "hosts not yet written keep their env file"
    if not written:
        return rest
    said = f"env written on {', '.join(written)}"
    restart = session.stage.pipeline.restart
    due = {r.name for r in hooks.with_roles(restart.roles, session.runs)}
    unrestarted = [name for name in written if name in due and name not in restarted]
    if restart.command and unrestarted:
        again = command_line(f"config.push --stage {session.stage.name}")
        said += f"; not restarted on {', '.join(unrestarted)}: run `{again}` to write and restart"
    return f"{said}; {rest}" if len(written) < len(session.runs) else said


def diff_config(
    stage: Stage, hosts: tuple[Host, ...], out: Output, parallel: int = 10, config_dir: str = "."
) -> list[dict[str, str]]:
    """Keys that differ between each host's env file and what would be written (secrets masked)."""
    envs = envfile.resolve(hosts, config_dir)
    rows: list[dict[str, str]] = []
    with Session(stage, hosts, out, parallel, action="config") as session:

        def read(run: HostRun) -> None:
            result = session.run(run, "inspect", commands.read_env(session.paths, stage.app.env_file))
            want = envs.get(run.name, envfile.HostEnv({}, frozenset()))
            for key, change, old, new in envfile.diff(envfile.parse(result.stdout), want):
                rows.append({"host": run.name, "key": key, "change": change, "on host": old, "would write": new})
            run.result = "ok"

        session.must("inspect", read, failed="cannot read the env file")
    order = {h.name: i for i, h in enumerate(hosts)}
    return sorted(rows, key=lambda r: (order[r["host"]], r["key"]))

"""The invoke tasks: `inv --list` in the repo and the `deployer` console script share this collection.

Each task: load config → call one flow → print a table. Errors become one line and an exit code
at the boundary every task has (see command.py); nothing below prints a traceback for a known failure.
"""

from __future__ import annotations

import threading
from pathlib import Path

from invoke import Collection

from deployer.artifact.choice import build_head, checked, named, transfer_of
from deployer.artifact.store import LocalStore
from deployer.cli.analysis_tasks import TASKS as ANALYSIS_TASKS
from deployer.cli.command import (
    command,
    lock_wait_seconds,
    parallelism,
    seconds_value,
    stage_target,
    text_output,
    whole_number,
)
from deployer.cli.ops_tasks import TASKS as OPS_TASKS
from deployer.cli.store_tasks import TASKS as STORE_TASKS
from deployer.config import load as config_mod
from deployer.engine import maintenance, provenance
from deployer.engine.deploy import deploy as run_deploy
from deployer.engine.pull import open_store, pull_plan
from deployer.engine.rollback import rollback as run_rollback
from deployer.errors import FAILED, UsageError, command_line
from deployer.plan.batches import Strategy
from deployer.plan.host_state import NAME
from deployer.plan.options import Options
from deployer.report import document
from deployer.report import rows as report
from deployer.report.document import Outcome
from deployer.report.output import Output

STORE_HEAD_START = 2.0  # seconds a pull deploy waits for its store client before it connects to hosts


@command(allow_dirty="Pack the working tree even if it has uncommitted changes (version ends in -dirty).")
def build(c, config=None, allow_dirty=False):
    """Build the artifact for HEAD: artifacts/<name>-<version>.tar.gz + .json (reproducible)."""
    cfg = config_mod.load(config)
    out = Output()
    art = build_head(cfg, allow_dirty, out.say)
    for line in (
        f"built {art.path}",
        f"  version {art.version}",
        f"  git sha {art.git_sha}",
        f"  sha256  {art.sha256}",
        f"  size    {art.size} bytes, {art.meta.get('file_count', '?')} files",
    ):
        out.say(line)


@command()
def check(c, stage=None, config=None, hosts=None, roles=None, parallel=10, json=False):
    """Connect to every host and check it can take a deploy."""
    t = stage_target(config, stage, hosts, roles, json)
    st, out = t.stage, t.out
    runs = maintenance.inspect(st, t.hosts, out, parallelism(parallel), sudo=True)
    records = document.check_records(runs)
    if not json:
        out.table(report.check_rows(records))
    bad = report.check_failures(runs)
    return Outcome(records, FAILED if bad else 0, "check failed: " + "; ".join(bad) if bad else None, st.name)


@command(
    artifact="Deploy this .tar.gz (with its .json) instead of building HEAD.",
    version="Deploy this stored artifact (version, or a sha256/git sha prefix; see `artifacts`).",
    force="Deploy past the promotion gate (needs --reason; recorded in the ledger).",
    reason="Why --force was needed.",
    allow_dirty="When building, allow a dirty work tree.",
    strategy="all: every host switches together; rolling; or canary.",
    batch="rolling: hosts switched per batch.",
    pause="rolling: seconds to wait between batches.",
    canary="canary: hosts switched and verified first (with [canary] steps: a share of requests).",
    bake="canary: seconds to keep re-checking the canaries' health before the rest (at each step).",
    max_fail="Hosts allowed to fail before the switch; they are skipped and the exit code is 5.",
    dry_run="Print the plan (hosts, batches, release number, every remote command); change nothing.",
    transfer="push: send the artifact over SSH; pull: hosts fetch it from [store] (default: [store] transfer).",
    full="Send the whole artifact to every host, never a delta against the live release.",
)
def deploy(
    c,
    stage=None,
    config=None,
    artifact=None,
    version=None,
    hosts=None,
    roles=None,
    parallel=10,
    allow_dirty=False,
    strategy="all",
    batch=1,
    pause=0.0,
    canary=1,
    bake=0.0,
    max_fail=0,
    dry_run=False,
    force=False,
    reason="",
    json=False,
    lock_wait=0.0,
    transfer=None,
    full=False,
):
    """Deploy: build (or take) the artifact, prepare every host, switch, verify, clean up."""
    t = stage_target(config, stage, hosts, roles, json)
    cfg, st, out = t.cfg, t.stage, t.out
    plan = Strategy(
        strategy,
        batch=whole_number(batch, "batch"),
        pause=seconds_value(pause, "pause"),
        canary=whole_number(canary, "canary"),
        bake=seconds_value(bake, "bake"),
    )
    options = Options(
        plan,
        max_fail=whole_number(max_fail, "max-fail"),
        parallel=parallelism(parallel),
        dry_run=dry_run,
        forced=force,
        reason=reason or "",
        lock_wait=lock_wait_seconds(lock_wait),
        full=bool(full),
        shares=cfg.canary if plan.name == "canary" and cfg.canary.steps else None,  # a share of requests
        analysis=cfg.analysis,
    )
    pull = transfer_of(cfg, transfer) == "pull"
    opening = open_store(cfg) if pull else None
    loaded = named(cfg, artifact, allow_dirty, out.say, version, local_only=False)
    # with pull, the upload starts now, while the members and the gate are checked: only the
    # .json, which makes it a listed artifact, waits for both
    approved = threading.Event()
    pulling = pull_plan(cfg, loaded, out, dry_run, opening, approved) if pull else None
    try:
        art = checked(loaded, st.app.shared_dirs + st.app.shared_files)
        provenance.check_gate(cfg, st, art, out, force=force, reason=options.reason)
    except BaseException:
        if pulling is not None:
            pulling.cancel()  # refused: the store gets no .json (a tarball sent so far stays unlisted)
        raise
    approved.set()
    if opening is not None:
        # the upload is the long pole: it starts before the hosts' key exchanges take the CPU
        opening.wait(STORE_HEAD_START)
    if dry_run:
        out.say(
            f"DRY RUN: nothing on the hosts will change. Plan for {art.version} ({art.sha256[:12]}) "
            f"to {st.name}, strategy {plan.name}"
        )
    try:
        runs = run_deploy(st, t.hosts, art, out, options, cfg.path.parent, pulling)
    finally:
        if pulling is not None:
            pulling.cancel()  # a run that failed before prepare leaves no upload running
    records = document.run_records(runs)
    rows = report.run_rows(records)
    if dry_run:
        out.say(f"DRY RUN complete: release {runs[0].release} would go to {', '.join(r.name for r in runs)}")
    elif not json:
        out.table(rows, report.run_headers(rows))
        out.say(f"deployed {art.version} to {len(runs)} host(s) of {st.name} as release {runs[0].release}")
    return Outcome(
        records,
        0,
        None,
        st.name,
        {
            "version": art.version,
            "sha256": art.sha256,
            "git_sha": art.git_sha or None,
            "release": runs[0].release if runs else None,
            "dry_run": dry_run,
        },
    )


@command(
    to="Release to switch to: a number, or the name of another tool's release (default: the newest "
    "complete one before current; from our first release, the release it replaced).",
    with_migrations="Run [migrate] rollback_command for releases being rolled back that ran migrations.",
    ignore_migrations="Roll back across migrations without running down migrations.",
)
def rollback(
    c,
    stage=None,
    config=None,
    to=None,
    hosts=None,
    roles=None,
    parallel=10,
    with_migrations=False,
    ignore_migrations=False,
    json=False,
    lock_wait=0.0,
):
    """Switch current back to an earlier release on every host (no upload, no extraction)."""
    t = stage_target(config, stage, hosts, roles, json)
    target = None
    if to is not None:
        if not NAME.match(str(to)):
            raise UsageError(f"--to expects a release number or a foreign release's name, got {to!r}")
        target = str(to)
    if with_migrations and ignore_migrations:
        raise UsageError("--with-migrations and --ignore-migrations exclude each other")
    migrations = "run" if with_migrations else "ignore" if ignore_migrations else "refuse"
    runs = run_rollback(
        t.stage,
        t.hosts,
        t.out,
        target,
        parallelism(parallel),
        migrations,
        t.cfg.path.parent,
        lock_wait_seconds(lock_wait),
    )
    records = document.run_records(runs)
    if not json:
        rows = report.run_rows(records)
        t.out.table(rows, report.run_headers(rows))
    return Outcome(records, 0, None, t.stage.name)


def _read_only(config, stage, hosts, roles, parallel, json, rows_of, records_of) -> Outcome:
    t = stage_target(config, stage, hosts, roles, json)
    runs = maintenance.inspect(t.stage, t.hosts, t.out, parallelism(parallel))
    records = records_of(runs)
    if not json:
        t.out.table(rows_of(records))
    return Outcome(records, *_unreachable([(r.name, r.error) for r in runs if r.state is None]), t.stage.name)


def _unreachable(failed: list[tuple[str, str]]) -> tuple[int, str | None]:
    """(exit code, error) for the hosts that could not be read."""
    return (FAILED, "unreachable: " + "; ".join(f"{name}: {error}" for name, error in failed)) if failed else (0, None)


@command(
    all="Every stage, in declared order, in one table (marks stages whose hosts disagree).",
    drift="With --all: also check every host's files against its release manifest.",
)
def status(c, stage=None, config=None, hosts=None, roles=None, parallel=10, all=False, drift=False, json=False):
    """What runs where: current release, version, git sha, who deployed it, lock."""
    if not all:
        return _read_only(config, stage, hosts, roles, parallel, json, report.status_rows, document.status_records)
    cfg = config_mod.load(config)
    out = text_output(json)
    rows, records, unreachable = [], [], []
    for st in [cfg.stage(name) for name in cfg.stages]:
        runs = maintenance.inspect(st, st.hosts, out, parallelism(parallel))
        drifted = {r.name: r.result for r in provenance.drift(st, out, parallelism(parallel))} if drift else {}
        stage_records = document.status_records(runs)
        stage_rows = report.status_rows(stage_records)
        versions = {r.get("version") for r in stage_rows}
        for row, record in zip(stage_rows, stage_records, strict=True):
            row = {"stage": st.name, **row}
            row.pop("lock", None)
            if drift:
                row["drift"] = drifted.get(row["host"], "?")
                record["drift"] = row["drift"].lower().replace(" ", "_")
            row["agree"] = "" if len(versions) == 1 else "DIFFERS"
            record["agree"] = len(versions) == 1
            rows.append(row)
            records.append({"stage": st.name, **record})
        unreachable += [(f"{st.name}/{r.name}", r.error) for r in runs if r.state is None]
    if not json:
        out.table(rows)
    return Outcome(records, *_unreachable(unreachable), None)


@command(json="Print JSON instead of a table.")
def artifacts(c, config=None, json=False):
    """Stored artifacts: version, git sha, sha256, size, built."""
    cfg = config_mod.load(config)
    records = document.artifact_records(LocalStore(cfg.build.output).list())
    if not json:
        out = Output()
        out.table(report.artifact_rows(records)) if records else out.say(f"no artifacts in {cfg.build.output}")
    return Outcome([], 0, None, None, {"artifacts": records})


@command(
    since="Only entries at or after this UTC date/time (2026-01-31 or 2026-01-31T12:00:00Z).", host="Only this host."
)
def audit(c, stage=None, config=None, since=None, host=None, json=False):
    """The ledger of every deploy, rollback, failure, unlock and cleanup, merged across hosts."""
    t = stage_target(config, stage, json=json)
    st, out = t.stage, t.out
    entries = provenance.audit(st, out, since=since, host=host)
    if not json:
        out.table(provenance.audit_rows(entries)) if entries else out.say("no ledger entries")
    return Outcome([], 0, None, st.name, {"entries": entries})


@command()
def verify(c, stage=None, config=None, parallel=10, json=False):
    """Check each host's live files against its release's manifest: modified, added, removed."""
    t = stage_target(config, stage, json=json)
    st, out = t.stage, t.out
    runs = provenance.drift(st, out, parallelism(parallel))
    records = document.drift_records(runs)
    rows = report.drift_rows(records)
    if not json:
        out.table(rows)
    bad = [r for r in rows if r["state"] != "ok"]
    error = "drift or failure on " + ", ".join(f"{r['host']} ({r['state']})" for r in bad) if bad else None
    return Outcome(records, FAILED if bad else 0, error, st.name)


@command()
def releases(c, stage=None, config=None, hosts=None, roles=None, parallel=10, json=False):
    """Every release on every host, with its state and the current marker."""
    return _read_only(config, stage, hosts, roles, parallel, json, report.releases_rows, document.releases_records)


@command(foreign="Also remove releases another deploy tool made (never the live one or its predecessor).")
def cleanup(c, stage=None, config=None, hosts=None, roles=None, parallel=10, foreign=False, lock_wait=0.0):
    """Remove old, failed and leftover releases beyond keep_releases (never current or its predecessor)."""
    t = stage_target(config, stage, hosts, roles)
    maintenance.cleanup(
        t.stage, t.hosts, t.out, parallelism(parallel), foreign=foreign, lock_wait=lock_wait_seconds(lock_wait)
    )


@command(yes="Required: confirms you know the lock holder is gone.")
def unlock(c, stage=None, config=None, hosts=None, roles=None, yes=False):
    """Remove a stale deploy lock by force (shows who held it)."""
    if not yes:
        raise UsageError("unlock removes another run's lock by force: add --yes once you know it is gone")
    t = stage_target(config, stage, hosts, roles)
    maintenance.unlock(t.stage, t.hosts, t.out)


@command(
    name="up",
    hosts="How many hosts.",
    config="Where to write the config.",
    source="App to deploy (default: the bundled sample_app).",
    systemd="Production-shaped hosts: systemd runs sshd and nginx; deploy has no sudo.",
)
def sandbox_up(c, hosts=3, config="hosts.sandbox.toml", source=None, systemd=False):
    """Start throwaway SSH hosts in containers and write a ready config for them."""
    from deployer.sandbox import deploy_files, instance

    n = int(hosts)
    if n < 1:
        raise UsageError(f"--hosts must be at least 1, got {n}")
    src = str(Path(source).resolve()) if source else str(deploy_files.sample_repo(Path(".sandbox")))
    started = instance.up(n, Path(".sandbox"), Path(config), source=src, systemd=systemd)
    Output().say(
        f"{len(started)} sandbox host(s) up; config written to {config}\n"
        f"next: {command_line('deploy --config ' + config)}",
        multiline=True,
    )


@command(name="down")
def sandbox_down(c):
    """Stop and remove the hosts sandbox.up started from this directory (no other checkout's or user's)."""
    from deployer.sandbox import instance

    removed = instance.down(Path(".sandbox"))
    Output().say(f"{removed} sandbox host(s) removed")


@command(name="push")
def config_push(c, stage=None, config=None, hosts=None, roles=None, parallel=10, lock_wait=0.0):
    """Write the stage's [env] to each host's env file (no new artifact), then run the restart."""
    t = stage_target(config, stage, hosts, roles)
    runs = maintenance.push_config(
        t.stage, t.hosts, t.out, parallelism(parallel), str(t.cfg.path.parent), lock_wait_seconds(lock_wait)
    )
    t.out.say(f"config pushed to {len(runs)} host(s) of {t.stage.name}")


@command(name="diff")
def config_diff(c, stage=None, config=None, hosts=None, roles=None, parallel=10, json=False):
    """Keys that differ between the hosts' env files and what push would write (secrets masked)."""
    t = stage_target(config, stage, hosts, roles, json)
    rows = maintenance.diff_config(t.stage, t.hosts, t.out, parallelism(parallel), str(t.cfg.path.parent))
    if not json:
        t.out.table(rows) if rows else t.out.say("no differences")
    return Outcome(document.diff_records(t.hosts, rows), 0, None, t.stage.name)


@command(name="keys")
def config_keys(c):
    """Every hosts.toml key: its type, default and what it does (needs no hosts.toml)."""
    from deployer.config import schema

    Output().table(schema.rows())


@command(name="hosts")
def hosts_(c, stage=None, config=None, json=False):
    """The stage's resolved inventory (static hosts or hosts_command), with roles and env keys."""
    t = stage_target(config, stage, json=json)
    records = document.inventory_records(t.stage.hosts)
    if not json:
        t.out.table(report.inventory_rows(records))
    return Outcome(records, 0, None, t.stage.name)


@command(config="Accepted for symmetry: the agent serves every config of this user, all are closed.")
def disconnect(c, config=None):
    """Close the connections `ssh.persist` keeps open, for every host (the connection agent exits)."""
    from deployer.ssh.agent_client import stop_agents

    Output().say(f"closed {stop_agents()} kept-open connection(s)")


sandbox_ns = Collection("sandbox", sandbox_up, sandbox_down)
config_ns = Collection("config", config_push, config_diff, config_keys)
ns = Collection(
    build,
    check,
    deploy,
    rollback,
    status,
    releases,
    cleanup,
    unlock,
    artifacts,
    audit,
    verify,
    hosts_,
    disconnect,
    *OPS_TASKS,
    *STORE_TASKS,
    *ANALYSIS_TASKS,
    sandbox_ns,
    config_ns,
)

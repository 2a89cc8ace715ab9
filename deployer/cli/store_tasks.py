"""`publish`, and what deploy needs from the store: an artifact by version, and a pull plan."""

from __future__ import annotations

import threading

from invoke import Task

from deployer.cli.command import command, text_output
from deployer.config import load as config_mod
from deployer.config.settings import Config
from deployer.engine import faults
from deployer.engine.pull import Background, Pull
from deployer.errors import UsageError
from deployer.report.document import Outcome

TRANSFERS = ("push", "pull")


def store_of(cfg: Config):
    """The S3 store of hosts.toml's [store]; without one, bad input."""
    from deployer.artifact.s3store import S3Store

    if cfg.store is None:
        raise UsageError(
            f'{cfg.path}: no [store] table: say where artifacts are published (url = "s3://bucket/prefix")'
        )
    return S3Store(cfg.store, cfg.build.output)


def show_progress(store, out) -> None:
    """A line when the store's upload of a tarball starts, then its bytes and rate as they go (as
    for an upload to a host): a store that stalls shows where."""
    from deployer.report.output import UploadProgress, human_bytes

    def started(name: str, size: int) -> UploadProgress:
        out.line("store", "publish", f"uploading {name} ({human_bytes(size)}) to {store.where}")
        return UploadProgress(out, "store", size)

    store.progress = started


def transfer_of(cfg: Config, given: str | None) -> str:
    """--transfer, else [store] transfer, else push."""
    if given is not None and given not in TRANSFERS:
        raise UsageError(f"--transfer expects push or pull, got {given!r}")
    chosen = given or (cfg.store.transfer if cfg.store else "push")
    if chosen == "pull" and cfg.store is None:
        raise UsageError("--transfer pull needs a [store] table in hosts.toml")
    return chosen


def open_store(cfg: Config) -> Background:
    """The S3 store made in the background: boto3's import and client set-up stay off the run's
    critical path."""
    return Background(lambda: store_of(cfg), "store")


def pull_plan(
    cfg: Config,
    art,
    out,
    dry_run: bool = False,
    opening: Background | None = None,
    approved: threading.Event | None = None,
) -> Pull:
    """The hosts' plan, and the artifact published in the background if the store lacks it (a
    HEAD per object first). The deploy waits for the tarball right before prepare (hosts fetch it
    while its .json goes up), and for the whole publish once prepared, saying what went. With
    `approved`, the .json (what lists the artifact) goes only once it is set (the artifact's
    checks passed); a `cancel` meanwhile leaves it out."""
    assert cfg.store is not None
    opening = opening or open_store(cfg)
    holder: list = []
    signing: list[Background] = []
    stopped = threading.Event()
    stored = threading.Event()  # the tarball is in the store: hosts may fetch it
    settled = threading.Event()  # that, or the publish ended without it

    def tarball_in() -> None:
        stored.set()
        settled.set()

    def publish():
        try:
            store = opening.result()
            show_progress(store, out)
            holder.append(store)
            signing.append(Background(store.signer, "signer"))  # made while the tarball goes up
            if dry_run or stopped.is_set():
                return store, []

            def before_json() -> None:
                faults.pause_before("publish-json")
                if approved is not None:
                    approved.wait()  # a cancel meanwhile reaches the store: put then sends no .json

            return store, store.put(art, before_json=before_json, stored=tarball_in)
        finally:
            settled.set()

    job = Background(publish, "publish")

    def fetchable():
        settled.wait()
        if not stored.is_set():
            job.result()  # raises what stopped it (a dry run or a cancel returns)
        signing[0].result()
        store = holder[0]
        return lambda: store.presign(art)

    def published() -> None:
        store, uploaded = job.result()
        if not dry_run:
            out.say(
                f"published {art.version} to {store.where}" if uploaded else f"{art.version} already in {store.where}"
            )

    def cancel() -> None:
        stopped.set()
        if holder:
            holder[0].cancel()
        if approved is not None:
            approved.set()  # a put waiting for approval wakes, finds the store cancelled, sends no .json

    def copy_problem() -> str | None:
        return holder[0].mend_copy(art) if holder else None

    return Pull(
        endpoint=cfg.store.hosts_reach,
        fetchable=fetchable,
        published=published,
        cancel=cancel,
        copy_problem=copy_problem,
        stall=cfg.store.stall_timeout,
    )


@command(
    artifact="Publish this .tar.gz (with its .json) instead of building HEAD.",
    version="Publish this artifact of the local store (version, or a sha256/git sha prefix).",
    allow_dirty="When building, allow a dirty work tree.",
)
def publish(c, config=None, artifact=None, version=None, allow_dirty=False, json=False):
    """Upload the artifact and its .json to [store] (what is there already is skipped); any machine
    with the store's credentials can then `deploy --version V`."""
    from deployer.cli.tasks import _artifact

    cfg = config_mod.load(config)
    out = text_output(json)
    store = store_of(cfg)
    show_progress(store, out)
    art = _artifact(cfg, artifact, allow_dirty, out, version, local_only=True)
    uploaded = store.put(art)
    for name in store.replaced:
        out.say(f"the store's {name} was not this artifact's: replaced")
    if uploaded:
        out.say(f"published {art.version} ({art.sha256[:12]}) to {store.where}: {', '.join(uploaded)}")
    else:
        out.say(f"{art.version} ({art.sha256[:12]}) is already in {store.where}: nothing uploaded")
    return Outcome([], 0, None, None, {"version": art.version, "sha256": art.sha256, "uploaded": uploaded})


TASKS: tuple[Task, ...] = (publish,)

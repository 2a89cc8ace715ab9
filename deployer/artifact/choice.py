"""Which artifact a run deploys or publishes: a fresh build of the configured source, a file
named on the command line, or a version of the local store (else of [store]); its members checked
before anything uses it. And where it goes: pushed over SSH, or pulled by the hosts from [store]."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from deployer.artifact.load import Artifact
from deployer.config.settings import Config
from deployer.errors import ArtifactError, UsageError

if TYPE_CHECKING:
    from deployer.artifact.s3store import S3Store

Log = Callable[[str], None]
TRANSFERS = ("push", "pull")


def build_head(cfg: Config, allow_dirty: bool, log: Log) -> Artifact:
    """The artifact of the configured source's HEAD (or work tree), built by the [build] settings."""
    from deployer.artifact.build import build_artifact

    return build_artifact(
        cfg.build.source,
        cfg.app.name,
        cfg.build.output,
        command=cfg.build.command,
        include=cfg.build.include,
        allow_dirty=allow_dirty,
        log=log,
    )


def chosen(
    cfg: Config,
    artifact_path: str | None,
    allow_dirty: bool,
    log: Log,
    version: str | None = None,
    shared: tuple[str, ...] = (),
    local_only: bool = False,
) -> Artifact:
    """The artifact to deploy, its members checked (see `named` and `checked`)."""
    return checked(named(cfg, artifact_path, allow_dirty, log, version, local_only), shared)


def named(
    cfg: Config, artifact_path: str | None, allow_dirty: bool, log: Log, version: str | None, local_only: bool
) -> Artifact:
    """The artifact named (--artifact, --version, else a fresh build), not checked yet. A --version
    the local store lacks comes from [store], when there is one (unless local_only)."""
    from deployer.artifact.load import load_artifact
    from deployer.artifact.store import LocalStore

    if artifact_path and version:
        raise UsageError("--artifact and --version exclude each other")
    if version:
        try:
            return LocalStore(cfg.build.output).get(version)
        except UsageError:
            if cfg.store is None or local_only:
                raise
            got = store_of(cfg).get(version)
            if not cfg.store.trusted_keys:
                log(
                    f"warning: {got.version} taken from the store unverified ([store] trusted_keys is not set): "
                    "whoever can write to the bucket chooses the code"
                )
            return got
    if artifact_path:
        return load_artifact(Path(artifact_path))
    return build_head(cfg, allow_dirty, log)


def checked(art: Artifact, shared: tuple[str, ...]) -> Artifact:
    """art with its members checked (a fresh build's when it was packed), its unpacked size the
    one that check measured and its git sha the one its REVISION holds, never a sidecar's claim
    (a .json naming another commit or version is refused)."""
    from deployer.artifact.load import revision_problem
    from deployer.artifact.members import check_members

    found = check_members(art.path, art.sha256, shared)
    problem = revision_problem(art.meta, found.revision)
    if problem:
        raise ArtifactError(f"refusing {art.path.name}: its .json {problem}")
    meta = {**art.meta, "unpacked_size": found.unpacked_size, "git_sha": found.revision}
    return dataclasses.replace(art, meta=meta)


def store_of(cfg: Config) -> S3Store:
    """The S3 store of hosts.toml's [store]; without one, bad input."""
    from deployer.artifact.s3store import S3Store

    if cfg.store is None:
        raise UsageError(
            f'{cfg.path}: no [store] table: say where artifacts are published (url = "s3://bucket/prefix")'
        )
    return S3Store(cfg.store, cfg.build.output)


def transfer_of(cfg: Config, given: str | None) -> str:
    """--transfer, else [store] transfer, else push."""
    if given is not None and given not in TRANSFERS:
        raise UsageError(f"--transfer expects push or pull, got {given!r}")
    picked = given or (cfg.store.transfer if cfg.store else "push")
    if picked == "pull" and cfg.store is None:
        raise UsageError("--transfer pull needs a [store] table in hosts.toml")
    return picked

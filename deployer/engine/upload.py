"""The deploy's check and prepare steps on one host: is there room, then the artifact (uploaded,
or taken from the host's cache) unpacked as releases/N with its env file and shared links."""

from __future__ import annotations

import functools
import io
import json
from typing import TYPE_CHECKING, BinaryIO

from deployer.artifact.load import Artifact
from deployer.config.envfile import HostEnv
from deployer.config.settings import Stage
from deployer.engine import base_manifest
from deployer.engine.delta import Delta, Deltas
from deployer.engine.fleet import HostRun, host_state
from deployer.engine.session import Session, utc_now, who
from deployer.errors import HostError
from deployer.plan import releases as planning
from deployer.plan.host_state import HostState
from deployer.remote import commands
from deployer.remote import delta as remote_delta
from deployer.report.output import UploadProgress, human_bytes
from deployer.ssh.types import Stdin

if TYPE_CHECKING:  # the pipeline runs the prepare step; the step reads the pipeline's run
    from deployer.engine.deploy import Pipeline

SHA_MISMATCH = "artifact sha256 mismatch on host"  # what prepare_fetch.sh says of a wrong artifact


def check_host(run: HostRun, artifact: Artifact) -> None:
    """Tools the deploy needs, and room for the artifact and its unpacked tree."""
    state = host_state(run)
    problem = state.tools_problem()
    if problem:
        raise HostError(run.name, "check", problem)
    need = int((artifact.meta.get("unpacked_size") or 3 * artifact.size) * 1.1)
    if not state.cached:
        need += artifact.size
    if state.free_kb is not None and state.free_kb * 1024 < need:
        raise HostError(run.name, "check", f"not enough free disk: need {need // 1024} KB, have {state.free_kb} KB")


def release_json(session: Session, artifact: Artifact, number: int, run: HostRun) -> str:
    stage = session.stage
    return json.dumps(
        {
            "release": number,
            "app": stage.app.name,
            "stage": stage.name,
            "version": artifact.version,
            "git_sha": artifact.git_sha,
            "artifact_sha256": artifact.sha256,
            "manifest_sha256": artifact.meta.get("manifest_sha256", ""),
            "deployed_by": who(),
            "deployed_at": utc_now(),
            "previous": run.deploy_record.previous,
            "deploy_id": session.token,
        },
        sort_keys=True,
    )


def link_source(stage: Stage, state: HostState, artifact: Artifact) -> commands.LinkSource | None:
    manifest = artifact.meta.get("manifest_sha256")
    if not (stage.app.hardlink_releases and manifest):
        return None
    number = planning.link_source(state, artifact.sha256)
    return commands.LinkSource(number, manifest) if number else None


def prepare_for(d: Pipeline, run: HostRun) -> None:
    """The deploy's prepare step on one host (with pull: a wrong sha256 may be the store's copy)."""
    try:
        prepare(
            d.session,
            run,
            d.artifact,
            d.release,
            d.envs[run.name] if d.envs else None,
            (d.pull.endpoint, d.url, d.pull.stall) if d.pull else None,
            None if d.options.full else d.deltas,
        )
    except HostError as exc:
        wrong = d.pull.store_copy_problem() if d.pull and SHA_MISMATCH in exc.message else None
        if wrong:
            raise HostError(run.name, "prepare", wrong) from None
        raise


def prepare(
    session: Session,
    run: HostRun,
    artifact: Artifact,
    number: int,
    env_file: HostEnv | None,
    pull: tuple[str, str, int] | None = None,
    deltas: Deltas | None = None,
) -> None:
    """releases/N on one host: from the host's cache (linked from a release with the same files,
    or extracted), else from a delta against its live release (with deltas, pushing), else
    uploaded (extracted as it arrives on a slow link), or with pull (the store's endpoint as hosts
    reach it, a presigned URL, its stall_timeout) fetched by the host from the store."""
    app, state, out = session.stage.app, host_state(run), session.out
    upload = not state.cached
    ask = functools.partial(base_manifest.ask, session)
    made = deltas.for_host(run, ask) if upload and deltas is not None and not pull else None
    if made is not None:
        try:
            return prepare_delta(session, run, artifact, number, env_file, made)
        except HostError as exc:
            if remote_delta.MARK not in str(exc):
                raise
            why = str(exc).split(remote_delta.MARK + ": ", 1)[-1].strip().splitlines()[0]
            out.line(run.name, "prepare", f"delta not usable ({why}): sending the full artifact")
    fetch_from = pull[0] if upload and pull else None
    stream = upload and not pull and run.conn is not None and planning.stream_upload(run.conn.rtt())
    env = env_file.render() if env_file is not None else None
    script = prepare_script(
        session,
        run,
        artifact,
        number,
        env,
        upload=upload,
        link_from=None if upload else link_source(session.stage, state, artifact),
        stream=stream,
        fetch_from=fetch_from,
        fetch_stall=pull[2] if pull else 0,
    )
    note = f"; its own {app.env_file}" if env is not None else ""
    if upload and pull:
        session.run(run, "prepare", script, stdin=io.BytesIO((env or b"") + pull[1].encode() + b"\n"))
        out.line(run.name, "prepare", f"fetched from the store, sha256 checked; release {number} ready{note}")
        return
    if not upload:
        result = session.run(run, "prepare", script, stdin=io.BytesIO(env) if env is not None else None)
        linked = result.field("linked")
        # a dry run's printed command reports nothing: the release is "ready"
        how = f"linked from release {linked}" if linked else "extracted" if result.field("prepared") else "ready"
        out.line(run.name, "prepare", f"artifact already on host, release {number} {how}{note}")
        return
    progress = UploadProgress(out, run.name, artifact.size)
    with open(artifact.path, "rb") as fh:
        data: Stdin = ChainReader([io.BytesIO(env), fh]) if env is not None else fh
        session.run(run, "prepare", script, stdin=data, progress=progress)
    how = ", extracted as it arrived" if stream else ""
    out.line(run.name, "prepare", f"full artifact {progress.done()}{how}; release {number} ready{note}")


def prepare_script(
    session: Session,
    run: HostRun,
    artifact: Artifact,
    number: int,
    env: bytes | None,
    *,
    upload: bool,
    link_from: commands.LinkSource | None = None,
    stream: bool = False,
    fetch_from: str | None = None,
    fetch_stall: int = 0,
    delta: remote_delta.Spec | None = None,
) -> str:
    """The prepare command for this host: the stage's layout and env, and how the artifact arrives
    (fetch_stall: [store] stall_timeout, with fetch_from)."""
    app = session.stage.app
    return commands.prepare(
        session.paths,
        number,
        session.token,
        artifact.sha256,
        release_json=release_json(session, artifact, number, run),
        shared_dirs=app.shared_dirs,
        shared_files=app.shared_files,
        env_file=app.env_file if env is not None else None,
        env_size=len(env or b""),
        generated=app.generated,
        upload=upload,
        link_from=link_from,
        stream=stream,
        fetch_from=fetch_from,
        fetch_stall=fetch_stall,
        fetch_max=planning.fetch_max_time(artifact.size, fetch_stall),
        delta=delta,
    )


def prepare_delta(
    session: Session, run: HostRun, artifact: Artifact, number: int, env_file: HostEnv | None, made: Delta
) -> None:
    """Only what the live release lacks goes; the host builds the tree and proves it the
    artifact's (remote/delta.py), else HostError with remote_delta.MARK."""
    app, out = session.stage.app, session.out
    env = env_file.render() if env_file is not None else None
    script = prepare_script(session, run, artifact, number, env, upload=True, delta=made.spec)
    progress = UploadProgress(out, run.name, made.size)
    with open(made.path, "rb") as fh:
        data: Stdin = ChainReader([io.BytesIO(env), fh]) if env is not None else fh
        session.run(run, "prepare", script, stdin=data, progress=progress)
    note = f"; its own {app.env_file}" if env is not None else ""
    out.line(
        run.name,
        "prepare",
        f"delta {human_bytes(made.size)} against release {made.spec.base} "
        f"({made.sent} files sent, {made.reused} copied on the host), tree verified; "
        f"release {number} ready{note}",
    )


class ChainReader:
    """Several binary streams read as one (env file bytes, then the artifact)."""

    def __init__(self, streams: list[BinaryIO]):
        self.streams = list(streams)

    def read(self, n: int = -1) -> bytes:
        while self.streams:
            data = self.streams[0].read(n)
            if data:
                return data
            self.streams.pop(0)
        return b""

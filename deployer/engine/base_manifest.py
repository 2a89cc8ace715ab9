"""A delta's base manifest asked of a host: the fallback when the local artifact store has no
.json for the artifact a host runs (Deltas.for_host asks once per base, of the first host on it).

One command prints releases/N/.deployer/manifest.sha256, kept whole (the transport keeps only a
tail otherwise); it is used only if its sha256 is the `manifest_sha256` that release recorded in
its release.json. Anything else (no digest recorded, a file edited by hand, a lost link, no
answer within TIMEOUT: the other hosts on that base wait for it): that base gets no delta, said
in one line, and its hosts get the full artifact."""

from __future__ import annotations

import hashlib

from deployer.artifact import delta as artifact_delta
from deployer.engine.fleet import HostRun
from deployer.engine.session import Session
from deployer.errors import HostError
from deployer.remote import delta as remote_delta
from deployer.ssh.types import WHOLE_OUTPUT_MAX

STEP = "manifest"  # read only: a dry run runs it for real (backend.READ_ONLY_STEPS)
TIMEOUT = 30  # seconds (at most command_timeout): the hosts on this base wait for the answer


class Unusable(Exception):
    """Why a manifest read from a host cannot be a delta's base."""


def recorded_sha(run: HostRun, number: int) -> str:
    """The manifest sha256 releases/N recorded in its release.json, else Unusable."""
    release = run.state.release(number) if run.state is not None else None
    sha = release.meta.get("manifest_sha256") if release is not None else None
    if not (isinstance(sha, str) and len(sha) == 64):
        raise Unusable(f"release {number} recorded no manifest sha256")
    return sha


def accept(text: str, sha: str) -> dict[str, str]:
    """{path: sha256} from the manifest's text (its bytes exact: surrogateescape), if it hashes
    to `sha` and every line is a manifest line; else Unusable."""
    data = text.encode("utf-8", "surrogateescape")
    got = hashlib.sha256(data).hexdigest()
    if got != sha:
        raise Unusable(f"its sha256 {got[:12]} is not the recorded {sha[:12]}: edited on the host?")
    manifest = artifact_delta.parse_manifest(text)
    if artifact_delta.manifest_text(manifest) != data:
        raise Unusable("not a manifest the deployer wrote")
    return manifest


def ask(session: Session, run: HostRun, number: int) -> dict[str, str] | None:
    """releases/N's manifest from this host, checked; None (and one line saying why) when it
    cannot be used. A lost lock is not swallowed: it stops this host as it would any command."""
    locked = run.locked
    try:
        sha = recorded_sha(run, number)
        result = session.run(
            run,
            STEP,
            remote_delta.read_manifest(session.paths, number),
            max_output=WHOLE_OUTPUT_MAX,
            timeout=min(TIMEOUT, run.host.ssh.command_timeout),
        )
        return accept(result.stdout, sha)
    except HostError as exc:
        if locked and not run.locked:
            raise
        why = exc.message
    except Unusable as exc:
        why = str(exc)
    note = f"no delta: release {number}'s manifest from this host is not usable ({why}); sending the full artifact"
    session.out.line(run.name, "prepare", note)
    return None

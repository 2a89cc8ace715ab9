"""Pure decisions: release numbers, rollback targets, what cleanup deletes. No I/O here."""

from __future__ import annotations

from collections.abc import Mapping

from .errors import DeployerError
from .state import HostState


def next_release_number(states: Mapping[str, HostState]) -> int:
    """1 + the highest release number on any target host: the same N everywhere."""
    return 1 + max((s.highest for s in states.values()), default=0)


def rollback_target(state: HostState, to: int | None = None) -> int:
    """The release to roll back to on one host, or DeployerError saying why there is none.

    Default: the newest complete, never-bad, not-rolled-back release older than current.
    """
    current = state.current
    if to is not None:
        release = state.release(to)
        if release is None:
            raise DeployerError(f"release {to} does not exist")
        if not release.complete:
            raise DeployerError(f"release {to} is incomplete")
        if release.bad:
            raise DeployerError(f"release {to} is marked bad")
        if to == current:
            raise DeployerError(f"release {to} is already current")
        if current is not None and to > current and not release.rolled_back:
            raise DeployerError(f"release {to} was never live (left by an interrupted deploy); "
                                "`cleanup` removes it")
        return to
    if current is None:
        raise DeployerError("no current release to roll back from")
    older = [r for r in state.releases if r.number < current and r.usable and not r.rolled_back]
    if not older:
        raise DeployerError(f"no earlier complete release to roll back to (current is {current})")
    return older[-1].number


def link_source(state: HostState, sha256: str) -> int | None:
    """The newest usable release of this artifact on the host, to hard-link a redeploy from."""
    same = [r.number for r in state.releases if r.usable and r.meta.get("artifact_sha256") == sha256]
    return max(same, default=None)


def cleanup(state: HostState, keep: int, current: int | None, previous: int | None = None) -> list[str]:
    """Names under releases/ to delete, by release number (never by mtime).

    Deleted: leftover temp dirs, incomplete and bad releases, never-switched releases newer than
    current (orphans of an interrupted run), then complete releases beyond the newest `keep`.
    Never deleted: current (during a deploy, the release being deployed) and the release it replaced.
    """
    protected = {n for n in (current, previous) if n is not None}
    doomed: list[str] = [name for name in state.strays if name.startswith(".tmp-")]
    kept: list[int] = []
    # orphans are judged against what was live when the host was inspected: during a deploy,
    # `current` is already the new release, and an orphan below it must not become its rollback target
    live = state.current if state.current is not None else current
    for release in sorted(state.releases, key=lambda r: r.number, reverse=True):
        n = release.number
        if n in protected:
            continue
        orphan = live is not None and n > live and not release.rolled_back
        if not release.complete or release.bad or orphan:
            doomed.append(str(n))
        else:
            kept.append(n)
    room = max(keep - len(protected), 0)
    doomed += [str(n) for n in kept[room:]]
    return doomed


def kept_artifacts(state: HostState, deleted: list[str], extra: str | None = None) -> list[str]:
    """sha256s of artifacts still referenced by a release that survives cleanup."""
    gone = set(deleted)
    shas = {r.meta.get("artifact_sha256") for r in state.releases if str(r.number) not in gone}
    if extra:
        shas.add(extra)
    return sorted(s for s in shas if isinstance(s, str) and s.isalnum())


STREAM_RTT = 0.03       # seconds of round trip from which an upload is extracted as it arrives


def stream_upload(rtt: float | None) -> bool:
    """Extract an upload as it arrives (instead of after it) on a link this slow: the upload is
    bounded by the SSH window per round trip (2 MB with OpenSSH: 67 MB/s at 30 ms, about what a
    host extracts) and extraction hides behind it. On a fast link the host's CPU is the limit,
    and one after the other measured faster. The round trip is measured with the host's sshd
    answering, so a busy host looks a little farther away than it is: hence 30 ms, not less."""
    return rtt is not None and rtt >= STREAM_RTT

"""Pure decisions: release numbers, rollback targets, what cleanup deletes. No I/O here."""

from __future__ import annotations

from collections.abc import Mapping

from deployer.errors import DeployerError
from deployer.plan.host_state import MAX_RELEASE, HostState, release_number


def next_release_number(states: Mapping[str, HostState]) -> int:
    """1 + the highest release number on any target host: the same N everywhere."""
    number = 1 + max((s.highest for s in states.values()), default=0)
    if number > MAX_RELEASE:
        raise DeployerError(f"release numbers are used up (releases/{MAX_RELEASE} exists): rename or remove it")
    return number


def rollback_target(state: HostState, to: int | str | None = None) -> int | str:
    """The release to roll back to on one host, or DeployerError saying why there is none: our
    release's number, or a foreign release's name (str).

    Default: the newest complete, never-bad, not-rolled-back release of ours older than current;
    failing that, the way back: the foreign release that was live before our first release.
    """
    current, live = state.current, state.live
    if to is not None:
        name = str(to)
        if name in state.linked:
            raise DeployerError(
                f"releases/{name} is a symlink, not a directory under releases/: refusing to switch to it"
            )
        number = release_number(name)
        release = state.release(number) if number is not None else None
        if number is None or release is None:
            if state.foreign_release(name) is None:
                raise DeployerError(f"release {name} does not exist")
            if name == live:
                raise DeployerError(f"release {name} is already current")
            return name
        if not release.complete:
            raise DeployerError(f"release {number} is incomplete")
        if release.bad:
            raise DeployerError(f"release {number} is marked bad")
        if number == current:
            raise DeployerError(f"release {number} is already current")
        if current is not None and number > current and not release.rolled_back:
            raise DeployerError(
                f"release {number} was never live (left by an interrupted deploy); `cleanup` removes it"
            )
        return number
    if live is None:
        raise DeployerError("no current release to roll back from")
    if current is None:
        raise DeployerError(f"current is release {live}, which another tool made: name the release to go to with --to")
    older = [r for r in state.releases if r.number < current and r.usable and not r.rolled_back]
    if older:
        return older[-1].number
    back = way_back(state)
    if back is None:
        raise DeployerError(f"no earlier complete release to roll back to (current is {current})")
    return back


def way_back(state: HostState) -> str | None:
    """The foreign release to go back to from our releases: the one our oldest release replaced
    (its release.json `previous`), else the newest foreign release; None when there is none."""
    for release in state.releases:
        previous = release.meta.get("previous")
        if isinstance(previous, str) and state.foreign_release(previous):
            return previous
    return state.foreign[-1].name if state.foreign else None


def link_source(state: HostState, sha256: str) -> int | None:
    """The newest usable release of this artifact on the host, to hard-link a redeploy from."""
    same = [r.number for r in state.releases if r.usable and r.meta.get("artifact_sha256") == sha256]
    return max(same, default=None)


def cleanup(
    state: HostState, keep: int, current: int | None, previous: int | str | None = None, foreign: bool = False
) -> list[str]:
    """Names under releases/ to delete, by release number (never by mtime).

    Deleted: leftover temp dirs, incomplete and bad releases, never-switched releases newer than
    current (orphans of an interrupted run), then complete releases beyond the newest `keep`.
    Never deleted: current (during a deploy, the release being deployed) and the release it replaced.
    Foreign releases (another tool's) never count toward `keep` and are deleted only with
    foreign=True, and then never the live one or the one being replaced.
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
    room = max(keep - sum(1 for n in protected if isinstance(n, int)), 0)
    doomed += [str(n) for n in kept[room:]]
    if foreign:
        doomed += [f.name for f in state.foreign if f.name not in protected and f.name != state.live]
    return doomed


def kept_artifacts(state: HostState, deleted: list[str], extra: str | None = None) -> list[str]:
    """sha256s of artifacts still referenced by a release that survives cleanup."""
    gone = set(deleted)
    shas = {r.meta.get("artifact_sha256") for r in state.releases if str(r.number) not in gone}
    if extra:
        shas.add(extra)
    return sorted(s for s in shas if isinstance(s, str) and s.isalnum())


STREAM_RTT = 0.03  # seconds of round trip from which an upload is extracted as it arrives


def stream_upload(rtt: float | None) -> bool:
    """Extract an upload as it arrives (instead of after it) on a link this slow: the upload is
    bounded by the SSH window per round trip (OpenSSH's 2 MB: from about 30 ms on, no faster than
    a host extracts) and extraction hides behind it. On a fast link the host's CPU is the limit,
    and one after the other is faster (benchmarks/results.md). The round trip is measured with the
    host's sshd answering, so a busy host looks a little farther away than it is: hence 30 ms, not
    less."""
    return rtt is not None and rtt >= STREAM_RTT


# A host's download from the store (pull): bounded by the artifact's size at a floor rate, after
# the connect and one stall's margin ([store] stall_timeout).
FETCH_CONNECT = 10  # seconds (curl --connect-timeout)
FETCH_FLOOR_RATE = 256 * 1024  # bytes per second


def fetch_max_time(size: int, stall: int) -> int:
    """Seconds a host's download of `size` bytes may take in all: a trickle above the stall
    rate still ends, naming the store, long before command_timeout for most artifacts."""
    return FETCH_CONNECT + stall + -(-size // FETCH_FLOOR_RATE)

"""Reading a host and holding its lock: inspect (the host's state; with lock_info, also take the
lock), lease (renew it and check it still holds, in front of every command of a locked run),
unleased, unlock. lock_values: the lock's inputs every changing script's lib.sh reads."""

from __future__ import annotations

import posixpath

from deployer.plan.paths import Paths
from deployer.remote.render import Value, render, text

TAKEOVER_MARK = '"@@stale@@"'  # in a takeover's ledger line: replaced by the stale holder, on the host


def lock_values(paths: Paths, token: str | None) -> dict[str, Value]:
    """lib.sh's inputs: the ledger and the lock this run holds (or takes)."""
    return {
        "STATE": paths.state,
        "LEDGER": paths.ledger,
        "LOCK": paths.lock,
        "LOCK_TOKEN_FILE": paths.lock_token,
        "TOKEN": token or "",
    }


def inspect(
    paths: Paths,
    *,
    lock_info: str | None = None,
    lock_token: str | None = None,
    artifact_sha: str | None = None,
    free_space: bool = True,
    lock_ttl: int | None = None,
    takeover_ledger: str | None = None,
    env_file: str = ".env",
    sudo_unit: str = "",
    sudo_commands: tuple[str, ...] = (),
    setup_paths: tuple[str, ...] = (),
    tools: bool = False,
) -> str:
    """Report the host's deploy state; with lock_info, also try to take the lock (mkdir wins once).

    With lock_ttl, a lock whose holder has not renewed it (see `lease`) for longer than that, by
    the host's own clock (a heartbeat in the future counts from when it was first seen), is taken
    over (see inspect_lock.sh) and, with takeover_ledger, recorded: the line with TAKEOVER_MARK
    replaced by the stale holder; the stale run's temp files go, its env uploads and env links
    (`env_file`) too. With sudo_unit (a unit file) present on the host, each of sudo_commands the
    user may not run through `sudo -n` is reported (`check`). Each of setup_paths on the host is
    reported with its digest, mode and owner (drift from what `deployer setup` writes). With tools,
    whether tar, find, readlink and mv have the GNU options the deploy's scripts use (a deploy,
    `check`)."""
    values: dict[str, Value] = {
        **lock_values(paths, lock_token),
        "DEPLOY_TO": paths.deploy_to,
        "LOCK_INFO": paths.lock_info,
        "META_AWK": text("inspect_meta.awk"),
        "FREE_SPACE": free_space,
        "CACHED": paths.cached_artifact(artifact_sha) if artifact_sha else "",
        "SUDO_UNIT": sudo_unit,
        "SUDO_CMDS": sudo_commands,
        "SETUP_PATHS": setup_paths,
        "TOOLS": tools,
    }
    files = ["lib.sh"]
    if lock_info is not None:
        pre, _, post = (takeover_ledger or "").partition(TAKEOVER_MARK)
        values |= {
            "INFO": lock_info,
            "LOCK_BEAT": paths.lock_beat,
            "LOCK_CLAIM": posixpath.join(paths.lock, "claim"),
            "LOCK_FUTURE": posixpath.join(paths.lock, "future"),
            "LOCK_TTL": int(lock_ttl) if lock_ttl else "",
            "RELEASES": paths.releases,
            "CACHE": paths.cache,
            "ENV_FILE": env_file,
            "SHARED_ENV": paths.shared_path(env_file),
            "RECORD_TAKEOVER": bool(takeover_ledger),
            "TAKEOVER_PRE": pre,
            "TAKEOVER_POST": post,
        }
        files.append("inspect_lock.sh")
    return render([*files, "inspect.sh"], values)


def lease(paths: Paths, token: str) -> str:
    """What every command of a run holding the lock starts with: `held` checks that the lock
    still holds this run's token and renews the lease (the heartbeat's mtime), else stops the
    script (LEASE_LOST). The scripts call `held` again right before each change they make (the
    rename into releases/N, the switch, deletions): a run whose lock was taken over changes
    nothing. The check and the change are two steps of one shell, microseconds apart; a takeover
    needs the lease silent for lock_ttl first."""
    return render(
        ["lease.sh"],
        {"LEASE_TOKEN_FILE": paths.lock_token, "LEASE_TOKEN": token, "LEASE_BEAT": paths.lock_beat},
        header="",
    )


def unleased(script: str) -> str:
    """A script run on a host where this run already released the lock (a rollback putting back a
    host that switched and unlocked before another host failed): `held` has nothing to check."""
    return text("unleased.sh") + script


def unlock(paths: Paths, token: str | None = None, ledger: str | None = None) -> str:
    """Release the lock: only with the holder's token, or by force when token is None."""
    return render(
        ["lib.sh", "unlock.sh"],
        {**lock_values(paths, token), "FORCE": token is None, "LOCK_INFO": paths.lock_info, "LEDGER_LINE": ledger},
    )

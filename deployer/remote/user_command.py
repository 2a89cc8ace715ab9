"""A user's command on a host (a hook, the migration and its down-migration, smoke, restart, a
verify command, `deployer run`): run by sh in a release with the deploy's env, as the deploy user
or as [app] run_as. An env name that is not a shell variable name never reaches a script."""

from __future__ import annotations

from deployer.config.settings import ENV_NAME
from deployer.plan.paths import Paths
from deployer.remote.render import Value, render


def _env_words(env: dict[str, str]) -> list[str]:
    """NAME=value items; a name that is not a shell variable name never reaches the script."""
    bad = [k for k in env if not ENV_NAME.fullmatch(k)]
    if bad:
        raise ValueError(f"not an environment variable name: {bad[0]!r}")
    return [f"{k}={v}" for k, v in sorted(env.items())]


def user_inputs(command: str, env: dict[str, str], run_as: str) -> dict[str, Value]:
    """user.sh's inputs (and in_release.sh's, run_in_current.sh's)."""
    return {"COMMAND": command, "USER_ENV": _env_words(env), "RUN_AS": run_as}


def in_release(paths: Paths, number: int | str | None, command: str, env: dict[str, str], run_as: str = "") -> str:
    """A user command (hook, smoke, restart, verify command) run by sh in releases/N, with the
    deploy's env; with no N (before_prepare: the release does not exist yet), in deploy_to."""
    where = paths.deploy_to if number is None else paths.release(number)
    return render(["in_release.sh"], {"WHERE": where, **user_inputs(command, env, run_as)})


def migrate(paths: Paths, number: int, command: str, env: dict[str, str], run_as: str = "") -> str:
    """Run the migration in releases/N; on success record it (digest of its output) in the release."""
    return render(
        ["lib.sh", "user.sh", "migrate.sh"],
        {
            "RELEASE": paths.release(number),
            "RECORD": paths.release_state(number) + "/migrated",
            **user_inputs(command, env, run_as),
        },
    )


def unmigrate(paths: Paths, number: int, command: str, env: dict[str, str], run_as: str = "") -> str:
    """Run the down-migration with release N's code; then its record is removed."""
    return render(
        ["user.sh", "unmigrate.sh"],
        {
            "RELEASE": paths.release(number),
            "RECORD": paths.release_state(number) + "/migrated",
            **user_inputs(command, env, run_as),
        },
    )
